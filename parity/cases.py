"""Random comparison cases for the layers and cells: one configuration -> one `Report`.

A case, here or for the models, is anything with `label()`, `dtype` and `run(seed) -> Report`;
`python -m parity` runs lists of them.
"""

import heapq
import itertools
from dataclasses import dataclass

import numpy as np
import torch

from parity.compare import Report, compare
from parity.convert import from_torch, torch_dtype
from parity.layers import torch_forward

LAYER_MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "LSTM_PROJ", "GRU")
CELL_MODES = ("RNNCell_TANH", "RNNCell_RELU", "LSTMCell", "GRUCell")


@dataclass(frozen=True)
class LayerCase:
    """One configuration of a layer (or cell) and its random inputs."""

    mode: str  # one of LAYER_MODES or CELL_MODES
    num_layers: int = 1
    bidirectional: bool = False
    bias: bool = True
    batch_first: bool = False
    hx: bool = False  # pass random initial states
    lengths: bool = False  # random unsorted lengths, including 1 and the full length
    unbatched: bool = False
    dtype: str = "float64"
    input_size: int = 5
    hidden_size: int = 7
    proj_size: int = 3  # LSTM_PROJ only
    batch: int = 4
    time: int = 6
    api: str = "linen"  # the flaxseq front end: "linen" or "nnx"

    @property
    def is_cell(self) -> bool:
        return "Cell" in self.mode

    def label(self) -> str:
        if self.is_cell:
            parts = [self.mode]
        else:
            parts = [self.mode, f"L{self.num_layers}"]
            parts += ["bi"] * self.bidirectional + ["batch_first"] * self.batch_first
            parts += ["lengths"] * self.lengths
        parts += ["no_bias"] * (not self.bias) + ["hx"] * self.hx + ["unbatched"] * self.unbatched
        return " ".join(["nnx"] * (self.api == "nnx") + parts)

    def run(self, seed: int = 0) -> Report:
        return run_case(self, seed)

    def torch_module(self) -> torch.nn.Module:
        kind, _, act = self.mode.partition("_")
        common = dict(bias=self.bias, dtype=torch_dtype(self.dtype))
        if self.is_cell:
            extra = {"nonlinearity": act.lower()} if kind == "RNNCell" else {}
            return getattr(torch.nn, kind)(self.input_size, self.hidden_size, **common, **extra)
        extra = {"nonlinearity": act.lower()} if kind == "RNN" else {}
        if self.mode == "LSTM_PROJ":
            kind, extra = "LSTM", {"proj_size": self.proj_size}
        return getattr(torch.nn, kind)(
            self.input_size, self.hidden_size, self.num_layers, batch_first=self.batch_first,
            bidirectional=self.bidirectional, **common, **extra,
        )

    def inputs(self, rng: np.random.Generator):
        """(args, kwargs, input names) for both frameworks' calls."""
        dtype = np.dtype(self.dtype)
        batch = () if self.unbatched else (self.batch,)

        def randn(*shape):
            return rng.standard_normal(shape).astype(dtype)

        if self.is_cell:
            x = randn(*batch, self.input_size)
            state = (*batch, self.hidden_size)
            if not self.hx:
                return (x,), {}, ("input",)
            if self.mode == "LSTMCell":
                return (x, (randn(*state), randn(*state))), {}, ("input", "h_0", "c_0")
            return (x, randn(*state)), {}, ("input", "h_0")

        time_batch = (self.time,) if self.unbatched else (
            (self.batch, self.time) if self.batch_first else (self.time, self.batch)
        )
        x = randn(*time_batch, self.input_size)
        kwargs = {}
        if self.lengths:
            lengths = rng.integers(1, self.time + 1, self.batch)
            lengths[:2] = (1, self.time)
            kwargs["lengths"] = rng.permutation(lengths)
        count = self.num_layers * (2 if self.bidirectional else 1)
        out = self.proj_size if self.mode == "LSTM_PROJ" else self.hidden_size
        if not self.hx:
            return (x, None), kwargs, ("input",)
        if self.mode.startswith("LSTM"):
            states = (randn(count, *batch, out), randn(count, *batch, self.hidden_size))
            return (x, states), kwargs, ("input", "h_0", "c_0")
        return (x, randn(count, *batch, out)), kwargs, ("input", "h_0")

    def output_names(self) -> tuple[str, ...]:
        if self.is_cell:
            return ("h'", "c'") if self.mode == "LSTMCell" else ("h'",)
        return ("output", "h_n", "c_n") if self.mode.startswith("LSTM") else ("output", "h_n")


def run_case(case: LayerCase, seed: int = 0) -> Report:
    """Build the PyTorch module with seeded weights, convert it, and compare on random inputs."""
    torch.manual_seed(seed)
    torch_module = case.torch_module()
    if case.api == "nnx":
        flax_module, variables = from_torch(torch_module, api="nnx"), None
    else:
        flax_module, variables = from_torch(torch_module)
    args, kwargs, input_names = case.inputs(np.random.default_rng(seed))
    call = None if case.is_cell else torch_forward
    return compare(
        torch_module, flax_module, variables, args, kwargs, torch_call=call,
        output_names=case.output_names(), input_names=input_names, seed=seed,
    )


def representative_cases() -> list[LayerCase]:
    """The report's default set: every mode and cell, in a demanding and a plain configuration."""
    cases = []
    for api, dtype in itertools.product(("linen", "nnx"), ("float64", "float32")):
        for mode in LAYER_MODES:
            cases.append(LayerCase(mode, num_layers=2, bidirectional=True, batch_first=True,
                                   hx=True, lengths=True, dtype=dtype, api=api))
            cases.append(LayerCase(mode, num_layers=3, bias=False, unbatched=True, dtype=dtype, api=api))
        for mode in CELL_MODES:
            cases.append(LayerCase(mode, hx=True, dtype=dtype, api=api))
    return cases


LAYER_AXES = dict(
    mode=LAYER_MODES, num_layers=(1, 2, 3), bidirectional=(False, True), bias=(True, False),
    batch_first=(False, True), hx=(False, True), lengths=(False, True),
    unbatched=(False, True), dtype=("float64", "float32"), api=("linen", "nnx"),
)


def layer_grid() -> list[LayerCase]:
    """The full configuration product for the layers (unbatched input has no lengths and no
    batch_first, which PyTorch ignores for it)."""
    products = itertools.product(*LAYER_AXES.values())
    cases = [LayerCase(**dict(zip(LAYER_AXES, values, strict=True))) for values in products]
    return [c for c in cases if not (c.unbatched and (c.lengths or c.batch_first))]


def covering(grid: list[LayerCase], axes, strength: int = 3) -> list[LayerCase]:
    """A subset of `grid` in which every combination of values of any `strength` of `axes` that
    the grid holds appears at least once (a greedy covering array; deterministic)."""
    axes = list(axes)

    def tuples(case):
        values = [getattr(case, a) for a in axes]
        return {(idx, tuple(values[i] for i in idx)) for idx in itertools.combinations(range(len(axes)), strength)}

    covers = [tuples(c) for c in grid]
    uncovered = set().union(*covers)
    # Each round takes the case covering the most uncovered tuples, the first such in `grid`. A
    # case's count only falls, so a count from an earlier round bounds it from above: a heap of
    # (-count, index) recounts only the cases that could still be the best (a lazy greedy).
    heap = [(-len(c), i) for i, c in enumerate(covers)]
    heapq.heapify(heap)
    chosen = []
    while uncovered:
        _, i = heapq.heappop(heap)
        entry = (-len(covers[i] & uncovered), i)
        if heap and entry > heap[0]:  # another case may count more now: recount that one first
            heapq.heappush(heap, entry)
            continue
        chosen.append(grid[i])
        uncovered -= covers[i]
    return chosen


def covering_cases(strength: int = 3) -> list[LayerCase]:
    """A subset of `layer_grid()` covering every `strength`-way combination of its axes."""
    return covering(layer_grid(), LAYER_AXES, strength)


CELL_AXES = dict(
    mode=CELL_MODES, bias=(True, False), hx=(False, True), unbatched=(False, True), dtype=("float64", "float32"),
    api=("linen", "nnx"),
)


def cell_grid() -> list[LayerCase]:
    """The full product for the cells."""
    return [LayerCase(**dict(zip(CELL_AXES, values, strict=True))) for values in itertools.product(*CELL_AXES.values())]


def cell_covering_cases(strength: int = 3) -> list[LayerCase]:
    """A subset of `cell_grid()` covering every `strength`-way combination of its axes."""
    return covering(cell_grid(), CELL_AXES, strength)



