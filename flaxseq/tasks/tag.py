"""Part-of-speech tagging: `GRUTagger` on CoNLL-U files (word and UPOS columns).

`--train` and `--test` name the CoNLL-U files. Without them, it trains on Universal
Dependencies English-EWT's dev file and tests on its test file, found in the folder that the
environment variable `FLAXSEQ_DATA` names, as `$FLAXSEQ_DATA/ud-english-ewt/en_ewt-ud-dev.conllu`
and `.../en_ewt-ud-test.conllu`; with neither, the command refuses and says where to get them.
10% of the training sentences (seeded) are held out for validation. Words are
lowercased (unless `--no-lowercase`). A word outside the vocabulary is encoded as its shape
(`flaxseq.data.shapes`: case, digits, hyphen, suffix of its original spelling), or as `<unk>`
with `--no-unk-shapes`; at every training step, rare training words are replaced by their shape
(or `<unk>`) at random so that those embeddings are learned. Token accuracy counts real tokens
only (padding never counts).
"""

import collections
import dataclasses
import os
import pathlib
import time
import typing
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxseq import data
from flaxseq.tagger import GRUTagger
from flaxseq.tasks import folder, options
from flaxseq.tasks.run import RunConfig, split_batches, start, train_model, write_metrics

FIELDS = ("ids", "lengths", "tags")  # the batch's arrays, in the order of the data splits
VOCAB_FILES = ("vocab.json", "tags.json")  # what predict reads from the run folder
TEST_DATA = "test"  # the fingerprint evaluate checks
TEST_OPTION = "test"  # the option naming the test data's path (evaluate's --data replaces it)
DATA_VARIABLE = "FLAXSEQ_DATA"
EWT_FILES = ("ud-english-ewt/en_ewt-ud-dev.conllu", "ud-english-ewt/en_ewt-ud-test.conllu")  # under $FLAXSEQ_DATA
EWT_URL = "https://github.com/UniversalDependencies/UD_English-EWT"


@dataclasses.dataclass
class TagConfig(RunConfig):
    task: typing.ClassVar[str] = "tag"
    data_options: typing.ClassVar[tuple[str, ...]] = ("train", "test")
    train: str | None = None  # None: $FLAXSEQ_DATA/ud-english-ewt/en_ewt-ud-dev.conllu
    test: str | None = None  # None: $FLAXSEQ_DATA/ud-english-ewt/en_ewt-ud-test.conllu
    max_length: int = 64
    lowercase: bool = True
    min_freq: int = 1
    unk_max_count: int = 1
    unk_probability: float = 0.5
    unk_shapes: bool = True
    embed_dim: int = 100
    hidden_size: int = 128
    num_layers: int = 1
    out: str = "runs/tag"
    epochs: int = 20
    learning_rate: float = 2e-3

    def check(self) -> None:
        """The run's rules, sizes at least 1, `unk_max_count` at least 0, `unk_probability` in [0, 1]."""
        super().check()
        options.at_least(self, 1, "max_length", "min_freq", "embed_dim", "hidden_size", "num_layers")
        options.at_least(self, 0, "unk_max_count")
        options.probability(self, "unk_probability")

    def resolved(self) -> "TagConfig":
        """`--train` and `--test` (or the English-EWT files under `$FLAXSEQ_DATA`), made absolute;
        both must exist."""
        paths = {"train": self.train, "test": self.test}
        root = os.environ.get(DATA_VARIABLE)
        missing = [f"--{name}" for name, path in paths.items() if path is None]
        for (name, path), default in zip(paths.items(), EWT_FILES, strict=True):
            if path is None:
                if not root or not (pathlib.Path(root) / default).is_file():
                    raise FileNotFoundError(missing_data_message(root, missing))
                path = str(pathlib.Path(root) / default)
            if pathlib.Path(path).is_dir():
                raise IsADirectoryError(f"--{name}: expected a CoNLL-U file, got {path}, which is a folder")
            if not pathlib.Path(path).is_file():
                raise FileNotFoundError(f"--{name}: expected a CoNLL-U file, got {path}, which does not exist")
            paths[name] = str(pathlib.Path(path).resolve())
        return dataclasses.replace(self, **paths)


def missing_data_message(root: str | None, missing: list[str]) -> str:
    """Why the tagger has no data (`missing`: the options not given), and where to put it."""
    options_missing = " and ".join(missing)
    where = (f"no {options_missing} {'was' if len(missing) == 1 else 'were'} given and {DATA_VARIABLE}={root} holds "
             f"no {' or '.join(EWT_FILES)}" if root
             else f"no {options_missing} {'was' if len(missing) == 1 else 'were'} given and {DATA_VARIABLE} is not set")
    return (f"the tagger needs CoNLL-U files: {where}. Pass --train FILE --test FILE, or get Universal "
            f"Dependencies English-EWT ({EWT_URL}: en_ewt-ud-dev.conllu, en_ewt-ud-test.conllu), put the two files "
            f"in DIR/ud-english-ewt/ and set {DATA_VARIABLE}=DIR")


def read_sentences(path: str) -> list[tuple[list[str], list[str]]]:
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"no CoNLL-U file at {path}")
    return data.read_conllu(path)


def read_test_data(config: TagConfig) -> tuple[list, str]:
    """The test file's sentences `[(words, tags)]` and its path."""
    return read_sentences(config.test), config.test


def make_loss(model: GRUTagger, replacement: np.ndarray | None = None, unk_probability: float = 0.0):
    """`(params, batch, key) -> (loss, sums)`: cross-entropy averaged over real tokens.

    In training (a key is given), each occurrence of a rare word becomes `replacement[id]` (its
    shape or `<unk>`; `replacement` is `[vocab]` ids, `replacement[id] == id` for the other
    words) with probability `unk_probability`, drawn afresh at every step, so that those
    embeddings learn what unseen words look like in context.
    """

    def loss_fn(params, batch, key):
        ids, rngs = batch["ids"], {}
        if key is not None:
            rngs = {"dropout": key}
            if replacement is not None and unk_probability > 0:
                draw = jax.random.uniform(jax.random.fold_in(key, 1), ids.shape) < unk_probability
                ids = jnp.where(draw, jnp.asarray(replacement)[ids], ids)
        logits = model.apply({"params": params}, ids, batch["lengths"], deterministic=key is None, rngs=rngs)
        time_steps = batch["ids"].shape[1]
        mask = (jnp.arange(time_steps)[None, :] < batch["lengths"][:, None]) * batch["weight"][:, None]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["tags"]) * mask
        correct = (jnp.argmax(logits, -1) == batch["tags"]) * mask
        count = jnp.sum(mask)
        return jnp.sum(losses) / jnp.maximum(count, 1), {
            "loss_sum": jnp.sum(losses), "correct": jnp.sum(correct), "count": count,
        }

    return loss_fn


@dataclasses.dataclass
class Prepared:
    """Word and tag vocabularies and the splits `(word_ids, lengths, tag_ids)`, each `[n, max_length]` or `[n]`."""

    vocab: data.Vocab
    tags: data.Vocab
    splits: dict[str, tuple[np.ndarray, ...]]
    unseen: float | None = None  # share of test tokens whose word is absent from the vocabulary
    replacement: np.ndarray | None = None  # [vocab] ids: the shape (or <unk>) of each rare training word
    fingerprints: dict | None = None  # of the training and test files


def prepare(config: TagConfig) -> Prepared:
    """Read both files, hold out 10% of training sentences (seeded), build vocabularies, encode."""
    sentences = read_sentences(config.train)
    if len(sentences) < 10:
        raise ValueError(f"--train {config.train}: {len(sentences)} sentences are too few to hold out 10% for "
                         "validation; expected at least 10")
    test_sentences, test_source = read_test_data(config)
    train_idx, valid_idx = data.split_indices(len(sentences), (0.9, 0.1), seed=config.seed)
    train_words = [sentences[i][0] for i in train_idx]
    vocab, replacement = build_vocab(train_words, config)
    tags = data.Vocab.build([t for _, t in sentences])
    warn_unseen_tags(config.test, test_sentences, tags)
    fingerprints = {"train": folder.fingerprint(config.train, sentences),
                    TEST_DATA: folder.fingerprint(test_source, test_sentences)}
    prepared = Prepared(vocab, tags, {}, replacement=replacement, fingerprints=fingerprints)
    prepared.splits = {
        "train": encode(prepared, config, [sentences[i] for i in train_idx]),
        "valid": encode(prepared, config, [sentences[i] for i in valid_idx]),
        "test": encode(prepared, config, test_sentences),
    }
    test_words = [w.lower() if config.lowercase else w for words, _ in test_sentences for w in words]
    prepared.unseen = float(np.mean([w not in vocab for w in test_words]))
    return prepared


def warn_unseen_tags(source: str, sentences: list, tags: data.Vocab) -> None:
    """Warn if tags of `sentences` are absent from the training tags: the model cannot predict
    them, so their tokens count as errors."""
    counts = collections.Counter(t for _, sentence_tags in sentences for t in sentence_tags if t not in tags)
    if counts:
        shown = ", ".join(f"{tag!r} ({n})" for tag, n in counts.most_common(5)) + (", ..." if len(counts) > 5 else "")
        warnings.warn(f"--test {source}: {sum(counts.values())} tokens have tags that the training file has not "
                      f"({shown}); the tagger cannot predict them and they count as errors", stacklevel=2)


def encode(prepared: Prepared, config: TagConfig, sentences: list) -> tuple[np.ndarray, ...]:
    """`(word_ids, lengths, tag_ids)` of `[(words, tags)]`, unknown words as their shapes."""
    words, tag_seqs = [w for w, _ in sentences], [t for _, t in sentences]
    tokens = data.known_or_shape(words, prepared.vocab, config.lowercase, shapes=config.unk_shapes)
    word_ids, tag_ids, lengths = data.encode_tagged(tokens, tag_seqs, prepared.vocab, prepared.tags, config.max_length)
    return word_ids, lengths, tag_ids


def with_test(config: TagConfig, prepared: Prepared, sentences: list) -> Prepared:
    """`prepared` (the run's vocabularies) with the test split of `sentences` (`read_test_data`)."""
    return dataclasses.replace(prepared, splits={"test": encode(prepared, config, sentences)})


def save_vocabularies(prepared: Prepared, out: pathlib.Path) -> None:
    prepared.vocab.save(out / "vocab.json")
    prepared.tags.save(out / "tags.json")


def load_vocabularies(run: pathlib.Path) -> Prepared:
    """The run's word and tag vocabularies (no data splits)."""
    return Prepared(folder.load_vocab(run / "vocab.json"), folder.load_vocab(run / "tags.json"), {})


def example(config: TagConfig) -> tuple[np.ndarray, ...]:
    """A split of one sentence, `(word_ids [1, max_length], lengths [1], tag_ids [1, max_length])`."""
    return np.zeros((1, config.max_length), np.int32), np.ones(1, np.int32), np.zeros((1, config.max_length), np.int32)


def build_vocab(train_words: list[list[str]], config: TagConfig) -> tuple[data.Vocab, np.ndarray]:
    """The word vocabulary (with the shapes of rare words if `unk_shapes`) and, for each id, the
    token a rare word is replaced by in training (`replacement[id] == id` for the others)."""
    keys = [[w.lower() if config.lowercase else w for w in words] for words in train_words]
    vocab = data.Vocab.build(keys, min_freq=config.min_freq)
    counts = data.count_tokens(keys)
    rare_shapes = {}  # rare word -> shape of its first spelling
    for words, sentence_keys in zip(train_words, keys, strict=True):
        for word, key in zip(words, sentence_keys, strict=True):
            if counts[key] <= config.unk_max_count:
                rare_shapes.setdefault(key, data.word_shape(word))
    if config.unk_shapes:
        new_shapes = sorted(set(rare_shapes.values()) - set(vocab.tokens))
        vocab = data.Vocab(vocab.tokens[len(vocab.specials):] + tuple(new_shapes))
    replacement = np.arange(len(vocab), dtype=np.int32)
    for key, shape in rare_shapes.items():
        if key in vocab:
            replacement[vocab.token_to_id(key)] = vocab.token_to_id(shape) if config.unk_shapes else data.UNK_ID
    return vocab, replacement


def build_model(config: TagConfig, prepared: Prepared) -> GRUTagger:
    return GRUTagger(len(prepared.vocab), config.embed_dim, config.hidden_size, config.num_layers, len(prepared.tags))


def train(config: TagConfig, log=print) -> dict:
    """Train, validate every epoch, test once; writes the run to `config.out`; returns metrics."""
    started = time.perf_counter()
    config, out, prepared = start(config, prepare, VOCAB_FILES, save_vocabularies)
    sizes = "/".join(str(len(s[0])) for s in prepared.splits.values())
    log(f"train/valid/test sentences {sizes}; vocabulary {len(prepared.vocab)}, {len(prepared.tags)} tags;"
        f" {prepared.unseen:.1%} of test tokens unseen")
    model = build_model(config, prepared)
    loss_fn = make_loss(model, prepared.replacement, config.unk_probability)
    result, trainer = train_model(config, out, model, loss_fn, FIELDS, prepared.splits["train"],
                                  prepared.splits["valid"], log=log)
    metrics = write_metrics(out, test_metrics(trainer, model, result.best_params, prepared, config),
                            result, started)
    log(f"test token accuracy {metrics['token_accuracy']:.4f} (best validation parameters);"
        f" {metrics['wall_seconds']:.0f} s; run saved in {out}")
    return metrics


def test_metrics(trainer, model, params, prepared: Prepared, config) -> dict:
    """Metrics of `params` on the test split."""
    test = trainer.evaluate(params, split_batches(FIELDS, prepared.splits["test"], config.batch_size))
    return {"token_accuracy": test["accuracy"], "test_loss": test["loss"]}


def predict(model: GRUTagger, params, prepared: Prepared, config: TagConfig, texts: list[str], warn) -> list[str]:
    """Space-separated UPOS tags for every word of each whitespace-tokenised text, however long
    (a recurrent tagger needs no truncation: the batch is as long as its longest text); the
    tag vocabulary's specials (`<pad>`, `<unk>`) are never predicted."""
    words = data.known_or_shape([text.split() for text in texts], prepared.vocab, config.lowercase,
                                shapes=config.unk_shapes)
    ids, lengths = data.encode_sequences(words, prepared.vocab, max(len(w) for w in words))
    logits = model.apply({"params": params}, ids, lengths)
    specials = len(prepared.tags.specials)  # <pad>, <unk>: never a word's tag
    tags = np.asarray(jnp.argmax(logits[..., specials:], -1)) + specials
    return [" ".join(prepared.tags.id_to_token(int(t)) for t in row[:n]) for row, n in zip(tags, lengths, strict=True)]
