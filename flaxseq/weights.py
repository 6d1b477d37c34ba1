"""A recurrent cell's weights in PyTorch's layout, as plain arrays, and their names.

One cell (one layer and direction of a stack) holds `weight_ih [gates * hidden, input]`,
`weight_hh [gates * hidden, proj or hidden]`, `bias_ih`, `bias_hh [gates * hidden]` and, for an
LSTM with `proj_size > 0`, `weight_hr [proj, hidden]`; a stack suffixes each name with the
layer and direction, `_l{k}` and `_l{k}_reverse`, as PyTorch's state_dict does. The front ends
declare parameters from `cell_shapes` and `stack_suffixes`, so their trees are a rename of the
state_dict with no arithmetic on weights.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Weights(NamedTuple):
    """One cell's parameters, in PyTorch's layout (absent ones None)."""

    w_ih: jax.Array  # [gates * hidden, input]
    w_hh: jax.Array  # [gates * hidden, proj or hidden]
    b_ih: jax.Array | None  # [gates * hidden]
    b_hh: jax.Array | None  # [gates * hidden]
    w_hr: jax.Array | None  # [proj, hidden], with proj_size > 0 only


# Weights field -> PyTorch's parameter name, without the layer suffix
NAMES = Weights("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def cell_shapes(gates: int, input_size: int, hidden_size: int, bias: bool, proj_size: int = 0) -> Weights:
    """The shape of each of one cell's parameters, None for those it does not have."""
    rows = gates * hidden_size
    return Weights(
        w_ih=(rows, input_size),
        w_hh=(rows, proj_size or hidden_size),
        b_ih=(rows,) if bias else None,
        b_hh=(rows,) if bias else None,
        w_hr=(proj_size, hidden_size) if proj_size else None,
    )


def stack_suffixes(num_layers: int, bidirectional: bool) -> list[str]:
    """PyTorch's name suffix of each cell of a stack, layer by layer, forward then reverse."""
    directions = ("", "_reverse") if bidirectional else ("",)
    return [f"_l{layer}{direction}" for layer in range(num_layers) for direction in directions]


def declare(param, shapes: Weights, suffix: str = "") -> Weights:
    """`Weights` of `param(name, shape)` for every parameter `shapes` has, in PyTorch's order."""
    return Weights(*(None if s is None else param(n + suffix, s) for n, s in zip(NAMES, shapes, strict=True)))


def cast(weights: Weights, dtype: Any) -> Weights:
    """The weights in the computation dtype (absent ones stay None)."""
    return Weights(*(None if w is None else jnp.asarray(w, dtype) for w in weights))


def split_gates(a: jax.Array, count: int) -> tuple:
    """`[..., count * hidden]` as `count` parts `[..., hidden]`, in gate order."""
    return tuple(jnp.split(a, count, axis=-1)) if count > 1 else (a,)


class StepWeights(NamedTuple):
    """The weights the time loop reads at every step, matrices transposed once, before the loop
    (XLA:CPU does not hoist a transpose out of a loop)."""

    w_hh: jax.Array  # W_hh^T: [proj or hidden, gates * hidden]
    b_hh: jax.Array | None  # [gates * hidden]
    w_hr: jax.Array | None  # W_hr^T: [hidden, proj]


class InputWeights(NamedTuple):
    """The input projection's weights as the time loop reads them: `W_ih^T` transposed once."""

    w_ih: jax.Array  # W_ih^T: [input, gates * hidden]
    b_ih: jax.Array | None  # [gates * hidden]


def input_weights(weights: Weights) -> InputWeights:
    """`weights`' input projection as the time loop reads it."""
    return InputWeights(weights.w_ih.T, weights.b_ih)


def step_weights(weights: Weights) -> StepWeights:
    """`weights` as the time loop reads them at every step."""
    return StepWeights(weights.w_hh.T, weights.b_hh, None if weights.w_hr is None else weights.w_hr.T)
