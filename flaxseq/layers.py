"""Multi-layer, optionally bidirectional RNN, LSTM and GRU with PyTorch's semantics.

Why `jax.lax.scan` inside the layer rather than `nn.scan` over a cell module: `nn.scan` would
nest every weight under a scanned submodule's name, while PyTorch's state_dict is flat
(`weight_ih_l0`, `weight_hh_l1_reverse`, ...). Declaring the weights on the layer and scanning
a pure step function keeps the parameter tree a plain rename of the state_dict, and lets the
input projection of all time steps run as one matrix product before the loop.
"""

import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxseq import checks, cudnn
from flaxseq.cells import cast_weights, create_weights, join_carry, split_carry
from flaxseq.recurrence import scan_layer


class _Recurrent(nn.Module):
    """The shared body of `RNN`, `LSTM` and `GRU`; subclasses declare PyTorch's fields."""

    @property
    def mode(self) -> str:
        return type(self).__name__ if not hasattr(self, "nonlinearity") else f"RNN_{self.nonlinearity.upper()}"

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Size of `h` (the per-direction output): `proj_size` or `hidden_size`."""
        return getattr(self, "proj_size", 0) or self.hidden_size

    def __post_init__(self):
        checks.check_recurrent_config(
            input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
            dropout=self.dropout, nonlinearity=getattr(self, "nonlinearity", "tanh"),
            proj_size=getattr(self, "proj_size", 0),
        )
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={self.dropout} "
                f"and num_layers={self.num_layers}",
                stacklevel=2,
            )
        super().__post_init__()

    def _initial_states(self, hx, batch: int, batched: bool, dtype):
        """`hx` as a list of per-(layer, direction) carries `[batch, ...]`, zeros where None."""
        count = self.num_layers * self.num_directions
        name = type(self).__name__

        def one(arg_name, state, size):
            if state is None:
                return jnp.zeros((count, batch, size), dtype)
            state = checks.as_float_array(arg_name, state)
            if not batched and state.ndim != 2:
                raise ValueError(
                    f"For unbatched 2-D input, {arg_name} should also be 2-D but got {state.ndim}-D array"
                )
            if batched and state.ndim != 3:
                raise ValueError(
                    f"For batched 3-D input, {arg_name} should also be 3-D but got {state.ndim}-D array"
                )
            checks.check_shape(arg_name, state, (count, batch, size) if batched else (count, size))
            return state if batched else state[:, None]

        if self.mode == "LSTM":
            if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"hx must be a tuple (h_0, c_0) for LSTM, got {type(hx).__name__}")
            h0, c0 = (None, None) if hx is None else hx
            h0 = one("hx[0]", h0, self.output_size)
            c0 = one("hx[1]", c0, self.hidden_size)
            return [(h0[k], c0[k]) for k in range(count)]
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"hx must be an array for {name}, got {type(hx).__name__}")
        h0 = one("hx", hx, self.hidden_size)
        return [h0[k] for k in range(count)]

    @nn.compact
    def __call__(self, input, hx=None, *, lengths=None, deterministic: bool = True):
        checks.check_x64(self.param_dtype)
        name = type(self).__name__
        directions = self.num_directions
        weights = [
            create_weights(
                self, f"_l{layer}" + ("_reverse" if direction else ""), self.mode,
                self.input_size if layer == 0 else directions * self.output_size,
                self.hidden_size, self.bias, getattr(self, "proj_size", 0), self.param_dtype,
            )
            for layer in range(self.num_layers)
            for direction in range(directions)
        ]

        input = checks.as_float_array("input", input)
        if input.ndim not in (2, 3):
            raise ValueError(
                f"{name}: Expected input to be 2D (unbatched) or 3D (batched), got {input.ndim}D "
                f"array of shape {tuple(input.shape)} instead"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {input.shape[-1]}"
            )
        batched = input.ndim == 3
        if not batched:
            if lengths is not None:
                raise ValueError("lengths needs batched 3-D input, got unbatched 2-D input")
            x = input[:, None]  # [time, 1, features]
        else:
            x = jnp.swapaxes(input, 0, 1) if self.batch_first else input  # [time, batch, features]
        time_steps, batch = x.shape[:2]
        if lengths is not None:
            lengths = checks.check_lengths(lengths, batch, time_steps)

        dtype = self.dtype or jnp.result_type(x, weights[0].w_ih)
        carries = self._initial_states(hx, batch, batched, x.dtype)
        x = jnp.asarray(x, dtype)
        carries = jax.tree.map(lambda s: jnp.asarray(s, dtype), carries)

        finals = []
        if getattr(self, "use_cudnn", False):
            cudnn.check_call(dropout=self.dropout, deterministic=deterministic, dtype=dtype)
            h0 = jnp.stack([h for h, _ in carries])  # [layers * directions, batch, hidden]
            c0 = jnp.stack([c for _, c in carries])
            x, (h_n, c_n) = cudnn.lstm(
                [cast_weights(w, dtype) for w in weights], x, h0, c0, lengths, self.num_layers, self.bidirectional
            )
            finals = list(zip(h_n, c_n, strict=True))
        for layer in range(0 if finals else self.num_layers):
            cells = range(layer * directions, (layer + 1) * directions)  # forward, then reverse
            outputs, states = scan_layer(
                self.mode, [cast_weights(weights[k], dtype) for k in cells], x,
                [split_carry(self.mode, carries[k]) for k in cells], lengths, self.custom_gradient,
            )  # outputs: per direction [time, batch, output_size]
            finals += [join_carry(self.mode, h, state) for h, state in states]
            x = jnp.concatenate(outputs, axis=-1) if directions == 2 else outputs[0]
            if layer < self.num_layers - 1 and self.dropout > 0:
                x = nn.Dropout(rate=self.dropout)(x, deterministic=deterministic)

        # x: [time, batch, directions * output_size]
        if not batched:
            output = x[:, 0]
        elif self.batch_first:
            # materialized as its own array: a consumer fused with the transpose, such as a
            # mean over all outputs, hits a slow XLA:CPU reduction (`docs/performance.md`, 18)
            output = jax.lax.optimization_barrier(jnp.swapaxes(x, 0, 1))
        else:
            output = x

        def stack(states):  # [layers * directions, batch, size], or without batch when unbatched
            states = jnp.stack(states)
            return states if batched else states[:, 0]

        if self.mode == "LSTM":
            return output, (stack([h for h, _ in finals]), stack([c for _, c in finals]))
        return output, stack(finals)


_CALL_DOC = """
    Call: `module.apply(variables, input, hx=None, *, lengths=None, deterministic=True, rngs=...)`.

    - `input`: `[time, batch, input_size]`, or `[batch, time, input_size]` with `batch_first`;
      unbatched `[time, input_size]` (where `batch_first` is ignored, as in PyTorch).
    - `hx`: {hx_doc} Zeros when None. `num_directions` is 2 if `bidirectional` else 1.
    - `lengths`: optional `[batch]` integers in [1, time], in any order. The result equals
      PyTorch's `pack_padded_sequence(input, lengths, enforce_sorted=False)` then
      `pad_packed_sequence(..., total_length=time)`: outputs past each length are zero, the final
      states are taken at each sequence's last valid step, and the reverse direction starts at
      each sequence's own last element. Concrete lengths outside [1, time] raise `ValueError`;
      under `jax.jit` they are traced, cannot be checked, and are clipped to [0, time] (a length
      of 0 gives zero outputs and final states equal to `hx`).
    - `deterministic`: when False, dropout (probability `dropout`) is applied to the outputs of
      every layer but the last, drawing from the `'dropout'` rng stream.

    Returns `{returns}` with `output: [time, batch, num_directions * {out}]` (batch first with
    `batch_first`; no batch axis for unbatched input).

    `custom_gradient` (default True): the loop's gradient is written by hand, as cuDNN does it
    (`flaxseq.recurrence`), which is fast but reverse mode only (`jax.grad`, `jax.vjp`); with
    False JAX differentiates the loop itself, so forward mode (`jax.jvp`, `jax.jacfwd`,
    `jax.hessian`) works too, at a slower reverse mode. Same values either way.

    Differences from PyTorch: PyTorch's `dtype=` (the parameters' dtype) is `param_dtype` here,
    and `dtype` is Flax's computation dtype (None: promoted from input and parameters). `device=`
    has no meaning in JAX. A float64 `param_dtype` needs `jax.config.update('jax_enable_x64', True)`.
"""


class RNN(_Recurrent):
    """Elman RNN, the twin of `torch.nn.RNN`: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
    (relu with `nonlinearity='relu'`), stacked over `num_layers`.

    Parameters, per layer k and direction (suffix `_reverse` for the backward one):
    `weight_ih_l{k}: [hidden, input_size or num_directions * hidden]`, `weight_hh_l{k}:
    [hidden, hidden]`, `bias_ih_l{k}`, `bias_hh_l{k}: [hidden]`, from U(-1/sqrt(hidden), 1/sqrt(hidden)).
    """ + _CALL_DOC.format(
        hx_doc="`h_0: [num_layers * num_directions, batch, hidden_size]`.",
        returns="(output, h_n)", out="hidden_size",
    ) + """
    >>> rnn = RNN(10, 20, num_layers=2, batch_first=True)
    >>> variables = rnn.init(jax.random.key(0), jnp.zeros((32, 5, 10)))
    >>> output, h_n = rnn.apply(variables, jnp.ones((32, 5, 10)))  # [32, 5, 20], [2, 32, 20]
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    nonlinearity: str = "tanh"
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    custom_gradient: bool = True


class LSTM(_Recurrent):
    """Long short-term memory, the twin of `torch.nn.LSTM` (equations: `flaxseq.cells.lstm_gates`).

    Parameters, per layer k and direction: `weight_ih_l{k}: [4 * hidden, input]`,
    `weight_hh_l{k}: [4 * hidden, proj_size or hidden]`, `bias_ih_l{k}`, `bias_hh_l{k}:
    [4 * hidden]` (gates i, f, g, o), and with `proj_size > 0` `weight_hr_l{k}: [proj_size, hidden]`.

    `use_cudnn=True` runs the whole stack as one cuDNN call on an NVIDIA GPU
    (`flaxseq.cudnn`), with the same parameters: no `proj_size`, no dropout while training,
    float32; anything else raises `ValueError`.
    """ + _CALL_DOC.format(
        hx_doc="a tuple `(h_0, c_0)`, `h_0: [num_layers * num_directions, batch, proj_size or "
        "hidden_size]`, `c_0: [num_layers * num_directions, batch, hidden_size]`.",
        returns="(output, (h_n, c_n))", out="(proj_size or hidden_size)",
    ) + """
    >>> lstm = LSTM(10, 20, num_layers=2, batch_first=True)
    >>> variables = lstm.init(jax.random.key(0), jnp.zeros((32, 5, 10)))
    >>> output, (h_n, c_n) = lstm.apply(variables, jnp.ones((32, 5, 10)))
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    custom_gradient: bool = True
    use_cudnn: bool = False

    def __post_init__(self):
        if self.use_cudnn:
            cudnn.check_config(self.proj_size)
        super().__post_init__()


class GRU(_Recurrent):
    """Gated recurrent unit, the twin of `torch.nn.GRU` (equations: `flaxseq.cells.gru_gates`,
    which follow PyTorch's documentation: the reset gate multiplies `W_hn h + b_hn`).

    Parameters, per layer k and direction: `weight_ih_l{k}: [3 * hidden, input]`,
    `weight_hh_l{k}: [3 * hidden, hidden]`, `bias_ih_l{k}`, `bias_hh_l{k}: [3 * hidden]` (gates r, z, n).
    """ + _CALL_DOC.format(
        hx_doc="`h_0: [num_layers * num_directions, batch, hidden_size]`.",
        returns="(output, h_n)", out="hidden_size",
    ) + """
    >>> gru = GRU(10, 20, num_layers=2, batch_first=True)
    >>> variables = gru.init(jax.random.key(0), jnp.zeros((32, 5, 10)))
    >>> output, h_n = gru.apply(variables, jnp.ones((32, 5, 10)))
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    custom_gradient: bool = True
