"""`python -m parity.bench`: flaxseq against PyTorch, same shapes, weights and dtype, in one process.

Every row converts a seeded PyTorch module with `parity.from_torch` and times, interleaved in
rounds so that both frameworks see the same machine load:

- forward: flaxseq jitted (after compilation) against PyTorch eager under `no_grad`;
- train: one full training step, forward, backward and Adam update (optax `adam` against
  `torch.optim.Adam`, both lr 1e-3), the flaxseq step jitted with its state donated.

Columns: `torch.compile` where it compiles (skipped with a note when it fails or takes longer
than `--compile-limit`); on LSTM rows without projection flax's own `nn.RNN(nn.OptimizedLSTMCell)`
stack, and on GPU `flaxseq.LSTM(use_cudnn=True)` (`flaxseq-cudnn`, the same weights).
Per row and pass: median, min and max per call over the rounds, compile time, tokens per second,
peak memory and the ratio to PyTorch eager (below 1: flaxseq is faster). Memory: for JAX the
compiled step's `memory_analysis()` (temporaries plus outputs not aliased to inputs); for PyTorch
on CPU the rise of a subprocess's peak RSS over its resident size before the call, on GPU the
allocator's peak over its allocation before the call.

    python -m parity.bench              # every row, about 10 minutes on 2 CPU cores
    python -m parity.bench --quick      # the quick rows, about 1 minute
    python -m parity.bench --rows classifier-lstm --passes train --json out.json --png out.png
    python -m parity.bench --device gpu # JAX's GPU backend and torch on CUDA, TF32 off on both
    python -m parity.bench --gpu --rows classifier-lstm --columns flaxseq \
        --xla-option xla_gpu_autotune_level=0   # one column, compiled with an XLA option

Writes a table to the terminal, and JSON and a PNG chart of the ratios where asked.

Before anything runs, malloc is set to keep freed memory for reuse (`flaxseq.memory`, both
frameworks share the process): without it every jitted call faults its temporary buffer in
afresh. `--malloc default` leaves glibc's settings as they are.
"""

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from flaxseq.memory import keep_freed_memory

PASSES = ("forward", "train")
# what a row can time besides PyTorch eager, the baseline every row times
COLUMNS = ("flaxseq", "flaxseq-cudnn", "flax", "torch.compile")


@dataclass(frozen=True)
class Row:
    """One benchmark configuration.

    `kind` is a layer (`RNN`, `LSTM`, `GRU`) or a tutorial model (`classifier`, `tagger`,
    `seq2seq`). Layer inputs are `[batch, time, input_size]` (batch first).
    """

    name: str
    kind: str
    batch: int
    time: int
    input_size: int = 128
    hidden_size: int = 256
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    budget: float = 20.0  # seconds of timing per pass, all columns together
    quick: bool = False
    extra: dict = field(default_factory=dict, hash=False, compare=False)  # model sizes

    @property
    def tokens(self) -> int:
        return self.batch * self.time


ROWS = [
    Row("toy-rnn", "RNN", 32, 5, 10, 20, budget=6),
    Row("toy-lstm", "LSTM", 32, 5, 10, 20, budget=6, quick=True),
    Row("toy-gru", "GRU", 32, 5, 10, 20, budget=6),
    Row("classifier-lstm", "LSTM", 32, 50, 128, 256, 2, True, budget=30, quick=True),
    Row("classifier-lstm-proj", "LSTM", 32, 50, 128, 256, 2, True, proj_size=128, budget=25),
    Row("classifier-gru", "GRU", 32, 50, 128, 256, 2, True, budget=25, quick=True),
    Row("long-seq-lstm", "LSTM", 64, 1000, 128, 512, budget=90),
    Row("large-batch-lstm", "LSTM", 256, 100, 128, 256, budget=30),
    Row("batch1-lstm", "LSTM", 1, 100, 128, 256, budget=10, quick=True),
    Row("model-classifier", "classifier", 32, 50, budget=30, quick=True,
        extra=dict(vocab_size=20000, embed_size=128, hidden_size=256, num_layers=2, num_classes=5)),
    Row("model-tagger", "tagger", 32, 50, budget=25,
        extra=dict(vocab_size=20000, embed_size=128, hidden_size=256, num_layers=2, num_tags=20)),
    Row("model-seq2seq", "seq2seq", 64, 20, budget=25,
        extra=dict(src_vocab=32, tgt_vocab=72, embed_size=64, hidden_size=256, num_layers=1, tgt_len=20)),
]


class Skip(Exception):
    """A row or column that cannot run here; the message says why."""


# --------------------------------------------------------------------------------------------
# Workloads: one PyTorch module, its flaxseq twin, inputs and a loss, for both frameworks.


@dataclass
class Workload:
    """What a row times. `torch_args`/`jax_args` are the call's positional inputs;
    `*_loss(outputs, targets)` turns the call's result into a scalar."""

    torch_module: object
    flax_module: object
    variables: dict
    torch_args: tuple
    jax_args: tuple
    targets: tuple  # JAX arrays
    torch_targets: tuple
    torch_loss: Callable
    jax_loss: Callable
    flax_apply: Callable  # (params, *jax_args) -> outputs
    torch_call: Callable  # (module, *torch_args) -> outputs


def _layer_torch_module(row: Row, torch):
    kw = dict(num_layers=row.num_layers, bidirectional=row.bidirectional, batch_first=True)
    if row.proj_size:
        kw["proj_size"] = row.proj_size
    return getattr(torch.nn, row.kind)(row.input_size, row.hidden_size, **kw)


MODEL_CLASSES = {"classifier": "TextClassifier", "tagger": "GRUTagger", "seq2seq": "Seq2SeqAttention"}


def _model_torch_module(row: Row, torch):
    """The tutorial model's PyTorch twin (dropout 0, so both sides compute the same function),
    or `Skip` while `torch_ref`/`flaxseq` lack it."""
    import flaxseq
    import torch_ref

    name = MODEL_CLASSES[row.kind]
    if not (hasattr(torch_ref, name) and hasattr(flaxseq, name)):
        raise Skip(f"needs torch_ref.{name} and flaxseq.{name} (not in this checkout)")
    e = row.extra
    if row.kind == "classifier":
        return torch_ref.TextClassifier(e["vocab_size"], e["embed_size"], e["hidden_size"], e["num_layers"],
                                        e["num_classes"], dropout=0.0)
    if row.kind == "tagger":
        return torch_ref.GRUTagger(e["vocab_size"], e["embed_size"], e["hidden_size"], e["num_layers"], e["num_tags"])
    return torch_ref.Seq2SeqAttention(
        torch_ref.Encoder(e["src_vocab"], e["embed_size"], e["hidden_size"], e["num_layers"]),
        torch_ref.AttnDecoder(e["tgt_vocab"], e["embed_size"], e["hidden_size"], e["num_layers"]),
    )


def _model_inputs(row: Row, rng) -> tuple[tuple, tuple]:
    """(args, targets) as numpy arrays: token ids (and lengths), and integer labels.

    The seq2seq row runs with teacher forcing at every step and full-length sources."""
    e, b, t = row.extra, row.batch, row.time
    lengths = rng.integers(t // 2, t + 1, b)
    lengths[0] = t
    if row.kind == "classifier":
        return (rng.integers(1, e["vocab_size"], (b, t)), lengths), (rng.integers(0, e["num_classes"], b),)
    if row.kind == "tagger":
        return (rng.integers(1, e["vocab_size"], (b, t)), lengths), (rng.integers(0, e["num_tags"], (b, t)),)
    tgt = rng.integers(1, e["tgt_vocab"], (b, e["tgt_len"]))
    return (rng.integers(1, e["src_vocab"], (b, t)), tgt), (tgt[:, 1:],)


def _calls(row: Row):
    """`(flax_call(module, params, *args), torch_call(module, *args))` for the row's kind."""
    if row.kind == "seq2seq":  # teacher forcing at every step: the same function on both sides
        return (lambda m, p, src, tgt: m.apply({"params": p}, src, tgt, 1.0)[:, 1:],
                lambda m, src, tgt: m(src, tgt, 1.0)[:, 1:])
    return (lambda m, p, *a: m.apply({"params": p}, *a), lambda m, *a: m(*a))


def build(row: Row, dtype: str, torch_device) -> Workload:
    """The row's workload: seeded PyTorch weights, converted to flaxseq."""
    import jax.numpy as jnp
    import optax
    import torch

    import parity

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    layer = row.kind in ("RNN", "LSTM", "GRU")
    module = _layer_torch_module(row, torch) if layer else _model_torch_module(row, torch)
    module = module.to(getattr(torch, dtype))
    flax_module, variables = parity.from_torch(module)
    module = module.to(torch_device)
    flax_call, torch_call = _calls(row)
    if layer:
        x = rng.standard_normal((row.batch, row.time, row.input_size)).astype(dtype)
        args, targets = (x,), ()

        def torch_loss(out, _):
            return (out[0] ** 2).mean()

        def jax_loss(out, _):
            return (out[0] ** 2).mean()
    else:
        args, targets = _model_inputs(row, rng)

        def torch_loss(logits, tgt):
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[0].reshape(-1))

        def jax_loss(logits, tgt):
            labels = tgt[0].reshape(-1)
            return optax.softmax_cross_entropy_with_integer_labels(logits.reshape(-1, logits.shape[-1]), labels).mean()

    def to_torch(a):
        return torch.from_numpy(a).to(torch_device)

    return Workload(
        module, flax_module, variables,
        tuple(to_torch(a) for a in args), tuple(jnp.asarray(a) for a in args),
        tuple(jnp.asarray(a) for a in targets), tuple(to_torch(a) for a in targets), torch_loss, jax_loss,
        lambda p, *a: flax_call(flax_module, p, *a), torch_call,
    )


# --------------------------------------------------------------------------------------------
# Runners: each returns (call, compile_seconds, memory_bytes); `call()` runs once and waits.


def jax_runners(apply: Callable, params, args: tuple, targets: tuple, loss: Callable, xla_options: dict):
    """flaxseq (or any flax function `apply(params, *args)`): jitted forward and train step,
    compiled with `xla_options` (XLA's compile options, `--xla-option`)."""
    import jax
    import optax

    def timed_compile(fn, *example):
        start = time.perf_counter()
        compiled = fn.lower(*example).compile(compiler_options=xla_options or None)
        seconds = time.perf_counter() - start
        return compiled, seconds, _jax_memory(compiled)

    fwd, fwd_compile, fwd_mem = timed_compile(jax.jit(apply), params, *args)

    optimizer = optax.adam(1e-3)

    def train_step(state, args, targets):
        params, opt_state = state
        value, grads = jax.value_and_grad(lambda p: loss(apply(p, *args), targets))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    # the state is donated, as PyTorch updates its parameters in place; copy so others keep theirs
    state = [jax.tree.map(lambda a: a.copy(), (params, optimizer.init(params)))]
    step, step_compile, step_mem = timed_compile(
        jax.jit(train_step, donate_argnums=0), state[0], args, targets
    )

    def run_forward():
        jax.block_until_ready(fwd(params, *args))

    def run_train():
        state[0], value = step(state[0], args, targets)
        value.block_until_ready()

    return {"forward": (run_forward, fwd_compile, fwd_mem), "train": (run_train, step_compile, step_mem)}


def _jax_memory(compiled) -> int | None:
    """Bytes the executable needs beyond its inputs: temporaries and outputs not aliased to inputs."""
    try:
        m = compiled.memory_analysis()
        return int(m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


def torch_runners(
    module, torch_call: Callable, args: tuple, targets: tuple, loss: Callable, sync: Callable, compile: bool = False
):
    """PyTorch eager (or `torch.compile`d): forward under no_grad, and an Adam training step."""
    import torch

    compiled = torch.compile(module) if compile else module

    def call(*a):
        return torch_call(compiled, *a)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)

    def run_forward():
        with torch.no_grad():
            call(*args)
        sync()

    def run_train():
        optimizer.zero_grad(set_to_none=True)
        loss(call(*args), targets).backward()
        optimizer.step()
        sync()

    runners = {}
    for name, fn in (("forward", run_forward), ("train", run_train)):
        start = time.perf_counter()
        fn()  # compiles under torch.compile; eager pays its first-call set-up here
        runners[name] = (fn, time.perf_counter() - start if compile else 0.0, None)
    return runners


# --------------------------------------------------------------------------------------------
# Timing


def measure(calls: dict[str, Callable], budget: float, min_rounds: int = 3, max_rounds: int = 30) -> dict:
    """Per-call seconds of each callable: {name: [one value per round]}.

    Rounds interleave the callables, so a change of machine load touches all of them alike.
    Each round calls each callable enough times to take about `budget / (rounds * callables)`.
    """
    once = {name: _warm_up(fn) for name, fn in calls.items()}
    target = budget / (8 * len(calls))  # aim at ~8 rounds within the budget
    reps = {name: max(1, min(1000, round(target / t))) for name, t in once.items()}
    times = {name: [] for name in calls}
    start = time.perf_counter()
    for rounds in range(1, max_rounds + 1):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            times[name].append((time.perf_counter() - t0) / reps[name])
        if rounds >= min_rounds and time.perf_counter() - start > budget:
            break
    return times


def _warm_up(fn, max_calls: int = 10, max_seconds: float = 10.0) -> float:
    """Call `fn` until two calls in a row agree within 25% (PyTorch's first calls build oneDNN
    primitives and allocate, several times slower); returns the last call's seconds."""
    last, start = math.inf, time.perf_counter()
    for _ in range(max_calls):
        t0 = time.perf_counter()
        fn()
        now = max(time.perf_counter() - t0, 1e-6)
        if abs(now - last) < 0.25 * min(now, last) or time.perf_counter() - start > max_seconds:
            return now
        last = now
    return last


def torch_memory_subprocess(row: Row, dtype: str) -> dict:
    """Peak RSS rise (bytes) of PyTorch's forward and train step, measured in a fresh process."""
    cmd = [sys.executable, "-m", "parity.bench", "--_torch-memory", row.name, "--dtype", dtype]
    # a fixed mmap threshold makes glibc return large freed blocks to the system at once, so the
    # resident size before a call does not already hold the previous call's peak
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True, env=env).stdout
        return json.loads(out.strip().splitlines()[-1])
    except Exception as e:  # memory is a side column: report why it is missing, keep going
        return {"error": f"{type(e).__name__}: {str(e)[:200]}"}


def _rss(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field_name} in /proc/self/status")


def _torch_memory_child(row: Row, dtype: str) -> None:
    """Child side of `torch_memory_subprocess`: warm up, reset the RSS peak, run, report."""
    import torch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    torch_call = _calls(row)[1]
    if row.kind in ("RNN", "LSTM", "GRU"):
        module = _layer_torch_module(row, torch).to(getattr(torch, dtype))
        args = (torch.from_numpy(rng.standard_normal((row.batch, row.time, row.input_size)).astype(dtype)),)
        targets = ()

        def loss(out, _):
            return (out[0] ** 2).mean()
    else:
        module = _model_torch_module(row, torch).to(getattr(torch, dtype))
        args, targets = _model_inputs(row, rng)
        args, targets = tuple(map(torch.from_numpy, args)), tuple(map(torch.from_numpy, targets))

        def loss(logits, tgt):
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[0].reshape(-1))

    runners = torch_runners(module, torch_call, args, targets, loss, sync=lambda: None)
    result = {}
    for name in PASSES:
        fn = runners[name][0]
        fn()
        fn()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
        base = _rss("VmRSS")
        fn()
        result[name] = _rss("VmHWM") - base
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------
# The suite


def flax_lstm_stack(row: Row):
    """flax's own LSTM: `nn.RNN(nn.OptimizedLSTMCell)` per layer (and direction), random weights."""
    import flax.linen as nn
    import jax

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(row.num_layers):
                forward = nn.RNN(nn.OptimizedLSTMCell(row.hidden_size))
                if row.bidirectional:
                    x = nn.Bidirectional(forward, nn.RNN(nn.OptimizedLSTMCell(row.hidden_size)))(x)
                else:
                    x = forward(x)
            return (x,)

    module = Stack()
    x = np.zeros((row.batch, row.time, row.input_size), np.float32)
    return module, module.init(jax.random.key(0), x)


def run_row(row: Row, args) -> dict:
    """Time one row; returns its record (see `main` for the fields)."""
    import jax
    import torch

    torch_device = "cuda" if args.device == "gpu" else "cpu"
    sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)
    record = {"row": row.name, "config": dataclasses.asdict(row), "notes": [], "passes": {}}
    w = build(row, args.dtype, torch_device)
    torch_targets = w.torch_targets

    wanted = set(args.columns)
    columns = {}
    if "flaxseq" in wanted:
        columns["flaxseq"] = jax_runners(
            w.flax_apply, w.variables["params"], w.jax_args, w.targets, w.jax_loss, args.xla_options
        )
    columns["torch"] = torch_runners(w.torch_module, w.torch_call, w.torch_args, torch_targets, w.torch_loss, sync)
    if "flaxseq-cudnn" in wanted and row.kind == "LSTM" and not row.proj_size and args.device == "gpu":
        cudnn_module = w.flax_module.clone(use_cudnn=True)
        columns["flaxseq-cudnn"] = jax_runners(
            lambda p, *a: cudnn_module.apply({"params": p}, *a), w.variables["params"], w.jax_args, w.targets,
            w.jax_loss, args.xla_options,
        )
    if "flax" in wanted and row.kind == "LSTM" and not row.proj_size:
        stack, stack_vars = flax_lstm_stack(row)
        columns["flax"] = jax_runners(
            lambda p, *a: stack.apply({"params": p}, *a), stack_vars["params"], w.jax_args, w.targets, w.jax_loss,
            args.xla_options,
        )
    if "torch.compile" in wanted and not _COMPILE_STATE.get("disabled"):
        try:
            start = time.perf_counter()
            module = build(row, args.dtype, torch_device).torch_module
            columns["torch.compile"] = torch_runners(
                module, w.torch_call, w.torch_args, torch_targets, w.torch_loss, sync, compile=True
            )
            if time.perf_counter() - start > args.compile_limit:
                _COMPILE_STATE["disabled"] = f"torch.compile took {time.perf_counter() - start:.0f} s on {row.name}"
        except Exception as e:
            _COMPILE_STATE["disabled"] = f"torch.compile failed on {row.name}: {type(e).__name__}: {str(e)[:120]}"
            record["notes"].append(_COMPILE_STATE["disabled"])
    elif "torch.compile" in wanted:
        record["notes"].append(f"torch.compile skipped ({_COMPILE_STATE['disabled']})")

    torch_memory = {}
    if torch_device == "cpu" and args.memory:
        torch_memory = torch_memory_subprocess(row, args.dtype)
        if "error" in torch_memory:
            record["notes"].append(f"PyTorch memory: {torch_memory['error']}")

    for name in args.passes:
        calls = {col: runners[name][0] for col, runners in columns.items()}
        budget = row.budget * (0.3 if args.quick else 1.0) * (0.5 if name == "forward" else 1.0)
        times = measure(calls, budget)
        result = {}
        for col, values in times.items():
            median = statistics.median(values)
            memory = columns[col][name][2]
            if col == "torch" and torch_device == "cuda":
                memory = _torch_cuda_memory(calls[col])
            elif col == "torch":
                memory = torch_memory.get(name)
            result[col] = {
                "median_ms": 1e3 * median, "min_ms": 1e3 * min(values), "max_ms": 1e3 * max(values),
                "rounds": len(values), "compile_s": columns[col][name][1], "memory_mb": _mb(memory),
                "tokens_per_s": row.tokens / median,
            }
        base = result["torch"]["median_ms"]
        for col in result:
            result[col]["ratio"] = result[col]["median_ms"] / base
        record["passes"][name] = result
    del jax
    return record


_COMPILE_STATE: dict = {}


def _torch_cuda_memory(call) -> int:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    call()
    return torch.cuda.max_memory_allocated() - base


def _mb(nbytes) -> float | None:
    return None if nbytes is None else nbytes / 2**20


def format_table(records: list[dict]) -> str:
    """The terminal table: one line per row, pass and column."""
    lines = [
        f"{'row':<22} {'pass':<8} {'column':<14} {'median ms':>10} {'min':>9} {'max':>9} {'ratio':>6} "
        f"{'compile s':>9} {'mem MB':>8} {'tokens/s':>10}"
    ]
    for record in records:
        if not record["passes"]:
            lines.append(f"{record['row']:<22} skipped: {'; '.join(record['notes'])}")
            continue
        for name, result in record["passes"].items():
            for col, r in result.items():
                mem = "-" if r["memory_mb"] is None else f"{r['memory_mb']:.1f}"
                lines.append(
                    f"{record['row']:<22} {name:<8} {col:<14} {r['median_ms']:>10.2f} {r['min_ms']:>9.2f} "
                    f"{r['max_ms']:>9.2f} {r['ratio']:>6.2f} {r['compile_s']:>9.2f} {mem:>8} "
                    f"{r['tokens_per_s']:>10.0f}"
                )
        for note in record["notes"]:
            lines.append(f"{'':<22} note: {note}")
    return "\n".join(lines)


def plot(records: list[dict], path: str) -> None:
    """A bar chart of each column's time over PyTorch eager's, per row and pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if r["passes"]]
    passes = [p for p in PASSES if any(p in r["passes"] for r in records)]
    fig, axes = plt.subplots(len(passes), 1, figsize=(max(6, 1.1 * len(records) + 2), 3.5 * len(passes)),
                             squeeze=False)
    for ax, name in zip(axes[:, 0], passes, strict=True):
        cols = sorted({c for r in records for c in r["passes"].get(name, {}) if c != "torch"})
        width = 0.8 / max(1, len(cols))
        for k, col in enumerate(cols):
            xs = [i + (k - (len(cols) - 1) / 2) * width for i, r in enumerate(records)]
            ys = [r["passes"].get(name, {}).get(col, {}).get("ratio", math.nan) for r in records]
            ax.bar(xs, ys, width, label=col)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(records)), [r["row"] for r in records], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("time / PyTorch eager")
        ax.set_title(f"{name} (below 1: faster than PyTorch eager)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def environment(device: str, malloc: str) -> dict:
    import jax
    import torch

    return {
        "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "jax": jax.__version__, "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()], "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "device": device,
        "cuda": torch.cuda.get_device_name() if device == "gpu" else None, "malloc": malloc,
    }


def configure(device: str, dtype: str) -> None:
    """Set both frameworks up: x64 for float64, exact float32 matrix products (no TF32) on GPU."""
    import jax
    import torch

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    if device == "gpu":
        if jax.default_backend() != "gpu":
            raise SystemExit(f"--device gpu: JAX's default backend is {jax.default_backend()}, not gpu")
        if not torch.cuda.is_available():
            raise SystemExit("--device gpu: torch.cuda is not available")
        jax.config.update("jax_default_matmul_precision", "highest")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        jax.config.update("jax_platforms", "cpu")
    warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m parity.bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the quick rows, with shorter budgets")
    p.add_argument("--rows", nargs="+", help="row names (default: all, or the quick ones)")
    p.add_argument("--passes", nargs="+", choices=PASSES, default=list(PASSES))
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--gpu", dest="device", action="store_const", const="gpu", help="same as --device gpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--malloc", choices=("keep", "default"), default="keep",
                   help="keep: malloc keeps freed memory for reuse (flaxseq.memory); default: glibc's settings")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every row's timing budget")
    p.add_argument("--columns", nargs="+", choices=COLUMNS, default=list(COLUMNS),
                   help="what to time besides PyTorch eager (default: all that apply to the row)")
    p.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                   help="leave out the torch.compile column")
    p.add_argument("--xla-option", dest="xla_options", action="append", default=[], metavar="NAME=VALUE",
                   help="an XLA compile option for every JAX column, e.g. "
                        "xla_gpu_experimental_enable_fusion_autotuner=false; repeatable")
    p.add_argument("--compile-limit", type=float, default=90.0,
                   help="seconds; a slower torch.compile turns the column off for later rows")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip PyTorch's CPU memory subprocess")
    p.add_argument("--json", help="write the records here")
    p.add_argument("--png", help="write the ratio chart here")
    p.add_argument("--list", action="store_true", help="print the rows and exit")
    p.add_argument("--_torch-memory", dest="torch_memory", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.torch_compile:
        args.columns = [c for c in args.columns if c != "torch.compile"]
    args.xla_options = dict(_xla_option(text) for text in args.xla_options)
    return args


def _xla_option(text: str) -> tuple:
    """`NAME=VALUE` as `(name, value)`, the value a bool, int or float where it reads as one."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--xla-option: expected NAME=VALUE, got {text!r}")
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def check_xla_options(options: dict) -> None:
    """Compile a tiny function with `options`, so that a bad one stops the run before any row."""
    import jax
    import jax.numpy as jnp

    if not options:
        return
    try:
        jax.jit(jnp.sin).lower(jnp.zeros(2)).compile(compiler_options=options)
    except Exception as e:
        raise SystemExit(f"--xla-option: {', '.join(f'{k}={v}' for k, v in options.items())} "
                         f"rejected by XLA: {str(e)[:200]}") from None


def select_rows(args) -> list[Row]:
    by_name = {r.name: r for r in ROWS}
    if args.rows:
        unknown = [n for n in args.rows if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown rows {unknown}; known: {', '.join(by_name)}")
        rows = [by_name[n] for n in args.rows]
    else:
        rows = [r for r in ROWS if r.quick or not args.quick]
    return [dataclasses.replace(r, budget=r.budget * args.budget_scale) for r in rows]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.torch_memory:  # the memory child keeps glibc's settings (torch_memory_subprocess)
        _torch_memory_child({r.name: r for r in ROWS}[args.torch_memory], args.dtype)
        return 0
    if args.malloc == "keep" and not keep_freed_memory():
        args.malloc = "default (no glibc malloc to set)"
    rows = select_rows(args)
    if args.list:
        for r in rows:
            print(f"{r.name:<22} {r.kind:<10} batch {r.batch:<4} time {r.time:<5} "
                  f"hidden {r.hidden_size:<4} layers {r.num_layers} bi {r.bidirectional} proj {r.proj_size}")
        return 0
    configure(args.device, args.dtype)
    check_xla_options(args.xla_options)
    env = environment(args.device, args.malloc)
    options = "".join(f", {k}={v}" for k, v in args.xla_options.items())
    print(f"# jax {env['jax']} ({env['jax_backend']}), torch {env['torch']} ({env['torch_threads']} threads), "
          f"{args.dtype}, {env['cuda'] or env['machine']}, malloc {args.malloc}{options}", flush=True)
    records = []
    for row in rows:
        start = time.perf_counter()
        try:
            record = run_row(row, args)
        except Skip as e:
            record = {"row": row.name, "config": dataclasses.asdict(row), "notes": [str(e)], "passes": {}}
        records.append(record)
        print(format_table([record]).split("\n", 1)[-1], f"  [{time.perf_counter() - start:.0f} s]", flush=True)
    print()
    print(format_table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "args": vars(args), "records": records}, f, indent=1)
    if args.png:
        plot(records, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
