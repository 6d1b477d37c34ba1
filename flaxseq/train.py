"""Training: a train state, jitted train and eval steps, and the epoch loop.

A task supplies `loss_fn(params, batch, dropout_key) -> (loss, sums)`: `batch` is a dict of
arrays `[batch, ...]` with a `weight` entry (1 for real examples, 0 for padding), `dropout_key`
is None for evaluation, and `sums` holds per-batch sums (`loss_sum`, `correct`, `count`) so that
epoch metrics are exact whatever the batch sizes. Every batch is padded to the same size, so
the steps compile once; with `trim_time`, a batch's padding columns are cut first, so the steps
compile once per rounded length instead (sort the batches by length: `BatchIterator(sort_by=)`).

The steps run data-parallel over all JAX devices: the batch axis is sharded over a one-axis
mesh and the parameters are replicated; XLA inserts the gradient all-reduce. On one device this
is plain `jit`. On a multi-GPU or TPU host nothing changes. On several processes (hosts), call
`jax.distributed.initialize()` first: the mesh then spans every process's devices, each
process holds only its own, and `Trainer.put` builds the global batch from each process's
rows (`jax.make_array_from_process_local_data`); every process runs the same steps on the same
global batches, and `fit` writes its checkpoint from process 0 alone.
"""

import math
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from flaxseq.checks import check_int


class TrainState(struct.PyTreeNode):
    """Parameters, optimizer state and step count."""

    step: jax.Array
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def dropout_key(seed: int, epoch: int, step: int) -> jax.Array:
    """The dropout key of one training step: derived from the seed, the epoch and the step."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), epoch), step)


def pad_batch(arrays: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Pad every array to `batch_size` rows (repeating row 0) and add `weight` `[batch_size]`."""
    n = len(next(iter(arrays.values())))
    if n > batch_size:
        raise ValueError(f"a batch of {n} examples does not fit batch_size={batch_size}")
    weight = np.zeros(batch_size, np.float32)
    weight[:n] = 1
    padded = {k: np.concatenate([v, np.repeat(v[:1], batch_size - n, axis=0)]) for k, v in arrays.items()}
    return {**padded, "weight": weight}


def trim_time(arrays: dict[str, np.ndarray], names: tuple[str, ...], multiple: int) -> dict[str, np.ndarray]:
    """Cut the time axis (axis 1) of the `[batch, time]` arrays `names` after the last column in
    which any of them holds a token other than `<pad>` (id 0), rounded up to a multiple of
    `multiple` (at most their full length). Padding columns change no masked loss, so the
    result is the same, and a batch of short sequences runs a short loop."""
    used = max(int(np.flatnonzero(np.any(arrays[name] != 0, axis=0)).max(initial=0)) + 1 for name in names)
    keep = -(-used // multiple) * multiple
    return {k: v[:, :keep] if k in names else v for k, v in arrays.items()}


class Trainer:
    """Jitted, data-parallel train and eval steps for one loss function and optimizer.

    Args:
      loss_fn: `(params, batch, dropout_key or None) -> (loss, sums)`.
      tx: the optax optimizer.
      batch_size: examples per step (the global batch, over all processes); a multiple of the
        number of devices.
      devices: the devices to run on (default: all, of every process).
      trim_time: names of `[batch, time]` token arrays whose padding columns each batch drops
        (`trim_time`), for a loss that masks padding; their length is rounded up to a multiple
        of `time_multiple`, which bounds the number of compilations.

    `rows` is the slice of a global batch that this process's devices hold.
    """

    def __init__(
        self, loss_fn: Callable, tx: optax.GradientTransformation, batch_size: int, devices=None, *,
        trim_time: tuple[str, ...] = (), time_multiple: int = 4,
    ):
        check_int("batch_size", batch_size, 1)
        check_int("time_multiple", time_multiple, 1)
        self.trim, self.time_multiple = tuple(trim_time), time_multiple
        devices = list(devices if devices is not None else jax.devices())
        if batch_size % len(devices):
            raise ValueError(f"batch_size must be a multiple of the {len(devices)} devices, got {batch_size}")
        self.loss_fn, self.tx, self.batch_size = loss_fn, tx, batch_size
        devices.sort(key=lambda d: d.process_index)  # each process's rows of a batch are contiguous
        self.mesh = Mesh(np.array(devices), ("batch",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.sharded = NamedSharding(self.mesh, PartitionSpec("batch"))
        mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
        rows = batch_size // len(devices)
        self.rows = slice(mine[0] * rows, (mine[-1] + 1) * rows) if mine else slice(0, 0)
        # Replicated results: every process holds the new state, the loss and the sums.
        self.train_step = jax.jit(self._train_step, donate_argnums=0, out_shardings=self.replicated)
        self.eval_step = jax.jit(self._eval_step, out_shardings=self.replicated)

    def _train_step(self, state: TrainState, batch: dict, key: jax.Array):
        (loss, sums), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(state.params, batch, key)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss, sums

    def _eval_step(self, params, batch: dict):
        return self.loss_fn(params, batch, None)[1]

    def init_state(self, params) -> TrainState:
        """A new state, replicated over the devices; `params` are copied (the train step donates its state)."""
        state = TrainState.create(jax.tree.map(jnp.array, params), self.tx)
        return jax.device_put(state, self.replicated)

    def put(self, arrays: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Trim the batch's padding columns (`trim_time`), pad it to `batch_size` rows and shard it
        over the devices. `arrays` is the whole global batch, the same on every process; each
        process passes on its own rows (`rows`) of it."""
        if self.trim:
            arrays = trim_time(arrays, self.trim, self.time_multiple)
        return {k: jax.make_array_from_process_local_data(self.sharded, v[self.rows], v.shape)
                for k, v in pad_batch(arrays, self.batch_size).items()}

    def evaluate(self, params, batches: Iterable[dict[str, np.ndarray]]) -> dict[str, float]:
        """Sums of the eval step over `batches`, as `loss` and `accuracy`."""
        total: dict[str, float] = {}
        for batch in batches:
            for k, v in self.eval_step(params, self.put(batch)).items():
                total[k] = total.get(k, 0.0) + float(v)
        return summarize(total)


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Per-batch sums -> mean loss and accuracy."""
    count = max(sums.get("count", 0.0), 1.0)
    return {"loss": sums.get("loss_sum", 0.0) / count, "accuracy": sums.get("correct", 0.0) / count}


def live_progress(stream) -> bool:
    """Whether a live progress bar fits `stream`: a terminal or a notebook (tqdm's widget)."""
    if any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def run_epoch(
    trainer: Trainer, state: TrainState, batches, fields: tuple[str, ...], *, seed: int, epoch: int,
    progress: bool = True,
) -> tuple[TrainState, dict[str, float]]:
    """Train on the rest of `batches`' current epoch; returns the state and the epoch's metrics.

    `batches` yields tuples of arrays named by `fields`. Stops with `FloatingPointError` on a
    NaN or infinite loss, naming the step. With `progress`, standard error shows a live bar if
    it is a terminal or a notebook, and else (a file, a pipe) one line at the epoch's end.
    """
    totals: dict[str, float] = {}
    examples, steps, start = 0, 0, time.perf_counter()
    live = progress and live_progress(sys.stderr)
    bar = tqdm(total=len(batches), initial=batches.position, desc=f"epoch {epoch + 1}", disable=not live,
               leave=False, dynamic_ncols=True)
    for arrays in batches:
        batch = dict(zip(fields, arrays, strict=True))
        step = int(state.step)
        state, loss, sums = trainer.train_step(state, trainer.put(batch), dropout_key(seed, epoch, step))
        loss = float(loss)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss} at step {step} (epoch {epoch + 1}): training stopped")
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        examples, steps = examples + len(arrays[0]), steps + 1
        if live:
            metrics = summarize(totals)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.3f}",
                            ex_s=f"{examples / (time.perf_counter() - start):.0f}")
            bar.update()
    bar.close()
    metrics = summarize(totals)
    metrics["examples_per_second"] = examples / max(time.perf_counter() - start, 1e-9)
    if progress and not live:
        print(f"epoch {epoch + 1}: {steps} steps  loss {metrics['loss']:.4f} acc {metrics['accuracy']:.3f}"
              f"  {metrics['examples_per_second']:.0f} examples/s", file=sys.stderr, flush=True)
    return state, metrics


class FitResult(struct.PyTreeNode):
    """The final state, the best validation parameters, one history record per epoch (those
    before a resume included), and `earlier_seconds`: the time the processes before a resume
    spent in `fit` (0 when the run was not resumed)."""

    state: TrainState
    best_params: Any
    history: list = struct.field(pytree_node=False)
    earlier_seconds: float = struct.field(pytree_node=False, default=0.0)


def fit(
    trainer: Trainer, state: TrainState, batches, fields: tuple[str, ...], *, epochs: int, seed: int,
    validate: Callable[[Any], dict[str, float]], score: str, checkpoint_dir=None, config: dict | None = None,
    resume: bool = False, progress: bool = True, log: Callable[[str], None] = print,
) -> FitResult:
    """Train for `epochs` epochs, validating after each and keeping the best parameters.

    Args:
      trainer, state: the steps and the initial state.
      batches: a `flaxseq.data.BatchIterator` yielding arrays named by `fields`.
      validate: `params -> metrics` on the validation split, once per epoch.
      score: the validation metric to maximise when keeping the best parameters.
      checkpoint_dir: where a checkpoint is saved after every epoch (None: nowhere), by process
        0 alone; with `resume`, every process reads it.
      config: the run's configuration, saved with the checkpoint and checked on resume.
      resume: continue from the checkpoint in `checkpoint_dir`. The result equals an
        uninterrupted run's: the data order, dropout keys and optimizer state all continue. A
        checkpoint past `epochs` is refused (its later epochs cannot be undone).
    """
    from flaxseq.checkpoint import load_checkpoint, save_checkpoint

    best_params, history = jax.tree.map(jnp.copy, state.params), []  # train_step donates the state
    best_score, started, earlier_seconds = -math.inf, time.perf_counter(), 0.0
    if resume:
        arrays, meta = load_checkpoint(checkpoint_dir, {"state": state, "best_params": state.params}, config)
        if len(meta["history"]) > epochs:
            raise ValueError(f"resume: the checkpoint in {checkpoint_dir} has trained {len(meta['history'])} epochs, "
                             f"more than epochs={epochs}; pass epochs={len(meta['history'])} or more")
        state = jax.device_put(arrays["state"], trainer.replicated)
        best_params, history = arrays["best_params"], meta["history"]
        best_score = meta["best_score"]
        earlier_seconds = meta.get("seconds", sum(record["seconds"] for record in history))
        batches.restore(meta["batches"])
        log(f"resumed from {checkpoint_dir} at epoch {batches.epoch + 1}, step {int(state.step)}")

    while batches.epoch < epochs:
        epoch, start = batches.epoch, time.perf_counter()
        state, train_metrics = run_epoch(trainer, state, batches, fields, seed=seed, epoch=epoch, progress=progress)
        valid_metrics = validate(state.params)
        if valid_metrics[score] > best_score:
            best_score, best_params = valid_metrics[score], jax.tree.map(jnp.copy, state.params)
        record = {
            "epoch": epoch + 1, "seconds": time.perf_counter() - start,
            **{f"train_{k}": v for k, v in train_metrics.items()},
            **{f"valid_{k}": v for k, v in valid_metrics.items()},
        }
        history.append(record)
        log(
            f"epoch {epoch + 1}/{epochs}  train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.3f}"
            f"  valid {score} {valid_metrics[score]:.4f}  ({record['seconds']:.1f} s,"
            f" {record['train_examples_per_second']:.0f} examples/s)"
        )
        if checkpoint_dir is not None and jax.process_index() == 0:
            meta = {"config": config or {}, "history": history, "best_score": best_score,
                    "batches": batches.state(), "seed": seed,
                    "seconds": earlier_seconds + time.perf_counter() - started}
            save_checkpoint(checkpoint_dir, {"state": state, "best_params": best_params}, meta)
    return FitResult(state=state, best_params=best_params, history=history, earlier_seconds=earlier_seconds)
