"""Cell kinds: what one step of a recurrent cell computes, as data (`CellKind`).

A cell kind is the only thing the recurrent core (`flaxseq.stack`, `flaxseq.recurrence`) and
the front ends (`flaxseq.RNNBase`, `flaxseq.nnx.RNNBase`, the cells) need to know about a
cell. The core computes the two projections of every step, in PyTorch's layout,

    gx = W_ih x_t + b_ih,   gh = W_hh h_{t-1} + b_hh      (each [batch, gates * hidden])

splits each into `gates` blocks `[batch, hidden]` in the order of the weight rows, and calls
`kind.step(gx, gh, carry) -> carry'`. The carry is `h`, or `(h, c)` with `cell_state=True`;
the step's output is the new `h`. Stacking, directions, lengths, initial states, dropout
between layers, layout and the time loop are the core's, the same for every kind.

The gradient: with `gradient=None`, the core differentiates `step` with JAX inside its own
hand-written backward loop (`flaxseq.recurrence`), so the weight gradients stay one large
product each and a new cell needs no calculus. A `StepGradient` replaces that with a rule by
hand, which can save activations in the forward loop and so recompute nothing in the backward
one (as the kinds below do, after cuDNN).

What a step (and a `StepGradient`'s halves) may read: its arguments, and constants (plain
arrays and numbers). A kind is static data to the front ends, not state, so:

- A kind's learnable parameters are the cell's parameters, `weight_ih`, `weight_hh`, `bias_ih`,
  `bias_hh` (they reach the step as `gx` and `gh`); the contract has no others. An NNX variable
  (`nnx.Param`, any `nnx.Variable`) that a step reads, held by the kind or captured, would get
  no gradient from `nnx.grad` and keep its first value under `nnx.jit`: the NNX layers and
  cells refuse such a kind at construction (`flaxseq.nnx.recurrent.check_kind_state`), naming it.
- A value the step captures that JAX is differentiating (an array of an outer `jax.grad`) has
  no rule in the loop's hand-written gradient (`custom_gradient=True`), which differentiates
  through the step's arguments only: refused when differentiated, naming the kind. Bring such a
  value in through the cell's parameters, or build the layer with `custom_gradient=False`,
  where JAX differentiates the loop and the captured value with it. A captured value that is
  traced but not differentiated (an argument of `jax.jit`) is a constant, and allowed.

The built-in kinds, PyTorch's equations:

| kind | gates (rows of `weight_ih` and `weight_hh`, in order) | carry |
| --- | --- | --- |
| `RNN_TANH`, `RNN_RELU` | one block | `h` |
| `LSTM` | i, f, g, o | `(h, c)` |
| `GRU` | r, z, n | `h` |

A kind of your own, a minimal gated unit (two gates, f and n):

>>> def mgu_step(gx, gh, h):
...     f = jax.nn.sigmoid(gx[0] + gh[0])
...     n = jnp.tanh(gx[1] + f * gh[1])
...     return (1 - f) * n + f * h
>>> MGU = CellKind("MGU", 2, mgu_step)
>>> layer = flaxseq.RNNBase(MGU, 10, 20, num_layers=2, bidirectional=True)
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class StepGradient(NamedTuple):
    """A hand-written gradient of a cell kind's step, in two halves as `jax.custom_vjp` has them.

    - `forward(gx, gh, carry) -> (carry', residuals)`: the step, and what its gradient reads
      (any pytree of arrays `[batch, ...]`); `carry'` must equal `step(gx, gh, carry)`.
    - `backward(residuals, carry, d_carry') -> (dgx, dgh, d_carry)` (`d_carry'` of the form of
      `carry'`): from the gradient of the
      new carry, those of the step's inputs: `dgx` and `dgh` tuples of `gates` arrays
      `[batch, hidden]`, the gradients of the blocks of `gx` and `gh`, and `d_carry` that of
      `carry` through the step's direct use of it (the core adds the part through `gh`).
      `dgh=None` says it equals `dgx`, as when `gx` and `gh` enter only through their sum; the
      core then keeps one of them.

    Both halves are checked at trace time, on shapes only (`check_gradient`): what they return
    of the wrong form raises `TypeError` naming the kind and the item, before the loops run.
    """

    forward: Callable
    backward: Callable


@dataclasses.dataclass(frozen=True)
class CellKind:
    """One kind of recurrent cell: its name, gate count, carry and step (module docstring).

    Attributes:
      name: for messages.
      gates: the number of gate blocks: `weight_ih` is `[gates * hidden, input]`, `weight_hh`
        `[gates * hidden, hidden]`, the biases `[gates * hidden]`.
      step: `(gx, gh, carry) -> carry'`; `gx`, `gh` tuples of `gates` arrays `[batch, hidden]`,
        `carry` `h [batch, hidden]` or, with `cell_state`, `(h, c)`, `c [batch, hidden]`. With
        an LSTM-style projection (`proj_size`), the `h` the step receives is the projected one
        (`[batch, proj_size]`) and the `h` it returns is projected by the core.
      cell_state: whether the carry is `(h, c)`.
      gradient: a `StepGradient`, or None to let JAX differentiate `step`.
    """

    name: str
    gates: int
    step: Callable
    cell_state: bool = dataclasses.field(default=False, kw_only=True)
    gradient: StepGradient | None = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"CellKind name must be a non-empty str, got {self.name!r}")
        if isinstance(self.gates, bool) or not isinstance(self.gates, int) or self.gates < 1:
            raise ValueError(f"CellKind {self.name!r}: gates must be an int of at least 1, got {self.gates!r}")
        if not callable(self.step):
            raise TypeError(f"CellKind {self.name!r}: step must be callable, got {type(self.step).__name__}")
        if self.gradient is not None and not isinstance(self.gradient, StepGradient):
            raise TypeError(
                f"CellKind {self.name!r}: gradient must be a flaxseq.StepGradient or None, "
                f"got {type(self.gradient).__name__}"
            )

    def hidden(self, carry) -> jax.Array:
        """The `h` of a carry."""
        return carry[0] if self.cell_state else carry

    def with_hidden(self, carry, h: jax.Array):
        """`carry` with its `h` replaced by `h`."""
        return (h, *carry[1:]) if self.cell_state else h

    def differentiable(self) -> StepGradient:
        """The step's gradient: the hand-written one, or JAX's differentiation of `step`."""
        return self.gradient or autodiff_gradient(self.step)


def autodiff_gradient(step: Callable) -> StepGradient:
    """`step`'s gradient by JAX: the forward half saves the step's inputs, the backward half
    differentiates `step` at them (one step's worth of recomputation)."""

    def forward(gx, gh, carry):
        return step(gx, gh, carry), (gx, gh)

    def backward(residuals, carry, d_carry):
        gx, gh = residuals
        _, vjp = jax.vjp(step, gx, gh, carry)
        return vjp(d_carry)

    return StepGradient(forward, backward)


def _sum(gx, gh):
    return tuple(a + b for a, b in zip(gx, gh, strict=True))


def _kind(name: str, gates: int, forward: Callable, backward: Callable, **kwargs) -> CellKind:
    """A built-in kind: `step` is `forward` without its residuals, so both compute the same."""

    def step(gx, gh, carry):
        return forward(gx, gh, carry)[0]

    step.__name__ = step.__qualname__ = f"{name.lower()}_step"
    step.__doc__ = forward.__doc__
    return CellKind(name, gates, step, gradient=StepGradient(forward, backward), **kwargs)


def _rnn_tanh_forward(gx, gh, h):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""
    (u,) = _sum(gx, gh)
    u = jnp.tanh(u)
    return u, u


def _rnn_tanh_backward(u, h, du):
    dz = du * (1 - u * u)
    return (dz,), None, jnp.zeros_like(h)


def _rnn_relu_forward(gx, gh, h):
    """h' = relu(W_ih x + b_ih + W_hh h + b_hh)."""
    (u,) = _sum(gx, gh)
    u = jax.nn.relu(u)
    return u, u


def _rnn_relu_backward(u, h, du):
    dz = jnp.where(u > 0, du, jnp.zeros_like(du))
    return (dz,), None, jnp.zeros_like(h)


def _lstm_forward(gx, gh, carry):
    """PyTorch's LSTM step, gates i, f, g, o:

    i = σ(W_ii x + b_ii + W_hi h + b_hi),  f = σ(W_if x + b_if + W_hf h + b_hf),
    g = tanh(W_ig x + b_ig + W_hg h + b_hg),  o = σ(W_io x + b_io + W_ho h + b_ho),
    c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')  (and with `proj_size`, h' = W_hr h', by the core).
    """
    _, c = carry
    i, f, g, o = _sum(gx, gh)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    return (o * jnp.tanh(c), c), (i, f, g, o)


def _lstm_backward(saved, carry, d_carry):
    i, f, g, o = saved
    h, c = carry
    du, dc = d_carry
    tanh_c = jnp.tanh(f * c + i * g)  # c' again, as the forward step computed it
    dc = dc + du * o * (1 - tanh_c * tanh_c)
    dz = (dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - g * g), du * tanh_c * o * (1 - o))
    return dz, None, (jnp.zeros_like(h), dc * f)


def _gru_forward(gx, gh, h):
    """PyTorch's GRU step, gates r, z, n (its documentation: the reset gate multiplies
    `W_hn h + b_hn`, not `h` before the product):

    r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h.
    """
    (x_r, x_z, x_n), (h_r, h_z, h_n) = gx, gh
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h, (r, z, n, h_n)


def _gru_backward(saved, h, du):
    r, z, n, h_n = saved
    dn = du * (1 - z) * (1 - n * n)  # the gradient of n's pre-activation x_n + r * h_n
    dr = dn * h_n * r * (1 - r)
    dz = du * (h - n) * z * (1 - z)
    return (dr, dz, dn), (dr, dz, dn * r), du * z


RNN_TANH = _kind("RNN_TANH", 1, _rnn_tanh_forward, _rnn_tanh_backward)
RNN_RELU = _kind("RNN_RELU", 1, _rnn_relu_forward, _rnn_relu_backward)
LSTM = _kind("LSTM", 4, _lstm_forward, _lstm_backward, cell_state=True)
GRU = _kind("GRU", 3, _gru_forward, _gru_backward)

NONLINEARITIES = {"tanh": RNN_TANH, "relu": RNN_RELU}


def rnn(nonlinearity: str) -> CellKind:
    """The Elman RNN's kind for `nonlinearity` (`'tanh'` or `'relu'`)."""
    return NONLINEARITIES[nonlinearity]


def check_step(kind: CellKind, gx: tuple, gh: tuple, carry: Any, expected: Any) -> None:
    """At trace time: `kind.step(gx, gh, carry)` must return a carry of `expected`'s structure,
    shapes and dtypes (`expected` is `carry` but for the unprojected `h` with `proj_size`). All
    may be arrays or `jax.ShapeDtypeStruct`s. Raises `TypeError` naming the kind, what was
    expected and what was given."""
    expected = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), expected)
    try:
        given = jax.eval_shape(kind.step, gx, gh, carry)
    except Exception as error:  # the user's step failing on well-formed inputs
        raise TypeError(
            f"cell kind {kind.name!r}: step(gx, gh, carry) failed on gx, gh = {kind.gates} arrays "
            f"{tuple(gx[0].shape)} each and carry {_describe(carry)}: {error}"
        ) from error
    if jax.tree.structure(given) != jax.tree.structure(expected) or any(
        (g.shape, g.dtype) != (e.shape, e.dtype)
        for g, e in zip(jax.tree.leaves(given), jax.tree.leaves(expected), strict=True)
    ):
        raise TypeError(
            f"cell kind {kind.name!r}: step must return the carry {_describe(expected)}, "
            f"got {_describe(given)}"
        )


def check_gradient(kind: CellKind, gx: tuple, gh: tuple, carry: Any, expected: Any) -> None:
    """At trace time: `kind.gradient`'s halves must return what the backward loop reads (as
    `check_step`, whose arguments these are): `forward` a pair `(carry', residuals)`, `carry'` of
    `expected`'s form; `backward(residuals, carry, d_carry')`, `d_carry'` of `expected`'s form, a
    triple `(dgx, dgh, d_carry)`: `dgx` `gates` arrays of `gx[0]`'s shape and dtype, `dgh` the
    same or None, `d_carry` of `carry`'s form. Raises `TypeError` naming the kind, the item,
    what was expected and what was given."""

    def spec(tree):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)

    def same(given, want) -> bool:
        return jax.tree.structure(given) == jax.tree.structure(want) and all(
            (g.shape, g.dtype) == (w.shape, w.dtype)
            for g, w in zip(jax.tree.leaves(given), jax.tree.leaves(want), strict=True)
        )

    def call(half: str, fn, *args):
        try:
            return jax.eval_shape(fn, *args)
        except Exception as error:  # the user's half failing on well-formed inputs
            raise TypeError(
                f"cell kind {kind.name!r}: gradient.{half} failed on well-formed inputs "
                f"({', '.join(map(_describe, args))}): {error}"
            ) from error

    def wrong(half: str, item: str, want: str, got: str) -> TypeError:
        return TypeError(f"cell kind {kind.name!r}: gradient.{half} must return {item} {want}, got {got}")

    carry, expected, block = spec(carry), spec(expected), spec(gx[0])
    out = call("forward", kind.gradient.forward, gx, gh, carry)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise wrong("forward", "a pair", "(carry', residuals)", _describe(out))
    if not same(out[0], expected):
        raise wrong("forward", "the carry'", _describe(expected), _describe(out[0]))
    out = call("backward", kind.gradient.backward, out[1], carry, expected)
    if not (isinstance(out, tuple) and len(out) == 3):
        raise wrong("backward", "a triple", "(dgx, dgh, d_carry)", _describe(out))
    dgx, dgh, d_carry = out
    for item, given in (("dgx", dgx), ("dgh", dgh)):
        if item == "dgh" and given is None:
            continue
        if not isinstance(given, (tuple, list)) or len(given) != kind.gates:
            raise wrong("backward", item, f"a tuple of {kind.gates} arrays {_describe(block)}", _describe(given))
        for k, g in enumerate(given):
            if not same(g, block):
                raise wrong("backward", f"{item}[{k}]", _describe(block), _describe(g))
    if not same(d_carry, carry):
        raise wrong("backward", "d_carry", _describe(carry), _describe(d_carry))


def _describe(tree) -> str:
    """`float32[3, 5]`, or a tuple of those, for messages."""

    def one(a):
        return f"{jnp.dtype(a.dtype).name}{list(a.shape)}" if hasattr(a, "shape") else type(a).__name__

    if isinstance(tree, (tuple, list)):
        return "(" + ", ".join(_describe(t) for t in tree) + ")"
    return one(tree)
