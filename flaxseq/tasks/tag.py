"""Part-of-speech tagging: `GRUTagger` on CoNLL-U files (word and UPOS columns).

By default it trains on Universal Dependencies English-EWT's dev file and tests on its test
file, as found under `shared/data/ud-english-ewt/` beside the repository (`--train`, `--test`
choose others). 10% of the training sentences (seeded) are held out for validation. Words are
lowercased (unless `--no-lowercase`). A word outside the vocabulary is encoded as its shape
(`flaxseq.data.shapes`: case, digits, hyphen, suffix of its original spelling), or as `<unk>`
with `--no-unk-shapes`; at every training step, rare training words are replaced by their shape
(or `<unk>`) at random so that those embeddings are learned. Token accuracy counts real tokens
only (padding never counts).
"""

import dataclasses
import pathlib
import time
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxseq import data
from flaxseq.tagger import GRUTagger
from flaxseq.tasks.run import RunConfig, prepare_out, split_batches, train_model, write_metrics

FIELDS = ("ids", "lengths", "tags")  # the batch's arrays, in the order of the data splits
EWT = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ud-english-ewt"


@dataclasses.dataclass
class TagConfig(RunConfig):
    task: typing.ClassVar[str] = "tag"
    train: str = str(EWT / "en_ewt-ud-dev.conllu")
    test: str = str(EWT / "en_ewt-ud-test.conllu")
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


def read_sentences(path: str) -> list[tuple[list[str], list[str]]]:
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"no CoNLL-U file at {path}")
    return data.read_conllu(path)


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
    unseen: float  # share of test tokens whose word is absent from the vocabulary
    replacement: np.ndarray  # [vocab] ids: the shape (or <unk>) of each rare training word, else the word


def prepare(config: TagConfig) -> Prepared:
    """Read both files, hold out 10% of training sentences (seeded), build vocabularies, encode."""
    sentences = read_sentences(config.train)
    test_sentences = read_sentences(config.test)
    train_idx, valid_idx = data.split_indices(len(sentences), (0.9, 0.1), seed=config.seed)
    train_words = [sentences[i][0] for i in train_idx]
    vocab, replacement = build_vocab(train_words, config)
    tags = data.Vocab.build([t for _, t in sentences])

    def split(words, tag_seqs):
        tokens = data.known_or_shape(words, vocab, config.lowercase, shapes=config.unk_shapes)
        word_ids, tag_ids, lengths = data.encode_tagged(tokens, tag_seqs, vocab, tags, config.max_length)
        return word_ids, lengths, tag_ids

    splits = {
        "train": split(train_words, [sentences[i][1] for i in train_idx]),
        "valid": split(*zip(*[sentences[i] for i in valid_idx], strict=True)),
        "test": split(*zip(*test_sentences, strict=True)),
    }
    test_words = [w.lower() if config.lowercase else w for words, _ in test_sentences for w in words]
    unseen = float(np.mean([w not in vocab for w in test_words]))
    return Prepared(vocab, tags, splits, unseen, replacement)


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
    out = prepare_out(config)
    prepared = prepare(config)
    prepared.vocab.save(out / "vocab.json")
    prepared.tags.save(out / "tags.json")
    sizes = "/".join(str(len(s[0])) for s in prepared.splits.values())
    log(f"train/valid/test sentences {sizes}; vocabulary {len(prepared.vocab)}, {len(prepared.tags)} tags;"
        f" {prepared.unseen:.1%} of test tokens unseen")
    model = build_model(config, prepared)
    loss_fn = make_loss(model, prepared.replacement, config.unk_probability)
    result, trainer = train_model(config, out, model, loss_fn, FIELDS, prepared.splits["train"],
                                  prepared.splits["valid"], log=log)
    metrics = write_metrics(out, test_metrics(trainer, model, result.best_params, prepared, config),
                            result.history, started)
    log(f"test token accuracy {metrics['token_accuracy']:.4f} (best validation parameters);"
        f" {metrics['wall_seconds']:.0f} s; run saved in {out}")
    return metrics


def test_metrics(trainer, model, params, prepared: Prepared, config) -> dict:
    """Metrics of `params` on the test split."""
    test = trainer.evaluate(params, split_batches(FIELDS, prepared.splits["test"], config.batch_size))
    return {"token_accuracy": test["accuracy"], "test_loss": test["loss"]}


def predict(model: GRUTagger, params, prepared: Prepared, config: TagConfig, texts: list[str]) -> list[str]:
    """Space-separated UPOS tags for each whitespace-tokenised text."""
    words = data.known_or_shape([text.split() or ["<unk>"] for text in texts], prepared.vocab, config.lowercase,
                                shapes=config.unk_shapes)
    ids, lengths = data.encode_sequences(words, prepared.vocab, config.max_length)
    tags = np.asarray(jnp.argmax(model.apply({"params": params}, ids, lengths), -1))
    return [" ".join(prepared.tags.id_to_token(int(t)) for t in row[:n]) for row, n in zip(tags, lengths, strict=True)]
