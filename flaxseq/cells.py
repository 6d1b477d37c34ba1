"""The linen cells: one time step, PyTorch's `RNNCell`, `LSTMCell`, `GRUCell`, and
`RNNCellBase` for any cell kind.

A cell declares `weight_ih [gates * hidden, input]`, `weight_hh [gates * hidden, hidden]`,
`bias_ih` and `bias_hh [gates * hidden]` under PyTorch's names and calls the framework-free
step (`flaxseq.stack.cell_step`); its equations are its kind's (`flaxseq.kinds`). To run a
cell over time, use a layer (`flaxseq.RNNBase`), which scans, or `flaxseq.CellScan(cell)`,
which keeps the cell's parameters; `flax.linen.RNN` refuses a flaxseq cell, whose call is
PyTorch's and not flax's.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flaxseq import checks, kinds, stack
from flaxseq.init import recurrent_uniform
from flaxseq.kinds import CellKind
from flaxseq.weights import Weights, cell_shapes, declare


class _CellKindModule(nn.Module):
    """A linen module that says what it computes through `cell_kind()`, a cell's or a layer's.

    `cell_kind()` is read outside `init` and `apply` (the configuration checks of
    `__post_init__`, `tabulate`), where linen refuses a wrapped method: every subclass's
    `cell_kind`, the built-in ones and a user's override alike, is kept out of linen's wrapping
    as `nn.nowrap` would, so that overriding it needs nothing more."""

    def __init_subclass__(cls, **kwargs):
        method = cls.__dict__.get("cell_kind")
        if callable(method):
            nn.nowrap(method)
        super().__init_subclass__(**kwargs)


class _Cell(_CellKindModule):
    """The call the cells share; a cell says what it is through `cell_kind()` and its fields."""

    def cell_kind(self) -> CellKind:
        return self.kind

    def __post_init__(self):
        if not isinstance(self.cell_kind(), CellKind):
            raise TypeError(f"kind must be a flaxseq.CellKind, got {type(self.cell_kind()).__name__}")
        checks.check_recurrent_config(input_size=self.input_size, hidden_size=self.hidden_size)
        super().__post_init__()

    @property
    def num_feature_axes(self) -> int:
        """Read by `flax.linen.RNN`, which calls a cell as `(carry, x) -> (carry, y)`; a flaxseq
        cell's call is PyTorch's `(input, hx) -> hx'`, so it is refused here, naming the adapter."""
        raise checks.flax_rnn_refusal(self, "flax.linen.RNN", "flaxseq.CellScan")

    @nn.compact
    def __call__(self, input, hx=None):
        weights = declare_weights(self, self.param)
        return stack.cell_step(
            self.cell_kind(), weights, input, hx, input_size=self.input_size, dtype=self.dtype,
            name=checks.module_label(self),
        )


def declare_weights(cell: _Cell, param) -> Weights:
    """`cell`'s parameters, declared by `param(name, init, shape, dtype)` (a module's `self.param`):
    PyTorch's names in its order, drawn from U(-1/sqrt(hidden), 1/sqrt(hidden))."""
    checks.check_x64(cell.param_dtype)
    checks.check_compute_dtype(cell.dtype)
    init = recurrent_uniform(cell.hidden_size)
    shapes = cell_shapes(cell.cell_kind().gates, cell.input_size, cell.hidden_size, cell.bias)
    return declare(lambda name, shape: param(name, init, shape, cell.param_dtype), shapes)


class RNNCellBase(_Cell):
    """One step of any cell kind: `h' = cell.apply(variables, input, hx=None)`, or `(h', c')`
    when the kind has a cell state.

    `RNNCellBase(kind, input_size, hidden_size, bias=True, *, dtype=None, param_dtype=float32)`;
    `input: [batch, input_size]` or `[input_size]`, `hx` and the result `[batch, hidden_size]`
    each (or `[hidden_size]`), zeros when None. Parameters: `weight_ih [gates * hidden, input]`,
    `weight_hh [gates * hidden, hidden]`, `bias_ih`, `bias_hh [gates * hidden]`.
    """

    kind: CellKind
    input_size: int
    hidden_size: int
    bias: bool = True
    dtype: Any = dataclasses.field(default=None, kw_only=True)
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)


class RNNCell(_Cell):
    """The twin of `torch.nn.RNNCell`: h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (or relu).

    `cell.apply(variables, input, hx=None) -> h'`, with `input: [batch, input_size]` or
    `[input_size]`, `hx` and `h': [batch, hidden_size]` or `[hidden_size]`; `hx=None` is zeros.
    Parameters: `weight_ih [hidden, input]`, `weight_hh [hidden, hidden]`, `bias_ih`, `bias_hh`.

    PyTorch's `dtype=` is `param_dtype` here; `dtype` is the computation dtype (None: promoted
    from the input and parameters). `device=` has no meaning in JAX.

    >>> cell = RNNCell(10, 20)
    >>> variables = cell.init(jax.random.key(0), jnp.zeros((3, 10)))
    """

    input_size: int
    hidden_size: int
    bias: bool = True
    nonlinearity: str = "tanh"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def cell_kind(self) -> CellKind:
        checks.check_nonlinearity(self.nonlinearity)
        return kinds.rnn(self.nonlinearity)


class LSTMCell(_Cell):
    """The twin of `torch.nn.LSTMCell`, equations as in `flaxseq.kinds.LSTM`.

    `cell.apply(variables, input, hx=None) -> (h', c')`, with `input: [batch, input_size]` or
    `[input_size]`, `hx = (h, c)`, each `[batch, hidden_size]` (or `[hidden_size]`), zeros when None.
    Parameters: `weight_ih [4 * hidden, input]`, `weight_hh [4 * hidden, hidden]`, `bias_ih`,
    `bias_hh`, gates in the order i, f, g, o. `dtype`/`param_dtype` as in `RNNCell`.
    """

    input_size: int
    hidden_size: int
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    kind = kinds.LSTM


class GRUCell(_Cell):
    """The twin of `torch.nn.GRUCell`, equations as in `flaxseq.kinds.GRU`.

    `cell.apply(variables, input, hx=None) -> h'`, shapes as in `RNNCell`. Parameters:
    `weight_ih [3 * hidden, input]`, `weight_hh [3 * hidden, hidden]`, `bias_ih`, `bias_hh`,
    gates in the order r, z, n. `dtype`/`param_dtype` as in `RNNCell`.
    """

    input_size: int
    hidden_size: int
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    kind = kinds.GRU
