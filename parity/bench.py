"""`python -m parity.bench`: flaxseq against PyTorch, same shapes, weights and dtype, in one process.

Every layer and tutorial-model row converts a seeded PyTorch module with `parity.from_torch`;
the language-model rows (`lm_runners`) build each framework's model as its users write it
(PyTorch's word_language_model `RNNModel` and train step; flaxseq's parts in a user's linen
module and `jax.jit` step). Both are timed interleaved in rounds so that both frameworks see
the same machine load:

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

    python -m parity.bench              # every row, about 12 minutes on 2 CPU cores
    python -m parity.bench --quick      # the quick rows, about 1 minute
    python -m parity.bench --rows classifier-lstm --passes train --json out.json --png out.png
    python -m parity.bench --device gpu # JAX's GPU backend and torch on CUDA, TF32 off on both
    python -m parity.bench --gpu --rows classifier-lstm --columns flaxseq \
        --xla-option xla_gpu_autotune_level=0   # one column, compiled with an XLA option

Writes a table to the terminal, and JSON and a PNG chart of the ratios where asked.

The headline is what a user gets: the process as it starts, glibc's malloc as it comes
(`--malloc plain`, the default). `--malloc both` also times each row in a child process with
malloc set to keep freed memory (`flaxseq.memory.keep_freed_memory`, which applies to both
frameworks): extra columns `flaxseq+keep` and `torch+keep`, their ratios to `torch+keep`.
`--malloc keep` sets it in this process for every column.

Train rows whose matrix products are listed (`train_products`) also get each column's achieved
GFLOP/s (the products' FLOPs over the step's time), beside the machine's float32 rate of a
2048^3 product in JAX and torch, printed first; `--floor` adds each such row's floor: the sum
over its products of each one's time alone in JAX at its own shape (in-loop ones per step of
a loop, as XLA runs them).
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

    `kind` is a layer (`RNN`, `LSTM`, `GRU`), a tutorial model (`classifier`, `tagger`,
    `seq2seq`) or a language model as a user writes it (`lm`, `lm_runners`). Layer inputs are
    `[batch, time, input_size]` (batch first); the language models' are `[time, batch]` ids.
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
    # the public word_language_model example's model and train step (time-major 35 x 20)
    Row("word-lm-lstm", "lm", 20, 35, budget=30, quick=True, extra=dict(
        cell="LSTM", vocab_size=10000, embed_size=200, hidden_size=200, num_layers=2, dropout=0.2,
        optimizer="sgd", lr=20.0, clip=0.25)),
    Row("word-lm-gru", "lm", 20, 35, budget=25, extra=dict(
        cell="GRU", vocab_size=10000, embed_size=200, hidden_size=200, num_layers=2, dropout=0.2,
        optimizer="sgd", lr=20.0, clip=0.25)),
    Row("char-lm-lstm", "lm", 64, 100, budget=40, extra=dict(
        cell="LSTM", vocab_size=100, embed_size=64, hidden_size=512, num_layers=2, dropout=0.0,
        optimizer="adam", lr=2e-3, clip=0.0)),
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
# Language models as users write them: their own model around flaxseq's parts, their own step.


def torch_rnn_model(row: Row, torch):
    """The `RNNModel` of PyTorch's public word_language_model example (its LSTM/GRU branch):
    embedding, dropout, `nn.LSTM`/`nn.GRU` with dropout between layers, dropout, a linear
    decoder on the `[time, batch, hidden]` output, `log_softmax` over the vocabulary."""
    nn, F = torch.nn, torch.nn.functional
    e = row.extra

    class RNNModel(nn.Module):
        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout):
            super().__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            output = self.drop(output)
            decoded = self.decoder(output).view(-1, self.ntoken)
            return F.log_softmax(decoded, dim=1), hidden

    return RNNModel(e["cell"], e["vocab_size"], e["embed_size"], e["hidden_size"], e["num_layers"], e["dropout"])


def flax_rnn_model(row: Row):
    """The same model as a flaxseq user writes it: `flaxseq.basic.Embedding`, `nn.Dropout`,
    `flaxseq.LSTM`/`flaxseq.GRU`, `flaxseq.basic.Linear` on the `[time, batch, hidden]`
    output, which returns the logits (`flaxseq.losses.cross_entropy` takes them)."""
    import flax.linen as nn

    import flaxseq
    from flaxseq.basic import Embedding, Linear

    e = row.extra
    layer = getattr(flaxseq, e["cell"])

    class RNNModel(nn.Module):
        @nn.compact
        def __call__(self, ids, hidden, train: bool):
            emb = nn.Dropout(e["dropout"], deterministic=not train)(Embedding(e["vocab_size"], e["embed_size"])(ids))
            output, hidden = layer(e["embed_size"], e["hidden_size"], e["num_layers"], dropout=e["dropout"])(
                emb, hidden, deterministic=not train)
            output = nn.Dropout(e["dropout"], deterministic=not train)(output)
            return Linear(e["vocab_size"])(output), hidden  # [time, batch, vocab]

    return RNNModel()


def _lm_data(row: Row):
    """Token ids `[time, batch]` and the next tokens as targets, numpy int64."""
    rng = np.random.default_rng(0)
    stream = rng.integers(0, row.extra["vocab_size"], (row.time + 1, row.batch))
    return stream[:-1], stream[1:]


def lm_runners(row: Row, framework: str, xla_options: dict | None = None) -> dict:
    """`{pass: (call, compile_seconds, memory_bytes)}` for one framework ('flaxseq', 'torch') of
    a language-model row: the train step carries the hidden state from call to call (detached),
    with dropout on; the forward pass is evaluation mode from a zero state.

    The train step is the example's: cross-entropy over every token, gradient norm clipped at
    `clip` (0: none), SGD at `lr` (PyTorch: `p.data.add_(p.grad, alpha=-lr)` after
    `clip_grad_norm_`; optax: `clip_by_global_norm` then `sgd`), or Adam at `lr`
    (`torch.optim.Adam`, `optax.adam`)."""
    e = row.extra
    ids, targets = _lm_data(row)
    layers, batch, hidden = e["num_layers"], row.batch, e["hidden_size"]
    if framework == "torch":
        import torch

        torch.manual_seed(0)
        model = torch_rnn_model(row, torch)
        ids_t, targets_t = torch.from_numpy(ids), torch.from_numpy(targets).reshape(-1)
        criterion = torch.nn.NLLLoss()
        adam = torch.optim.Adam(model.parameters(), lr=e["lr"]) if e["optimizer"] == "adam" else None

        def zeros():
            h = torch.zeros(layers, batch, hidden)
            return (h, torch.zeros_like(h)) if e["cell"] == "LSTM" else h

        state = [zeros()]

        def run_train():
            model.train()
            h = state[0]
            h = tuple(s.detach() for s in h) if isinstance(h, tuple) else h.detach()  # repackage_hidden
            model.zero_grad()
            output, state[0] = model(ids_t, h)
            criterion(output, targets_t).backward()
            if e["clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), e["clip"])
            if adam is not None:
                adam.step()
            else:
                for p in model.parameters():
                    p.data.add_(p.grad, alpha=-e["lr"])

        def run_forward():
            model.eval()
            with torch.no_grad():
                model(ids_t, zeros())

        return {"forward": (run_forward, 0.0, None), "train": (run_train, 0.0, None)}

    import jax
    import jax.numpy as jnp
    import optax

    from flaxseq.losses import cross_entropy

    model = flax_rnn_model(row)
    ids_j, targets_j = jnp.asarray(ids), jnp.asarray(targets)
    h = jnp.zeros((layers, batch, hidden), jnp.float32)
    h0 = (h, jnp.zeros_like(h)) if e["cell"] == "LSTM" else h  # distinct buffers: the step donates them
    params = model.init(jax.random.key(0), ids_j, h0, False)["params"]
    if e["optimizer"] == "adam":
        tx = optax.adam(e["lr"])
    else:
        tx = optax.sgd(e["lr"])
    if e["clip"]:
        tx = optax.chain(optax.clip_by_global_norm(e["clip"]), tx)

    def train_step(state, ids, targets):
        params, opt_state, hidden, key = state
        key, dropout_key = jax.random.split(key)

        def loss_fn(p):
            logits, hidden_out = model.apply({"params": p}, ids, hidden, True, rngs={"dropout": dropout_key})
            return cross_entropy(logits, targets), hidden_out

        (loss, hidden), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, hidden, key), loss

    def forward(params, ids):
        return model.apply({"params": params}, ids, h0, False)

    def timed_compile(fn, *example):
        start = time.perf_counter()
        compiled = fn.lower(*example).compile(compiler_options=xla_options or None)
        return compiled, time.perf_counter() - start, _jax_memory(compiled)

    state = [(params, tx.init(params), h0, jax.random.key(1))]
    step, step_compile, step_mem = timed_compile(jax.jit(train_step, donate_argnums=0), state[0], ids_j, targets_j)
    fwd_params = jax.tree.map(lambda a: a.copy(), params)  # the step donates its own
    fwd, fwd_compile, fwd_mem = timed_compile(jax.jit(forward), fwd_params, ids_j)

    def run_train():
        state[0], loss = step(state[0], ids_j, targets_j)
        loss.block_until_ready()

    def run_forward():
        jax.block_until_ready(fwd(fwd_params, ids_j))

    return {"forward": (run_forward, fwd_compile, fwd_mem), "train": (run_train, step_compile, step_mem)}


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


def _torch_memory_runners(row: Row, dtype: str) -> dict:
    """PyTorch's runners of a layer or model row, built without JAX."""
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
    return runners


def _torch_memory_child(row: Row, dtype: str) -> None:
    """Child side of `torch_memory_subprocess`: warm up, reset the RSS peak, run, report."""
    runners = lm_runners(row, "torch") if row.kind == "lm" else _torch_memory_runners(row, dtype)
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
# The step's matrix products: its FLOPs, and its floor (each product timed alone in JAX)

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


@dataclass(frozen=True)
class Product:
    """`count` matrix products `[m, k] x [k, n]`; `in_loop`: one per time step, inside the loop."""

    m: int
    k: int
    n: int
    count: int
    in_loop: bool = False

    @property
    def flop(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


def train_products(row: Row) -> list[Product] | None:
    """The matrix products of the row's train step as flaxseq computes them (None where not
    listed: the tutorial models, projections). Per layer and direction: the input projection
    (one product per gate), the recurrent product of each step forward and backward, the two
    weight gradients and the input's gradient (not for a layer row's first layer, whose input
    needs none); the language models add the decoder's product and its two gradients."""
    if row.proj_size or row.kind not in (*GATES, "lm"):
        return None
    lm = row.kind == "lm"
    e = row.extra
    cell, layers = (e["cell"], e["num_layers"]) if lm else (row.kind, row.num_layers)
    hidden, size = (e["hidden_size"], e["embed_size"]) if lm else (row.hidden_size, row.input_size)
    directions = 1 if lm or not row.bidirectional else 2
    gates, rows = GATES[cell], row.time * row.batch
    out = []
    for layer in range(layers):
        for _ in range(directions):
            out += [
                Product(rows, size, hidden, gates),  # x W_ih^T, per gate
                Product(row.batch, hidden, gates * hidden, row.time, True),  # h W_hh^T
                Product(row.batch, gates * hidden, hidden, row.time, True),  # dgh W_hh
                Product(gates * hidden, rows, size, 1),  # dW_ih
                Product(gates * hidden, rows, hidden, 1),  # dW_hh
            ]
            if lm or layer:
                out.append(Product(rows, gates * hidden, size, 1))  # dx
        size = directions * hidden
    if lm:
        vocab = e["vocab_size"]
        out += [Product(rows, hidden, vocab, 1), Product(hidden, rows, vocab, 1), Product(rows, vocab, hidden, 1)]
    return out


def step_flop(row: Row) -> int | None:
    """FLOPs of the row's train step in its matrix products (2 m k n each), or None."""
    products = train_products(row)
    return None if products is None else sum(p.flop for p in products)


def _median_seconds(fn, calls: int = 7) -> float:
    fn()
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def product_seconds(product: Product) -> float:
    """One product's time alone in JAX, float32: jitted on its own, or, in the loop, per step
    of a `lax.scan` over `product.count` steps, as XLA runs it inside a loop."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((product.k, product.n)), jnp.float32)
    if product.in_loop:
        xs = jnp.asarray(rng.standard_normal((product.count, product.m, product.k)), jnp.float32)

        @jax.jit
        def loop(xs, w):
            return jax.lax.scan(lambda c, x: (x @ w, None), jnp.zeros((product.m, product.n), xs.dtype), xs)[0]

        return _median_seconds(lambda: loop(xs, w).block_until_ready()) / product.count
    a = jnp.asarray(rng.standard_normal((product.m, product.k)), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    return _median_seconds(lambda: matmul(a, w).block_until_ready())


def floor_ms(row: Row) -> dict | None:
    """The row's floor: the sum over its train step's products of each one's time alone in JAX
    (`product_seconds`), in ms, with the in-loop part; None where the products are not listed."""
    products = train_products(row)
    if products is None:
        return None
    seconds = {p: product_seconds(dataclasses.replace(p, count=p.count if p.in_loop else 1)) for p in set(products)}
    total = sum(seconds[p] * p.count for p in products)
    in_loop = sum(seconds[p] * p.count for p in products if p.in_loop)
    return {"floor_ms": 1e3 * total, "in_loop_ms": 1e3 * in_loop, "gflop": step_flop(row) / 1e9}


PEAK_SIZE = 2048


def peak_gflop_per_s() -> dict:
    """The machine's float32 matrix-product rate, `[n, n] x [n, n]` at `PEAK_SIZE`, in JAX and torch."""
    import jax
    import jax.numpy as jnp
    import torch

    n = PEAK_SIZE
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    aj, at = jnp.asarray(a), torch.from_numpy(a)
    matmul = jax.jit(jnp.matmul)
    flop = 2 * n**3
    return {
        "size": n,
        "jax": flop / _median_seconds(lambda: matmul(aj, aj).block_until_ready()) / 1e9,
        "torch": flop / _median_seconds(lambda: torch.mm(at, at)) / 1e9,
    }


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
    import torch

    torch_device = "cuda" if args.device == "gpu" else "cpu"
    sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)
    record = {"row": row.name, "config": dataclasses.asdict(row), "notes": [], "passes": {}}
    wanted = set(args.columns)
    columns = {}
    if row.kind == "lm":
        if args.device != "cpu" or args.dtype != "float32":
            raise Skip("language-model rows run on the CPU in float32 only")
        if "flaxseq" in wanted:
            columns["flaxseq"] = lm_runners(row, "flaxseq", args.xla_options)
        columns["torch"] = lm_runners(row, "torch")
        if "torch.compile" in wanted:
            record["notes"].append("torch.compile not timed on language-model rows")
    else:
        _layer_or_model_columns(row, args, columns, record, torch_device, sync)
    return _time_row(row, args, columns, record, torch_device)


def _layer_or_model_columns(row: Row, args, columns: dict, record: dict, torch_device: str, sync) -> None:
    """The columns of a layer or tutorial-model row, converted from one seeded PyTorch module."""
    w = build(row, args.dtype, torch_device)
    torch_targets = w.torch_targets
    wanted = set(args.columns)
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


def _time_row(row: Row, args, columns: dict, record: dict, torch_device: str) -> dict:
    """Time the row's columns, pass by pass, into `record`."""
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
        flop = step_flop(row) if name == "train" else None
        for col in result:
            result[col]["ratio"] = result[col]["median_ms"] / base
            result[col]["gflop_per_s"] = None if flop is None else flop / result[col]["median_ms"] / 1e6
        record["passes"][name] = result
    return record


_COMPILE_STATE: dict = {}


def _torch_cuda_memory(call) -> int:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    call()
    return torch.cuda.max_memory_allocated() - base


def _rate(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _mb(nbytes) -> float | None:
    return None if nbytes is None else nbytes / 2**20


def format_table(records: list[dict]) -> str:
    """The terminal table: one line per row, pass and column."""
    lines = [
        f"{'row':<22} {'pass':<8} {'column':<14} {'median ms':>10} {'min':>9} {'max':>9} {'ratio':>6} "
        f"{'compile s':>9} {'mem MB':>8} {'tokens/s':>10} {'GFLOP/s':>8}"
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
                    f"{r['tokens_per_s']:>10.0f} {_rate(r.get('gflop_per_s')):>8}"
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


def processor() -> str:
    """The CPU's model name and flags that matter here (`/proc/cpuinfo`), or the platform's word."""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        flags = set(info.get("flags", "").split())
        wide = [f for f in ("avx2", "avx512f", "amx_tile") if f in flags]
        return (f"{info['model name']} (family {info.get('cpu family')}, model {info.get('model')}; "
                f"{os.cpu_count()} CPUs; {', '.join(wide) or 'no AVX2'})")
    except (OSError, KeyError, ValueError):
        return platform.processor() or platform.machine()


def environment(device: str, malloc: str) -> dict:
    import jax
    import torch

    return {
        "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
        "processor": processor(),
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
    p.add_argument("--malloc", choices=("plain", "keep", "both", "default"), default="plain",
                   help="plain (or default): glibc's settings, as a user's process has them; keep: malloc "
                        "keeps freed memory for reuse (flaxseq.memory) in this process; both: plain, and "
                        "each row again in a child process with keep, as extra columns")
    p.add_argument("--floor", action="store_true", help="each train row's floor (its products timed alone)")
    p.add_argument("--no-peak", dest="peak", action="store_false",
                   help="skip the machine's 2048^3 product rate (GFLOP/s columns are still given)")
    p.add_argument("--_row", dest="row_json", help=argparse.SUPPRESS)
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
    if args.row_json:  # a child of --malloc both: the parent's row as it is
        return [Row(**json.loads(args.row_json))]
    by_name = {r.name: r for r in ROWS}
    if args.rows:
        unknown = [n for n in args.rows if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown rows {unknown}; known: {', '.join(by_name)}")
        rows = [by_name[n] for n in args.rows]
    else:
        rows = [r for r in ROWS if r.quick or not args.quick]
    return [dataclasses.replace(r, budget=r.budget * args.budget_scale) for r in rows]


def _floor_note(floor: dict) -> str:
    over = floor.get("flaxseq_over_floor")
    return (f"floor {floor['floor_ms']:.1f} ms ({floor['in_loop_ms']:.1f} in loops), {floor['gflop']:.2f} GFLOP"
            + ("" if over is None else f"; flaxseq at {over:.2f}x its floor"))


def _add_keep_columns(row: Row, args, record: dict) -> None:
    """Time `row` again in a child process with malloc keeping freed memory; its flaxseq and
    torch columns join `record` as `flaxseq+keep` and `torch+keep`."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "keep.json")
        cmd = [sys.executable, "-m", "parity.bench", "--_row", json.dumps(dataclasses.asdict(row)),
               "--malloc", "keep", "--columns", "flaxseq", "--no-memory", "--no-peak", "--json", out,
               "--passes", *args.passes, "--dtype", args.dtype, "--device", args.device,
               *(["--quick"] if args.quick else [])]
        for name, value in args.xla_options.items():
            cmd += ["--xla-option", f"{name}={value}"]
        try:
            subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
            with open(out) as f:
                child = json.load(f)["records"][0]
        except Exception as e:  # a side column: say why it is missing, keep going
            record["notes"].append(f"malloc keep columns: {type(e).__name__}: {str(e)[-200:]}")
            return
    for name, result in child["passes"].items():
        for col in ("flaxseq", "torch"):
            if col in result and name in record["passes"]:
                record["passes"][name][f"{col}+keep"] = result[col]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.torch_memory:  # the memory child keeps glibc's settings (torch_memory_subprocess)
        _torch_memory_child({r.name: r for r in ROWS}[args.torch_memory], args.dtype)
        return 0
    if args.malloc == "default":
        args.malloc = "plain"
    if args.malloc == "keep" and not keep_freed_memory():
        args.malloc = "plain (no glibc malloc to set)"
    rows = select_rows(args)
    if args.list:
        for r in rows:
            sizes = (f"hidden {r.hidden_size:<4} layers {r.num_layers} bi {r.bidirectional} proj {r.proj_size}"
                     if not r.extra else " ".join(f"{k} {v}" for k, v in r.extra.items()))
            print(f"{r.name:<22} {r.kind:<10} batch {r.batch:<4} time {r.time:<5} {sizes}")
        return 0
    configure(args.device, args.dtype)
    check_xla_options(args.xla_options)
    env = environment(args.device, args.malloc)
    options = "".join(f", {k}={v}" for k, v in args.xla_options.items())
    print(f"# jax {env['jax']} ({env['jax_backend']}), torch {env['torch']} ({env['torch_threads']} threads), "
          f"{args.dtype}, {env['cuda'] or env['processor']}, malloc {args.malloc}{options}", flush=True)
    if args.peak and args.device == "cpu" and not args.row_json:
        env["peak_gflop_per_s"] = peak = peak_gflop_per_s()
        print(f"# float32 {peak['size']}^3 product: JAX {peak['jax']:.0f} GFLOP/s, torch {peak['torch']:.0f} GFLOP/s",
              flush=True)
    records = []
    for row in rows:
        start = time.perf_counter()
        try:
            record = run_row(row, args)
            if args.malloc == "both":
                _add_keep_columns(row, args, record)
            if args.floor and args.device == "cpu" and train_products(row) is not None:
                record["floor"] = floor_ms(row)
                train = record["passes"].get("train", {})
                if "flaxseq" in train:
                    record["floor"]["flaxseq_over_floor"] = train["flaxseq"]["median_ms"] / record["floor"]["floor_ms"]
                record["notes"].append(_floor_note(record["floor"]))
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
