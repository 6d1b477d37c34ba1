"""The linen recurrent layers: `RNNBase` for any cell kind, and PyTorch's `RNN`, `LSTM`, `GRU`.

A layer declares its parameters under PyTorch's flat names (`weight_ih_l0`,
`weight_hh_l1_reverse`, ...), checks its configuration, and calls the framework-free stack
(`flaxseq.stack.run`) with them; what a layer computes is its cell kind's business
(`flaxseq.kinds`). The weights are the layer's own rather than those of a scanned cell module,
so that the parameter tree stays a plain rename of PyTorch's state_dict.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.core.scope import Scope

from flaxseq import checks, cudnn, kinds, stack
from flaxseq.cells import _CellKindModule
from flaxseq.init import recurrent_uniform
from flaxseq.kinds import CellKind


def _built_by_user(module: nn.Module) -> bool:
    """Whether this construction of `module` is the one to warn at, as PyTorch warns once, when
    the module is built: the user's own, or a submodule's while its model initialises; not
    linen's copies for `init` and `apply` (their parent a Scope), nor a submodule's rebuild at
    every `apply`. A function, not a method: linen would wrap a method (and `tabulate` would
    then require a scope)."""
    if isinstance(module.parent, Scope):
        return False
    if isinstance(module.parent, nn.Module):
        return module.parent.scope is None or module.parent.is_initializing()
    return True


class _DropoutKey(nn.Module):
    """The key `nn.Dropout` draws at this place in the tree, so that dropout between layers
    keeps the masks it had when it was an `nn.Dropout` submodule (`Dropout_{layer}`)."""

    @nn.compact
    def __call__(self):
        return self.make_rng("dropout")


class _Stack(_CellKindModule):
    """The body the layers share: declare the parameters, then `flaxseq.stack.run`.

    A layer says what it is through `cell_kind()` and its fields; nothing here depends on the
    class's name, so a subclass behaves as its base.
    """

    def cell_kind(self) -> CellKind:
        return self.kind

    @nn.nowrap
    def config(self) -> stack.StackConfig:
        return stack.StackConfig(
            self.cell_kind(), self.input_size, self.hidden_size, self.num_layers, self.bias,
            self.batch_first, self.dropout, self.bidirectional, getattr(self, "proj_size", 0),
        )

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Size of `h` (the per-direction output): `proj_size` or `hidden_size`."""
        return self.config().output_size

    def __post_init__(self):
        config = self.config()  # read before linen wraps the module's methods
        stack.check_config(config, warn=False)
        super().__post_init__()  # linen resolves the parent here
        if _built_by_user(self):
            stack.check_config(config)  # now with its warning

    @nn.compact
    def __call__(self, input, hx=None, *, lengths=None, deterministic: bool = True):
        checks.check_x64(self.param_dtype)
        checks.check_compute_dtype(self.dtype)
        config = self.config()
        init = recurrent_uniform(self.hidden_size)
        shapes = stack.parameter_shapes(config)
        params = {name: self.param(name, init, shape, self.param_dtype) for name, shape in shapes.items()}
        keys = None
        if not deterministic and 0 < self.dropout < 1:
            keys = [_DropoutKey(name=f"Dropout_{layer}")() for layer in range(self.num_layers - 1)]
        elif not deterministic and self.dropout == 1:
            keys = [None] * (self.num_layers - 1)
        return stack.run(
            config, stack.stack_weights(config, params), input, hx, lengths=lengths, dropout_keys=keys,
            dtype=self.dtype, custom_gradient=self.custom_gradient, use_cudnn=getattr(self, "use_cudnn", False),
            name=checks.module_label(self),
        )


class RNNBase(_Stack):
    """A stacked recurrent layer of any cell kind, the counterpart of `torch.nn.RNNBase(mode, ...)`.

    `RNNBase(kind, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, *, proj_size=0, dtype=None, param_dtype=float32,
    custom_gradient=True)`.

    Parameters, per layer k and direction (suffix `_reverse` for the backward one):
    `weight_ih_l{k}: [gates * hidden, input_size or num_directions * (proj_size or hidden)]`,
    `weight_hh_l{k}: [gates * hidden, proj_size or hidden]`, `bias_ih_l{k}`, `bias_hh_l{k}:
    [gates * hidden]`, and with `proj_size > 0` (a kind with a cell state only, as PyTorch's
    LSTM) `weight_hr_l{k}: [proj_size, hidden]`, all from U(-1/sqrt(hidden), 1/sqrt(hidden)) as
    in PyTorch.

    Call: `module.apply(variables, input, hx=None, *, lengths=None, deterministic=True, rngs=...)`.

    - `input`: `[time, batch, input_size]`, or `[batch, time, input_size]` with `batch_first`;
      unbatched `[time, input_size]` (where `batch_first` is ignored, as in PyTorch).
    - `hx`: `h_0: [num_layers * num_directions, batch, hidden_size]`, or `(h_0, c_0)` when the
      kind has a cell state. Zeros when None. `num_directions` is 2 if `bidirectional` else 1.
    - `lengths`: optional `[batch]` integers in [1, time], in any order. The result equals
      PyTorch's `pack_padded_sequence(input, lengths, enforce_sorted=False)` then
      `pad_packed_sequence(..., total_length=time)`: outputs past each length are zero, the final
      states are taken at each sequence's last valid step, and the reverse direction starts at
      each sequence's own last element; values past each length are never read (NaN there
      reaches no output or gradient). Concrete lengths outside [1, time] raise `ValueError`;
      under `jax.jit` they are traced, cannot be checked, and are clipped to [0, time] (a length
      of 0 gives zero outputs and final states equal to `hx`).
    - `deterministic`: when False, dropout (probability `dropout`) is applied to the outputs of
      every layer but the last, drawing from the `'dropout'` rng stream.

    Returns `(output, h_n)`, or `(output, (h_n, c_n))` with a cell state, `output: [time, batch,
    num_directions * (proj_size or hidden_size)]` (batch first with `batch_first`; no batch axis
    unbatched), the final states `[num_layers * num_directions, batch, proj_size or hidden_size]`
    (`c_n`: `hidden_size`).

    `custom_gradient` (default True): the loop's gradient is written by hand, as cuDNN does it
    (`flaxseq.recurrence`), which is fast but reverse mode only (`jax.grad`, `jax.vjp`); with
    False JAX differentiates the loop itself, so forward mode (`jax.jvp`, `jax.jacfwd`,
    `jax.hessian`) works too, at a slower reverse mode. Same values either way. Forward mode
    through the default raises a `TypeError` naming the kind and this argument; under `jax.jit`
    it is JAX's own `can't apply forward-mode autodiff (jvp) to a custom_vjp function`, raised
    where JAX differentiates the compiled function, which flaxseq does not see: it means the
    same. The hand-written gradient also differentiates only through the step's arguments: a
    kind whose step closes over a value being differentiated is refused (`flaxseq.kinds`).

    Differences from PyTorch: PyTorch's `dtype=` (the parameters' dtype) is `param_dtype` here,
    and `dtype` is Flax's computation dtype (None: promoted from input and parameters). `device=`
    has no meaning in JAX. A float64 `param_dtype` needs `jax.config.update('jax_enable_x64', True)`.

    >>> layer = RNNBase(flaxseq.kinds.GRU, 10, 20, num_layers=2)   # the same as GRU(10, 20, 2)
    """

    kind: CellKind
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = dataclasses.field(default=0, kw_only=True)
    dtype: Any = dataclasses.field(default=None, kw_only=True)
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)
    custom_gradient: bool = dataclasses.field(default=True, kw_only=True)


class RNN(_Stack):
    """Elman RNN, the twin of `torch.nn.RNN`: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
    (relu with `nonlinearity='relu'`), stacked over `num_layers`: `RNNBase` with the kind
    `flaxseq.kinds.RNN_TANH` or `RNN_RELU`.

    Parameters, per layer k and direction (suffix `_reverse` for the backward one):
    `weight_ih_l{k}: [hidden, input_size or num_directions * hidden]`, `weight_hh_l{k}:
    [hidden, hidden]`, `bias_ih_l{k}`, `bias_hh_l{k}: [hidden]`, from U(-1/sqrt(hidden), 1/sqrt(hidden)).

    Call and returns as `RNNBase`: `output, h_n = rnn.apply(variables, input, hx=None, *,
    lengths=None, deterministic=True)`, `h_0` and `h_n: [num_layers * num_directions, batch,
    hidden_size]`, `output: [time, batch, num_directions * hidden_size]`.

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

    def cell_kind(self) -> CellKind:
        checks.check_nonlinearity(self.nonlinearity)
        return kinds.rnn(self.nonlinearity)


class LSTM(_Stack):
    """Long short-term memory, the twin of `torch.nn.LSTM` (equations: `flaxseq.kinds.LSTM`):
    `RNNBase` with the LSTM kind, plus PyTorch's projection `proj_size`.

    Parameters, per layer k and direction: `weight_ih_l{k}: [4 * hidden, input]`,
    `weight_hh_l{k}: [4 * hidden, proj_size or hidden]`, `bias_ih_l{k}`, `bias_hh_l{k}:
    [4 * hidden]` (gates i, f, g, o), and with `proj_size > 0` `weight_hr_l{k}: [proj_size, hidden]`.

    Call and returns as `RNNBase`: `output, (h_n, c_n) = lstm.apply(variables, input, hx=None,
    *, lengths=None, deterministic=True)`, `hx = (h_0, c_0)`, `h_0` and `h_n: [num_layers *
    num_directions, batch, proj_size or hidden_size]`, `c_0` and `c_n: [..., hidden_size]`,
    `output: [time, batch, num_directions * (proj_size or hidden_size)]`.

    `use_cudnn=True` runs the whole stack as one cuDNN call on an NVIDIA GPU
    (`flaxseq.cudnn`), with the same parameters: no `proj_size`, no dropout while training,
    float32; anything else raises `ValueError`.

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

    kind = kinds.LSTM

    def __post_init__(self):
        if self.use_cudnn:
            cudnn.check_config(self.proj_size, self.cell_kind())
        super().__post_init__()


class GRU(_Stack):
    """Gated recurrent unit, the twin of `torch.nn.GRU` (equations: `flaxseq.kinds.GRU`, which
    follow PyTorch's documentation: the reset gate multiplies `W_hn h + b_hn`): `RNNBase` with
    the GRU kind.

    Parameters, per layer k and direction: `weight_ih_l{k}: [3 * hidden, input]`,
    `weight_hh_l{k}: [3 * hidden, hidden]`, `bias_ih_l{k}`, `bias_hh_l{k}: [3 * hidden]` (gates r, z, n).

    Call and returns as `RNNBase`: `output, h_n = gru.apply(variables, input, hx=None, *,
    lengths=None, deterministic=True)`.

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

    kind = kinds.GRU
