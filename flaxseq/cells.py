"""Recurrent cells: one time step of RNN, LSTM and GRU, in PyTorch's layout and equations.

The step functions here are what the time loop (`flaxseq/recurrence.py`) scans; they know
nothing of time. Each takes the cell's weights, the carry and `gx`, the input projection
`x @ W_ih^T + b_ih` of this step, and returns
`(new_carry, output)`.

Parameters keep PyTorch's names, shapes and gate order, so converting a state_dict is a rename:

| mode | gates (rows of `weight_ih`, `weight_hh`, in order) |
| --- | --- |
| RNN_TANH, RNN_RELU | one block |
| LSTM | i, f, g, o |
| GRU | r, z, n |
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxseq import checks
from flaxseq.init import recurrent_uniform

GATE_COUNT = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class Weights(NamedTuple):
    """One cell's parameters (one layer and direction of a layer), in PyTorch's layout."""

    w_ih: jax.Array  # [gates * hidden, input]
    w_hh: jax.Array  # [gates * hidden, proj or hidden]
    b_ih: jax.Array | None  # [gates * hidden]
    b_hh: jax.Array | None  # [gates * hidden]
    w_hr: jax.Array | None  # [proj, hidden], LSTM with proj_size > 0 only


def create_weights(
    module: nn.Module, suffix: str, mode: str, input_size: int, hidden_size: int,
    bias: bool, proj_size: int, param_dtype: Any,
) -> Weights:
    """Declare one cell's parameters on `module` under PyTorch's names (`weight_ih{suffix}`, ...)."""
    init = recurrent_uniform(hidden_size)
    rows = GATE_COUNT[mode] * hidden_size
    hidden_in = proj_size or hidden_size

    def param(name, shape):
        return module.param(name + suffix, init, shape, param_dtype)

    return Weights(
        w_ih=param("weight_ih", (rows, input_size)),
        w_hh=param("weight_hh", (rows, hidden_in)),
        b_ih=param("bias_ih", (rows,)) if bias else None,
        b_hh=param("bias_hh", (rows,)) if bias else None,
        w_hr=param("weight_hr", (proj_size, hidden_size)) if proj_size else None,
    )


def cast_weights(weights: Weights, dtype) -> Weights:
    """The weights in the computation dtype (absent ones stay None)."""
    return Weights(*(None if w is None else jnp.asarray(w, dtype) for w in weights))


class StepWeights(NamedTuple):
    """The weights the time loop reads at every step, matrices transposed once, before the loop.

    XLA on CPU does not hoist `W_hh^T` out of a loop: a step computing `h @ W_hh.T` transposes
    `W_hh` at every step (4.6x slower forward at batch 1). `step_weights` transposes once.
    """

    w_hh: jax.Array  # W_hh^T: [proj or hidden, gates * hidden]
    b_hh: jax.Array | None  # [gates * hidden]
    w_hr: jax.Array | None  # W_hr^T: [hidden, proj], LSTM with proj_size > 0 only


class InputWeights(NamedTuple):
    """The input projection's weights as the time loop reads them: `W_ih^T` transposed once."""

    w_ih: jax.Array  # W_ih^T: [input, gates * hidden]
    b_ih: jax.Array | None  # [gates * hidden]


def input_weights(weights: Weights) -> InputWeights:
    """`weights`' input projection as the time loop reads it (see `InputWeights`)."""
    return InputWeights(weights.w_ih.T, weights.b_ih)


def step_weights(weights: Weights) -> StepWeights:
    """`weights` as the time loop reads them (see `StepWeights`)."""
    return StepWeights(weights.w_hh.T, weights.b_hh, None if weights.w_hr is None else weights.w_hr.T)


def input_projection(weights: Weights, x: jax.Array) -> jax.Array:
    """`x @ W_ih^T + b_ih`: `[..., input] -> [..., gates * hidden]`."""
    gx = x @ weights.w_ih.T
    return gx if weights.b_ih is None else gx + weights.b_ih


def hidden_projection(weights: StepWeights, h: jax.Array) -> jax.Array:
    """`h @ W_hh^T + b_hh`: `[batch, proj or hidden] -> [batch, gates * hidden]`."""
    gh = h @ weights.w_hh
    return gh if weights.b_hh is None else gh + weights.b_hh


# The element-wise part of each step, and its gradient by hand.
#
# `gates(h, state, gx, gh) -> (state', u, saved)`: `gx` and `gh` are the input and hidden
# projections of this step, as tuples of per-gate parts (`split_gates`), each `[batch, hidden]`;
# `state` is the LSTM's cell state (`()` for the others), `u` the new hidden state before the
# LSTM's projection, and `saved` the activations the gradient reads.
#
# `gradient(saved, h, state, d_state', du) -> (dh, d_state, dgx, dgh)`: the gradients of `h`,
# `state` and of the pre-activations (`[batch, gates * hidden]`, gates concatenated) from those
# of `state'` and `u`, as cuDNN and PyTorch write it: products and sums of the saved activations,
# no exp or tanh of its own. `dh` is only the direct part (the time loop adds `dgh @ W_hh`).
#
# Gates come as separate parts, not one `[batch, gates * hidden]` array, because of how XLA:CPU
# compiles the time loop: an element-wise fusion that slices gates out of a time step of a
# stacked `[time, batch, gates * hidden]` array runs 6x slower than one that reads per-gate
# arrays (`docs/performance.md`).


def split_gates(a: jax.Array, count: int) -> tuple:
    """`[..., count * hidden]` as `count` parts `[..., hidden]`, in gate order."""
    return tuple(jnp.split(a, count, axis=-1)) if count > 1 else (a,)


def _add(gx, gh):
    return tuple(a + b for a, b in zip(gx, gh, strict=True))


def rnn_tanh_gates(h, state, gx, gh):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""
    (u,) = _add(gx, gh)
    u = jnp.tanh(u)
    return state, u, u


def rnn_tanh_gradient(u, h, state, d_state, du):
    dz = du * (1 - u * u)
    return jnp.zeros_like(h), d_state, dz, dz


def rnn_relu_gates(h, state, gx, gh):
    """h' = relu(W_ih x + b_ih + W_hh h + b_hh)."""
    (u,) = _add(gx, gh)
    u = jax.nn.relu(u)
    return state, u, u


def rnn_relu_gradient(u, h, state, d_state, du):
    dz = jnp.where(u > 0, du, jnp.zeros_like(du))
    return jnp.zeros_like(h), d_state, dz, dz


def lstm_gates(h, c, gx, gh):
    """PyTorch's LSTM step; returns `(c', o ⊙ tanh(c'), (i, f, g, o))`.

    i = σ(W_ii x + b_ii + W_hi h + b_hi),  f = σ(W_if x + b_if + W_hf h + b_hf),
    g = tanh(W_ig x + b_ig + W_hg h + b_hg),  o = σ(W_io x + b_io + W_ho h + b_ho),
    c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c'),  and with `proj_size`: h' = W_hr h'.
    """
    i, f, g, o = _add(gx, gh)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    return c, o * jnp.tanh(c), (i, f, g, o)


def lstm_gradient(saved, h, c, dc, du):
    i, f, g, o = saved
    tanh_c = jnp.tanh(f * c + i * g)  # c' again, as the forward step computed it
    dc = dc + du * o * (1 - tanh_c * tanh_c)
    dz = jnp.concatenate(
        [dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - g * g), du * tanh_c * o * (1 - o)], axis=-1
    )  # [batch, 4 * hidden]
    return jnp.zeros_like(h), dc * f, dz, dz


def gru_gates(h, state, gx, gh):
    """PyTorch's GRU step (its documentation, not the reset-before-product variant).

    r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h.
    """
    (x_r, x_z, x_n), (h_r, h_z, h_n) = gx, gh
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return state, (1 - z) * n + z * h, (r, z, n, h_n)


def gru_gradient(saved, h, state, d_state, du):
    r, z, n, h_n = saved
    dn = du * (1 - z) * (1 - n * n)  # the gradient of n's pre-activation x_n + r * h_n
    dr = dn * h_n * r * (1 - r)
    dz = du * (h - n) * z * (1 - z)
    dgx = jnp.concatenate([dr, dz, dn], axis=-1)  # [batch, 3 * hidden]
    dgh = jnp.concatenate([dr, dz, dn * r], axis=-1)
    return du * z, d_state, dgx, dgh


class Gates(NamedTuple):
    """A cell's element-wise part and its gradient. With `tied`, `gx` and `gh` enter only as
    their sum, so `dgh` is `dgx` (the time loop then keeps one of them)."""

    count: int
    forward: Callable
    gradient: Callable
    tied: bool


GATES = {
    "RNN_TANH": Gates(1, rnn_tanh_gates, rnn_tanh_gradient, tied=True),
    "RNN_RELU": Gates(1, rnn_relu_gates, rnn_relu_gradient, tied=True),
    "LSTM": Gates(4, lstm_gates, lstm_gradient, tied=True),
    "GRU": Gates(3, gru_gates, gru_gradient, tied=False),
}


def split_carry(mode: str, carry):
    """A cell's carry (`h`, or `(h, c)` for the LSTM) as `(h, state)`, `state` `()` but for the LSTM."""
    return carry if mode == "LSTM" else (carry, ())


def join_carry(mode: str, h, state):
    """The inverse of `split_carry`."""
    return (h, state) if mode == "LSTM" else h


def cell_step(mode: str, weights: StepWeights, carry, gx: jax.Array):
    """One step of a cell: `(carry, gx) -> (carry', h')`, carry `h` or `(h, c)`."""
    h, state = split_carry(mode, carry)
    count = GATES[mode].count
    gx, gh = split_gates(gx, count), split_gates(hidden_projection(weights, h), count)
    state, u, _ = GATES[mode].forward(h, state, gx, gh)
    h = u if weights.w_hr is None else u @ weights.w_hr
    return join_carry(mode, h, state), h


def _step(mode):
    def step(weights: StepWeights, carry, gx):
        return cell_step(mode, weights, carry, gx)

    step.__name__ = step.__qualname__ = f"{mode.lower()}_step"
    equations = GATES[mode].forward.__name__
    step.__doc__ = f"One {mode} step, `(weights, carry, gx) -> (carry', h')`; equations in `{equations}`."
    return step


STEPS = {mode: _step(mode) for mode in GATES}
rnn_tanh_step, rnn_relu_step, lstm_step, gru_step = (STEPS[m] for m in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU"))


def _prepare_cell_input(cell_name: str, input_size: int, input):
    """`input` `[batch, input]` or `[input]` as a batched float array, and whether it was batched."""
    input = checks.as_float_array("input", input)
    if input.ndim not in (1, 2):
        raise ValueError(f"{cell_name}: Expected input to be 1D or 2D, got {input.ndim}D array instead")
    if input.shape[-1] != input_size:
        raise ValueError(
            f"input.size(-1) must be equal to input_size. Expected {input_size}, got {input.shape[-1]}"
        )
    batched = input.ndim == 2
    return (input if batched else input[None]), batched


def _prepare_cell_state(name: str, state, batch_size: int, size: int, batched: bool, dtype):
    """One initial state `[batch, size]` (or `[size]` unbatched), zeros when None."""
    if state is None:
        return jnp.zeros((batch_size, size), dtype)
    state = checks.as_float_array(name, state)
    checks.check_shape(name, state, (batch_size, size) if batched else (size,))
    return state if batched else state[None]


class _Cell(nn.Module):
    """The shared call of the three cells; subclasses declare PyTorch's fields."""

    mode = "RNN_TANH"

    def __post_init__(self):
        checks.check_recurrent_config(
            input_size=self.input_size, hidden_size=self.hidden_size,
            nonlinearity=getattr(self, "nonlinearity", "tanh"),
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, input, hx=None):
        checks.check_x64(self.param_dtype)
        name = type(self).__name__
        mode = self.mode if name != "RNNCell" else f"RNN_{self.nonlinearity.upper()}"
        weights = create_weights(
            self, "", mode, self.input_size, self.hidden_size, self.bias, 0, self.param_dtype
        )
        x, batched = _prepare_cell_input(name, self.input_size, input)
        batch, size = x.shape[0], self.hidden_size
        if mode == "LSTM":
            if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"hx must be a tuple (h_0, c_0) for LSTMCell, got {type(hx).__name__}")
            h, c = (None, None) if hx is None else hx
            h = _prepare_cell_state("hx[0]", h, batch, size, batched, x.dtype)
            c = _prepare_cell_state("hx[1]", c, batch, size, batched, x.dtype)
            carry = (h, c)
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"hx must be an array for {name}, got {type(hx).__name__}")
            carry = _prepare_cell_state("hx", hx, batch, size, batched, x.dtype)
        dtype = self.dtype or jnp.result_type(x, weights.w_ih)
        x = jnp.asarray(x, dtype)
        carry = jax.tree.map(lambda s: jnp.asarray(s, dtype), carry)
        weights = cast_weights(weights, dtype)
        carry, _ = cell_step(mode, step_weights(weights), carry, input_projection(weights, x))
        return jax.tree.map(lambda s: s if batched else s[0], carry)


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


class LSTMCell(_Cell):
    """The twin of `torch.nn.LSTMCell`, equations as in `lstm_step`.

    `cell.apply(variables, input, hx=None) -> (h', c')`, with `input: [batch, input_size]` or
    `[input_size]`, `hx = (h, c)`, each `[batch, hidden_size]` (or `[hidden_size]`), zeros when None.
    Parameters: `weight_ih [4 * hidden, input]`, `weight_hh [4 * hidden, hidden]`, `bias_ih`,
    `bias_hh`, gates in the order i, f, g, o. `dtype`/`param_dtype` as in `RNNCell`.
    """

    mode = "LSTM"

    input_size: int
    hidden_size: int
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32


class GRUCell(_Cell):
    """The twin of `torch.nn.GRUCell`, equations as in `gru_step`.

    `cell.apply(variables, input, hx=None) -> h'`, shapes as in `RNNCell`. Parameters:
    `weight_ih [3 * hidden, input]`, `weight_hh [3 * hidden, hidden]`, `bias_ih`, `bias_hh`,
    gates in the order r, z, n. `dtype`/`param_dtype` as in `RNNCell`.
    """

    mode = "GRU"

    input_size: int
    hidden_size: int
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
