"""A hand-written Elman RNN: a cell over `cat(x, h)` with one `Linear`, and the loop over time.

The cell is a Flax module with a `Linear` submodule (`i2h`), as in PyTorch, so the parameter
tree reads `rnn_cell/i2h/kernel`; the loop is Flax's lifted `nn.scan` over that cell with its
parameters broadcast to every step (what `flax.linen.RNN` does), rather than a Python loop.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxseq import checks
from flaxseq.basic import Linear


class ManualRNNCell(nn.Module):
    """One step `h = tanh(i2h(cat(x, h_prev)))`, the twin of `torch_ref.ManualRNNCell`.

    Args:
      input_size: features of `x`.
      hidden_size: features of `h`.
      dtype: computation dtype (None: promoted from inputs and parameters).
      param_dtype: dtype of the parameters.

    Parameters: `i2h`, a `Linear(hidden_size)` over `input_size + hidden_size` features
    (`kernel: [input_size + hidden_size, hidden_size]`, `bias: [hidden_size]`).

    Call: `cell.apply(variables, x, h_prev) -> h` with `x: [batch, input_size]`,
    `h_prev` and `h: [batch, hidden_size]`.

    >>> cell = ManualRNNCell(10, 20)
    >>> variables = cell.init(jax.random.key(0), jnp.zeros((32, 10)), jnp.zeros((32, 20)))
    """

    input_size: int
    hidden_size: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        checks.check_int("input_size", self.input_size, 1)
        checks.check_int("hidden_size", self.hidden_size, 1)
        super().__post_init__()

    @property
    def num_feature_axes(self) -> int:
        """Read by `flax.linen.RNN`, which calls a cell as `(carry, x) -> (carry, y)`; this
        cell's call is `(x, h_prev) -> h`, so it is refused here, naming the model that loops it."""
        raise checks.flax_rnn_refusal(
            self, "flax.linen.RNN", "flaxseq.ManualRNN", call="cell(x, h_prev) -> h",
            how="(input_size, hidden_size, output_size): outputs, h = model(x), x: [batch, time, features]",
        )

    @nn.compact
    def __call__(self, x, h_prev) -> jax.Array:
        x = checks.as_float_array("x", x)
        h_prev = checks.as_float_array("h_prev", h_prev)
        if x.ndim != 2:
            raise ValueError(f"x must have shape [batch, input_size], got a {x.ndim}-D array of shape {x.shape}")
        checks.check_shape("x", x, (x.shape[0], self.input_size))
        checks.check_shape("h_prev", h_prev, (x.shape[0], self.hidden_size))
        combined = jnp.concatenate((x, h_prev), axis=1)  # [batch, input_size + hidden_size]
        i2h = Linear(self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name="i2h")
        return jnp.tanh(i2h(combined))


def _step(cell: ManualRNNCell, h, x_t):
    """The scanned step `(carry, x_t) -> (carry, y_t)`: the cell's new state is both."""
    h = cell(x_t, h)
    return h, h


class ManualRNN(nn.Module):
    """The cell run over time from a zero state, the twin of `torch_ref.ManualRNN`.

    Args:
      input_size, hidden_size: as in `ManualRNNCell`.
      output_size: features of `fc`, a `Linear(output_size)` on `h`. As in the PyTorch model,
        `fc` has parameters but the forward pass does not use it (their gradient is zero).
      dtype, param_dtype: as in `ManualRNNCell`.

    Call: `model.apply(variables, x, *, deterministic=True) -> (outputs, h)` with
    `x: [batch, time, input_size]`, `outputs: [batch, time, hidden_size]` (the state after
    each step) and `h: [batch, hidden_size]` (the last state). The model has no dropout;
    `deterministic` is accepted so that every model takes the same call.

    >>> model = ManualRNN(10, 20, 5)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((32, 5, 10)))
    >>> outputs, h = model.apply(variables, jnp.ones((32, 5, 10)))  # [32, 5, 20], [32, 20]
    """

    input_size: int
    hidden_size: int
    output_size: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        checks.check_int("input_size", self.input_size, 1)
        checks.check_int("hidden_size", self.hidden_size, 1)
        checks.check_int("output_size", self.output_size, 1)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, *, deterministic: bool = True):
        del deterministic  # no dropout in this model
        checks.check_x64(self.param_dtype)
        x = checks.as_float_array("x", x)
        if x.ndim != 3:
            raise ValueError(
                f"x must have shape [batch, time, input_size], got a {x.ndim}-D array of shape {x.shape}"
            )
        checks.check_shape("x", x, (x.shape[0], x.shape[1], self.input_size))
        if x.shape[1] == 0:
            raise ValueError(f"x must have at least one time step, got shape {x.shape}")
        dtype = self.dtype or jnp.result_type(x, self.param_dtype)
        x = jnp.asarray(x, dtype)
        h = jnp.zeros((x.shape[0], self.hidden_size), dtype)  # [batch, hidden_size]

        scan = nn.scan(_step, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1)
        cell = ManualRNNCell(self.input_size, self.hidden_size, self.dtype, self.param_dtype, name="rnn_cell")
        h, outputs = scan(cell, h, x)  # [batch, hidden_size], [batch, time, hidden_size]
        if self.is_initializing():  # `fc` is unused, as in PyTorch, but has parameters
            Linear(self.output_size, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(h)
        return outputs, h
