"""What every task's training run shares: the options, the run's start, metrics.json, curves.png.

A task's `train(config)` calls `start`: every option is checked (`RunConfig.check`, a usage
error naming the option), the run's processes join (`hosts.connect`, with
`--coordinator-address`), the batch size is checked against the devices, data paths are
resolved, `--out` is claimed (`folder.claim`), the data is read, and only then is anything
written (`folder.begin`, by process 0 alone).
"""

import dataclasses
import json
import pathlib
import time
import typing

import jax
import numpy as np

from flaxseq.data import BatchIterator
from flaxseq.optim import adam_with_clipping
from flaxseq.tasks import folder, hosts, options
from flaxseq.tasks.folder import CHECKPOINT_DIR, model_config
from flaxseq.train import FitResult, Trainer, fit


@dataclasses.dataclass
class RunConfig:
    """Options every `train` command takes."""

    out: str = "runs/latest"
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    max_norm: float = 1.0
    clip: str = "optax"
    cosine_decay: bool = False
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    coordinator_address: str | None = None  # the run's processes (hosts): all three or none
    num_processes: int | None = None
    process_id: int | None = None

    task: typing.ClassVar[str] = ""
    data_options: typing.ClassVar[tuple[str, ...]] = ()  # options naming data files (checked by content)

    def check(self) -> None:
        """Raise `OptionError` for an option that cannot train: epochs and batch size at least 1,
        learning rate and `max_norm` finite and greater than 0, seed in [0, 2**32 - 1], `--resume`
        without `--overwrite`, the processes' options all or none (`hosts.check`). Tasks add
        their own rules. The devices are counted later, once the processes have joined
        (`check_devices`)."""
        options.excludes(self, "resume", "overwrite")
        options.at_least(self, 1, "epochs", "batch_size")
        options.at_least(self, 0, "seed")
        options.at_most(self, 2**32 - 1, "seed")
        options.positive(self, "learning_rate", "max_norm")
        options.one_of(self, "clip", ("optax", "torch"))
        if not self.out:
            raise options.OptionError("--out", "expected a folder, got ''")
        hosts.check(self)

    def check_devices(self) -> None:
        """The batch size must be a multiple of the devices of all the run's processes."""
        devices = jax.device_count()
        if self.batch_size % devices:
            raise options.OptionError("--batch-size", f"must be a multiple of the {devices} devices, "
                                      f"got {self.batch_size}")

    def resolved(self) -> "RunConfig":
        """The config with its data paths made absolute (and checked to exist); tasks with data
        files override it."""
        return self


def start(config: RunConfig, prepare, task_files: tuple[str, ...], save_vocabularies):
    """Check the options, join the run's processes, claim `--out`, read the data
    (`prepare(config)`, whose result has `fingerprints`), then begin the run folder and, for a
    fresh run, `save_vocabularies(prepared, out)`. Returns `(config, out, prepared)`; nothing is
    written before the data is read. Every process reads; process 0 alone writes, once every
    process has claimed `--out` and read the same data (else every process stops)."""
    config.check()
    hosts.connect(config)
    config.check_devices()

    def read():
        resolved = config.resolved()
        return resolved, folder.claim(resolved), prepare(resolved)

    config, out, prepared = hosts.together(read, "reading the data or checking --out")
    hashes = {name: found["sha256"] for name, found in (prepared.fingerprints or {}).items()}  # not the paths
    if not hosts.agreed(json.dumps(hashes, sort_keys=True)):
        raise ValueError("the run's processes read different data; every process must read the same files")

    def begin():
        if hosts.main() and folder.begin(out, config, task_files, prepared.fingerprints):
            save_vocabularies(prepared, out)

    hosts.together(begin, "writing the run folder")
    return config, out, prepared


def write_metrics(out: pathlib.Path, metrics: dict, result: FitResult, started: float) -> dict:
    """metrics.json (final metrics, wall time, per-epoch history) and curves.png (process 0
    writes them). `wall_seconds` is this process's time since `started` plus the training time
    of the processes before a resume."""
    metrics = {**metrics, "wall_seconds": time.perf_counter() - started + result.earlier_seconds,
               "history": result.history}
    if hosts.main():
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        plot_curves(result.history, out / "curves.png")
    return metrics


def plot_curves(history: list, path: pathlib.Path) -> None:
    """Loss and accuracy per epoch (train and validation) as a PNG; skipped without matplotlib.

    Draws on its own `Figure` with an Agg canvas, so neither pyplot nor the process's backend
    (a notebook's, say) is touched.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for key, axis in (("loss", left), ("accuracy", right)):
        for split in ("train", "valid"):
            if f"{split}_{key}" in history[0]:
                axis.plot(epochs, [h[f"{split}_{key}"] for h in history], marker="o", label=split)
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def split_batches(fields: tuple[str, ...], split: tuple[np.ndarray, ...], batch_size: int):
    """The batches of one split in order, as dicts named by `fields` (the last may be short)."""
    for start in range(0, len(split[0]), batch_size):
        yield dict(zip(fields, (a[start : start + batch_size] for a in split), strict=True))


def optimizer(config: RunConfig, steps_per_epoch: int):
    """Adam with clipping; with `cosine_decay`, the learning rate decays to 0 over all epochs."""
    decay_steps = config.epochs * steps_per_epoch if config.cosine_decay else 0
    return adam_with_clipping(config.learning_rate, config.max_norm, config.clip, decay_steps)


def init_params(model, split: tuple[np.ndarray, ...], seed: int):
    """`model`'s parameters from `seed`, initialised on the split's first example (inputs are all
    arrays but the last, the targets). Jitted: one compile instead of one per operation."""
    return jax.jit(model.init)(jax.random.key(seed), *(a[:1] for a in split[:-1]))["params"]


def train_model(
    config: RunConfig, out: pathlib.Path, model, loss_fn, fields: tuple[str, ...],
    train_split: tuple[np.ndarray, ...], valid_split: tuple[np.ndarray, ...], *, score: str = "accuracy",
    validate=None, init=init_params, log=print, sort_by=None, trim_time: tuple[str, ...] = (),
) -> tuple[FitResult, Trainer]:
    """Initialise `model` (`init(model, train_split, seed)`), then `fit` it on `train_split`,
    validating on `valid_split`. `validate(trainer, params)` overrides the default validation
    (the loss function's loss and accuracy). `sort_by` (`[n]` lengths) batches examples of
    similar length together, and the `trim_time` fields lose their padding columns per batch."""
    params = init(model, train_split, config.seed)
    batches = BatchIterator(*train_split, batch_size=config.batch_size, seed=config.seed, sort_by=sort_by)
    trainer = Trainer(loss_fn, optimizer(config, len(batches)), config.batch_size, trim_time=trim_time)
    if validate is None:
        def validate(trainer, params):
            return trainer.evaluate(params, split_batches(fields, valid_split, config.batch_size))
    result = fit(
        trainer, trainer.init_state(params), batches, fields, epochs=config.epochs, seed=config.seed,
        validate=lambda p: validate(trainer, p), score=score, checkpoint_dir=out / CHECKPOINT_DIR,
        config=model_config(config), resume=config.resume, progress=config.progress and hosts.main(), log=log,
    )
    return result, trainer
