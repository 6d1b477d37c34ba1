"""The recurrent stack and cell as pure functions over plain arrays: PyTorch's `RNNBase.forward`
and `RNNCellBase.forward`.

`run` takes a stack's configuration (`StackConfig`), its weights in PyTorch's layout and a
call's arguments, and does everything between them: argument checks, layout (`batch_first`,
unbatched input), initial states, the layers and their directions (`flaxseq.recurrence`),
variable lengths, dropout between layers (from explicit keys), and the cuDNN branch as an
explicit choice. It knows no framework: the linen layers (`flaxseq.layers`) and the NNX ones
(`flaxseq.nnx`) declare the parameters `parameter_shapes` names, and call `run`. A cell's
step is `cell_step`; the same cell over time (`flaxseq.CellScan`) is `scan_cell`, one layer
of one direction run by the same loop.
"""

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from flaxseq import checks, cudnn
from flaxseq.kinds import CellKind, check_step
from flaxseq.recurrence import scan_layer
from flaxseq.weights import (
    NAMES,
    Weights,
    cast,
    cell_shapes,
    input_weights,
    split_gates,
    stack_suffixes,
    step_weights,
)


class StackConfig(NamedTuple):
    """A stack's constructor arguments, PyTorch's names and meanings (`torch.nn.RNNBase`)."""

    kind: CellKind
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Size of `h` (the per-direction output): `proj_size` or `hidden_size`."""
        return self.proj_size or self.hidden_size


def _pair_description(hx) -> str:
    """What was given where a pair `(h_0, c_0)` was expected: `'a tuple of 1'`, `'Array'`."""
    if isinstance(hx, (tuple, list)):
        return f"a {type(hx).__name__} of {len(hx)}"
    return type(hx).__name__


def check_config(config: StackConfig, *, warn: bool = True) -> None:
    """The constructor checks of `torch.nn.RNNBase`, and (`warn`) its warning for dropout on
    one layer, at the user's line (`checks.user_stacklevel`)."""
    if not isinstance(config.kind, CellKind):
        raise TypeError(f"kind must be a flaxseq.CellKind, got {type(config.kind).__name__}")
    checks.check_recurrent_config(
        input_size=config.input_size, hidden_size=config.hidden_size, num_layers=config.num_layers,
        dropout=config.dropout, proj_size=config.proj_size,
    )
    if config.proj_size and not config.kind.cell_state:
        raise ValueError(
            f"proj_size argument is only supported for a kind with a cell state (LSTM), not {config.kind.name} "
            f"(got proj_size={config.proj_size})"
        )
    if warn and config.dropout > 0 and config.num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero "
            f"dropout expects num_layers greater than 1, but got dropout={config.dropout} "
            f"and num_layers={config.num_layers}",
            stacklevel=checks.user_stacklevel(),
        )


def parameter_shapes(config: StackConfig) -> dict[str, tuple[int, ...]]:
    """PyTorch's parameter names and shapes, in its order: `{'weight_ih_l0': (rows, input), ...}`."""
    shapes = {}
    for index, suffix in enumerate(stack_suffixes(config.num_layers, config.bidirectional)):
        layer = index // config.num_directions
        input_size = config.input_size if layer == 0 else config.num_directions * config.output_size
        cell = cell_shapes(config.kind.gates, input_size, config.hidden_size, config.bias, config.proj_size)
        shapes.update({name + suffix: shape for name, shape in zip(NAMES, cell, strict=True) if shape is not None})
    return shapes


def stack_weights(config: StackConfig, params: Mapping[str, jax.Array]) -> list[Weights]:
    """`params` by PyTorch's names -> one `Weights` per cell, layer by layer, forward then reverse.
    Each must have its shape in `parameter_shapes(config)`: else a `ValueError` naming it (a
    weight loaded by hand in the wrong layout is caught here, not inside a product)."""
    wrong = [
        f"{name}: expected shape {shape}, got {tuple(jnp.shape(params[name]))}"
        for name, shape in parameter_shapes(config).items()
        if name in params and tuple(jnp.shape(params[name])) != shape
    ]
    if wrong:
        raise ValueError(f"{config.kind.name} parameters of the wrong shape: " + "; ".join(wrong))
    return [
        Weights(*(params.get(name + suffix) for name in NAMES))
        for suffix in stack_suffixes(config.num_layers, config.bidirectional)
    ]


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Zero each element with probability `rate` and scale the rest by `1 / (1 - rate)`
    (`flax.linen.Dropout`'s draws for the same key)."""
    if rate == 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jax.lax.select(keep, x / (1.0 - rate), jnp.zeros_like(x))


def run(
    config: StackConfig, weights: Sequence[Weights], input, hx=None, *, lengths=None,
    dropout_keys: Sequence[jax.Array] | None = None, dtype: Any = None, custom_gradient: bool = True,
    use_cudnn: bool = False, name: str | None = None,
):
    """PyTorch's recurrent forward: `(output, h_n)`, or `(output, (h_n, c_n))` with a cell state.

    Args:
      config: the stack.
      weights: per cell (`stack_weights`), PyTorch's layout, in the parameter dtype.
      input: `[time, batch, input_size]`, `[batch, time, input_size]` with `batch_first`, or
        unbatched `[time, input_size]` (where `batch_first` is ignored, as in PyTorch).
      hx: `h_0 [num_layers * num_directions, batch, output_size]`, or `(h_0, c_0)` with
        `c_0 [..., hidden_size]` when the kind has a cell state; zeros when None. Unbatched:
        no batch axis.
      lengths: `[batch]` integers in [1, time]: PyTorch's packed-sequence results (the layers'
        docstrings); None: every sequence fills the time axis.
      dropout_keys: one PRNG key per layer but the last, to apply dropout between layers
        (probability `config.dropout`); None: no dropout (evaluation).
      dtype: the computation dtype; None: promoted from the input and the weights.
      custom_gradient: the loop's hand-written gradient (reverse mode only; `flaxseq.RNNBase`
        says what forward mode raises), or JAX's.
      use_cudnn: the whole stack as one cuDNN call (`flaxseq.cudnn`; LSTM kind only).
      name: the layer's name in messages (default: the kind's).

    Returns:
      `output [time, batch, num_directions * output_size]` (batch first with `batch_first`, no
      batch axis unbatched) and the final states `[num_layers * num_directions, batch, size]`.
    """
    kind, directions = config.kind, config.num_directions
    name = name or kind.name
    x, batched = _layout(config, input, name)  # [time, batch, features]
    time_steps, batch = x.shape[:2]
    if lengths is not None:
        if not batched:
            raise ValueError("lengths needs batched 3-D input, got unbatched 2-D input")
        lengths = checks.check_lengths(lengths, batch, time_steps)
    dtype = dtype or jnp.result_type(x, weights[0].w_ih)
    carries = initial_states(config, hx, batch, batched, x.dtype, name)
    x = jnp.asarray(x, dtype)
    carries = jax.tree.map(lambda s: jnp.asarray(s, dtype), carries)
    weights = [cast(w, dtype) for w in weights]
    training = dropout_keys is not None and config.dropout > 0

    finals = []
    batch_major = batched and config.batch_first  # the last layer's outputs come out batch first
    if use_cudnn:
        cudnn.check_call(dropout=config.dropout, deterministic=not training, dtype=dtype)
        h0 = jnp.stack([h for h, _ in carries])  # [layers * directions, batch, hidden]
        c0 = jnp.stack([c for _, c in carries])
        x, (h_n, c_n) = cudnn.lstm(weights, x, h0, c0, lengths, config.num_layers, config.bidirectional)
        finals = list(zip(h_n, c_n, strict=True))
        x = jnp.swapaxes(x, 0, 1) if batch_major else x
    for layer in range(0 if use_cudnn else config.num_layers):
        cells = range(layer * directions, (layer + 1) * directions)  # forward, then reverse
        last = layer == config.num_layers - 1
        outputs, states = scan_layer(
            kind, [weights[k] for k in cells], x, [carries[k] for k in cells], lengths, custom_gradient,
            batch_major=batch_major and last,
        )  # outputs: per direction [time, batch, output_size], the last layer's batch first with batch_major
        finals += states
        x = jnp.concatenate(outputs, axis=-1) if directions == 2 else outputs[0]
        if layer < config.num_layers - 1 and training:
            x = dropout(x, config.dropout, dropout_keys[layer])

    # x: [time, batch, directions * output_size], [batch, time, ...] with batch_major: the loop
    # writes it so, for a transposed array reduced by XLA:CPU is slow (`docs/performance.md`,
    # findings 18 and 40)
    output = x if batched else x[:, 0]

    def stack(states):  # [layers * directions, batch, size], or without batch when unbatched
        states = jnp.stack(states)
        return states if batched else states[:, 0]

    if kind.cell_state:
        return output, tuple(stack(list(parts)) for parts in zip(*finals, strict=True))
    return output, stack(finals)


def _layout(config: StackConfig, input, name: str) -> tuple[jax.Array, bool]:
    """`input` checked and as `[time, batch, features]`, and whether it had a batch axis."""
    input = checks.as_float_array("input", input)
    if input.ndim not in (2, 3):
        raise ValueError(
            f"{name}: Expected input to be 2D (unbatched) or 3D (batched), got {input.ndim}D "
            f"array of shape {tuple(input.shape)} instead"
        )
    if input.shape[-1] != config.input_size:
        raise ValueError(
            f"{name}: input.size(-1) must be equal to input_size. Expected {config.input_size}, "
            f"got {input.shape[-1]}"
        )
    if input.ndim == 2:
        return input[:, None], False  # [time, 1, features]
    return (jnp.swapaxes(input, 0, 1) if config.batch_first else input), True


def initial_states(config: StackConfig, hx, batch: int, batched: bool, dtype, name: str) -> list:
    """`hx` as a list of per-(layer, direction) carries `[batch, ...]`, zeros where None."""
    count = config.num_layers * config.num_directions

    def one(arg_name, state, size):
        if state is None:
            return jnp.zeros((count, batch, size), dtype)
        state = checks.as_float_array(arg_name, state)
        if not batched and state.ndim != 2:
            raise ValueError(f"For unbatched 2-D input, {arg_name} should also be 2-D but got {state.ndim}-D array")
        if batched and state.ndim != 3:
            raise ValueError(f"For batched 3-D input, {arg_name} should also be 3-D but got {state.ndim}-D array")
        checks.check_shape(arg_name, state, (count, batch, size) if batched else (count, size))
        return state if batched else state[:, None]

    if config.kind.cell_state:
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"hx must be a tuple (h_0, c_0) for {name}, got {_pair_description(hx)}")
        h0, c0 = (None, None) if hx is None else hx
        h0 = one("hx[0]", h0, config.output_size)
        c0 = one("hx[1]", c0, config.hidden_size)
        return [(h0[k], c0[k]) for k in range(count)]
    if isinstance(hx, (tuple, list)):
        raise TypeError(f"hx must be an array for {name}, got {type(hx).__name__}")
    h0 = one("hx", hx, config.hidden_size)
    return [h0[k] for k in range(count)]


def cell_step(kind: CellKind, weights: Weights, input, hx=None, *, input_size: int, dtype: Any = None,
              name: str | None = None):
    """PyTorch's cell forward: one step of `kind` from `hx`, `h'` or `(h', c')`.

    `input: [batch, input_size]` or unbatched `[input_size]`; `hx` as `h` (or `(h, c)`) of
    `[batch, hidden]` each (unbatched `[hidden]`), zeros when None.
    """
    name = name or kind.name
    input = checks.as_float_array("input", input)
    if input.ndim not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D array instead")
    if input.shape[-1] != input_size:
        raise ValueError(
            f"{name}: input.size(-1) must be equal to input_size. Expected {input_size}, got {input.shape[-1]}"
        )
    batched = input.ndim == 2
    x = input if batched else input[None]
    carry = cell_carry(kind, hx, x.shape[0], weights.w_hh.shape[0] // kind.gates, batched, x.dtype, name)
    dtype = dtype or jnp.result_type(x, weights.w_ih)
    x = jnp.asarray(x, dtype)
    carry = jax.tree.map(lambda s: jnp.asarray(s, dtype), carry)
    weights = cast(weights, dtype)
    projection, step = input_weights(weights), step_weights(weights)
    gx = x @ projection.w_ih
    if projection.b_ih is not None:
        gx = gx + projection.b_ih
    gh = kind.hidden(carry) @ step.w_hh
    if step.b_hh is not None:
        gh = gh + step.b_hh
    gx, gh = split_gates(gx, kind.gates), split_gates(gh, kind.gates)
    check_step(kind, gx, gh, carry, carry)
    carry = kind.step(gx, gh, carry)
    return jax.tree.map(lambda s: s if batched else s[0], carry)


def scan_cell(kind: CellKind, weights: Weights, input, hx=None, *, input_size: int, dtype: Any = None,
              name: str | None = None, custom_gradient: bool = True):
    """A cell over the leading time axis of `input`: `(outputs, final)`, what `cell_step` gives
    step after step, computed as a one-layer, one-direction stack (`flaxseq.recurrence`).

    `input: [time, batch, input_size]` or unbatched `[time, input_size]`; `hx` as in
    `cell_step`, `[batch, hidden]` (or `[hidden]`), zeros when None. Returns `outputs: [time,
    batch, hidden]` (each step's `h'`; `[time, hidden]` unbatched) and `final`, the last step's
    carry in the cell's form (`h'` or `(h', c')`), `hx` itself when `time` is 0.
    """
    name = name or kind.name
    hidden = weights.w_hh.shape[0] // kind.gates
    x, batched = _layout(StackConfig(kind, input_size, hidden), input, name)  # [time, batch, features]
    carry = cell_carry(kind, hx, x.shape[1], hidden, batched, x.dtype, name)
    dtype = dtype or jnp.result_type(x, weights.w_ih)
    x = jnp.asarray(x, dtype)
    carry = jax.tree.map(lambda s: jnp.asarray(s, dtype), carry)
    (outputs,), (final,) = scan_layer(kind, [cast(weights, dtype)], x, [carry], None, custom_gradient)
    if batched:
        return outputs, final
    return outputs[:, 0], jax.tree.map(lambda s: s[0], final)


def cell_carry(kind: CellKind, hx, batch: int, size: int, batched: bool, dtype, name: str):
    """A cell's `hx` checked and as its carry, `h` or `(h, c)` of `[batch, size]` each, zeros
    where None; `batched=False` expects `[size]` each."""

    def state(arg_name, value):
        if value is None:
            return jnp.zeros((batch, size), dtype)
        value = checks.as_float_array(arg_name, value)
        checks.check_shape(arg_name, value, (batch, size) if batched else (size,))
        return value if batched else value[None]

    if kind.cell_state:
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"hx must be a tuple (h_0, c_0) for {name}, got {_pair_description(hx)}")
        h, c = (None, None) if hx is None else hx
        return state("hx[0]", h), state("hx[1]", c)
    if isinstance(hx, (tuple, list)):
        raise TypeError(f"hx must be an array for {name}, got {type(hx).__name__}")
    return state("hx", hx)
