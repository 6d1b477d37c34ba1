"""PyTorch's recurrent layers and cells as Flax NNX modules, over the same core as linen's.

Each module reads like its `torch.nn` twin: PyTorch's constructor arguments in its order, then
keyword-only `rngs` (required), `param_dtype` and `dtype`; parameters as attributes with
PyTorch's names, shapes and initialisation (`lstm.weight_ih_l0: nnx.Param [4 * hidden,
input]`, `lstm.bias_hh_l1_reverse`, `lstm.weight_hr_l0`; no bias attributes with
`bias=False`); PyTorch's forward; training mode when new, `model.eval()` / `model.train()` to
switch dropout between layers. The arithmetic is `flaxseq.stack`'s, as for the linen layers.
"""

from typing import Any

import jax.numpy as jnp
from flax import nnx

from flaxseq import checks, cudnn, kinds, stack
from flaxseq.init import recurrent_uniform
from flaxseq.kinds import CellKind
from flaxseq.weights import NAMES, Weights, cell_shapes


def require_rngs(module, rngs) -> nnx.Rngs:
    """`rngs` must be an `nnx.Rngs`: the parameters are drawn from its `params` stream."""
    if rngs is None:
        raise TypeError(
            f"{checks.class_name(module)}: rngs is required (keyword-only), e.g. rngs=flax.nnx.Rngs(0)"
        )
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be a flax.nnx.Rngs, got {type(rngs).__name__}")
    return rngs


class RNNBase(nnx.Module):
    """A stacked recurrent layer of any cell kind (`flaxseq.CellKind`), PyTorch's `RNNBase`.

    `RNNBase(kind, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, *, rngs, param_dtype=float32, dtype=None)`.

    Call: `output, h_n = layer(input, hx=None, *, lengths=None)` (`output, (h_n, c_n)` when the
    kind has a cell state), shapes and `lengths` as `flaxseq.RNNBase`: `input [time, batch,
    input_size]` (`[batch, time, ...]` with `batch_first`, or unbatched `[time, input_size]`),
    `h_0`, `h_n: [num_layers * num_directions, batch, hidden_size]`, `output: [time, batch,
    num_directions * hidden_size]`. In training mode (a new module's, or after `train()`),
    dropout between layers draws from the `rngs` given at construction; `eval()` turns it off,
    and so does a view, `nnx.view(model, deterministic=True)`.
    The kind stepped is `cell_kind()`: the one given, or what a subclass's override returns
    (read once, at construction, after the subclass has set its own attributes).

    >>> layer = RNNBase(flaxseq.kinds.GRU, 10, 20, num_layers=2, rngs=nnx.Rngs(0))
    >>> output, h_n = layer(jnp.ones((5, 3, 10)))  # [5, 3, 20], [2, 3, 20]
    """

    def __init__(
        self, kind: CellKind, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
        batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *, proj_size: int = 0,
        rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
        custom_gradient: bool = True, use_cudnn: bool = False,
    ):
        self.kind = kind
        self.config = stack.StackConfig(
            self.cell_kind(), input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size,
        )
        stack.check_config(self.config)
        self.kind = self.config.kind
        rngs = require_rngs(self, rngs)
        checks.check_x64(param_dtype)
        checks.check_compute_dtype(dtype)
        if use_cudnn:
            cudnn.check_config(proj_size, self.config.kind)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, dropout, bidirectional
        self.proj_size, self.param_dtype, self.dtype = proj_size, param_dtype, dtype
        self.custom_gradient, self.use_cudnn = custom_gradient, use_cudnn
        init = recurrent_uniform(hidden_size)
        for name, shape in stack.parameter_shapes(self.config).items():
            setattr(self, name, nnx.Param(init(rngs.params(), shape, param_dtype)))
        self.deterministic = False
        self.dropout_rngs = rngs["dropout"].fork() if dropout > 0 and num_layers > 1 else nnx.data(None)

    def cell_kind(self) -> CellKind:
        """The cell kind this layer steps: the `kind` it was built with."""
        return self.kind

    def set_view(self, deterministic: bool | None = None):
        """What `flax.nnx.view(model, deterministic=True)` sets, as on flax's `nnx.Dropout`:
        True turns dropout between layers off, as `eval()` does; False on."""
        if deterministic is not None:
            self.deterministic = deterministic

    @property
    def num_directions(self) -> int:
        return self.config.num_directions

    def __call__(self, input, hx=None, *, lengths=None):
        names = stack.parameter_shapes(self.config)
        params = {name: getattr(self, name)[...] for name in names}
        keys = None
        if not self.deterministic and self.dropout_rngs is not None:
            keys = [self.dropout_rngs() for _ in range(self.num_layers - 1)]
        return stack.run(
            self.config, stack.stack_weights(self.config, params), input, hx, lengths=lengths, dropout_keys=keys,
            dtype=self.dtype, custom_gradient=self.custom_gradient, use_cudnn=self.use_cudnn,
            name=checks.class_name(self),
        )


class RNN(RNNBase):
    """The twin of `torch.nn.RNN`: `RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, *, rngs, param_dtype, dtype)`;
    `output, h_n = rnn(input, hx=None, *, lengths=None)` (`RNNBase`).

    >>> rnn = RNN(10, 20, 2, rngs=nnx.Rngs(0))
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
        bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
        rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
        custom_gradient: bool = True,
    ):
        checks.check_nonlinearity(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(
            kinds.rnn(nonlinearity), input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            rngs=rngs, param_dtype=param_dtype, dtype=dtype, custom_gradient=custom_gradient,
        )


class LSTM(RNNBase):
    """The twin of `torch.nn.LSTM`: `LSTM(input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, *, rngs, param_dtype,
    dtype)`; `output, (h_n, c_n) = lstm(input, hx=None, *, lengths=None)`, `h` of size
    `proj_size or hidden_size`; with `proj_size`, `weight_hr_l{k}: [proj_size, hidden]`.

    >>> lstm = LSTM(10, 20, num_layers=2, bidirectional=True, batch_first=True, proj_size=5, rngs=nnx.Rngs(0))
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
        batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0, *,
        rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
        custom_gradient: bool = True, use_cudnn: bool = False,
    ):
        super().__init__(
            kinds.LSTM, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size=proj_size, rngs=rngs, param_dtype=param_dtype, dtype=dtype,
            custom_gradient=custom_gradient, use_cudnn=use_cudnn,
        )


class GRU(RNNBase):
    """The twin of `torch.nn.GRU`: `GRU(input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, *, rngs, param_dtype, dtype)`;
    `output, h_n = gru(input, hx=None, *, lengths=None)`.

    >>> gru = GRU(10, 20, rngs=nnx.Rngs(0))
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
        batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
        rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
        custom_gradient: bool = True,
    ):
        super().__init__(
            kinds.GRU, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            rngs=rngs, param_dtype=param_dtype, dtype=dtype, custom_gradient=custom_gradient,
        )


class RNNCellBase(nnx.Module):
    """One step of any cell kind: `h' = cell(input, hx=None)`, or `(h', c')` with a cell state.

    `RNNCellBase(kind, input_size, hidden_size, bias=True, *, rngs, param_dtype, dtype)`;
    `input: [batch, input_size]` or `[input_size]`, `hx` and the result `[batch, hidden_size]`
    each (or `[hidden_size]`), zeros when None. Parameters `weight_ih [gates * hidden, input]`,
    `weight_hh [gates * hidden, hidden]`, `bias_ih`, `bias_hh [gates * hidden]`. The kind
    stepped is `cell_kind()`, as for `RNNBase`.
    """

    def __init__(
        self, kind: CellKind, input_size: int, hidden_size: int, bias: bool = True, *,
        rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
    ):
        self.kind = kind
        kind = self.cell_kind()
        if not isinstance(kind, CellKind):
            raise TypeError(f"kind must be a flaxseq.CellKind, got {type(kind).__name__}")
        checks.check_recurrent_config(input_size=input_size, hidden_size=hidden_size)
        rngs = require_rngs(self, rngs)
        checks.check_x64(param_dtype)
        checks.check_compute_dtype(dtype)
        self.kind = kind
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.param_dtype, self.dtype = param_dtype, dtype
        init = recurrent_uniform(hidden_size)
        for name, shape in zip(NAMES, cell_shapes(kind.gates, input_size, hidden_size, bias), strict=True):
            if shape is not None:
                setattr(self, name, nnx.Param(init(rngs.params(), shape, param_dtype)))

    def cell_kind(self) -> CellKind:
        """The cell kind this cell steps: the `kind` it was built with."""
        return self.kind

    @property
    def num_feature_axes(self) -> int:
        """Read by `flax.nnx.RNN`, which calls a cell as `(carry, x) -> (carry, y)`; a flaxseq
        cell's call is PyTorch's `(input, hx) -> hx'`, so it is refused here, naming the adapter."""
        raise checks.flax_rnn_refusal(self, "flax.nnx.RNN", "flaxseq.nnx.CellScan")

    def __call__(self, input, hx=None):
        weights = Weights(*(getattr(self, name)[...] if hasattr(self, name) else None for name in NAMES))
        shapes = cell_shapes(self.kind.gates, self.input_size, self.hidden_size, self.bias)
        wrong = [f"{name}: expected shape {shape}, got {tuple(w.shape)}"
                 for name, shape, w in zip(NAMES, shapes, weights, strict=True)
                 if shape is not None and w is not None and tuple(w.shape) != shape]
        if wrong:
            raise ValueError(f"{checks.class_name(self)} parameters of the wrong shape: " + "; ".join(wrong))
        return stack.cell_step(
            self.kind, weights, input, hx, input_size=self.input_size, dtype=self.dtype, name=checks.class_name(self)
        )


class RNNCell(RNNCellBase):
    """The twin of `torch.nn.RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh')`:
    `h' = cell(input, hx=None)`."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", *,
        rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
    ):
        checks.check_nonlinearity(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(
            kinds.rnn(nonlinearity), input_size, hidden_size, bias, rngs=rngs, param_dtype=param_dtype, dtype=dtype
        )


class LSTMCell(RNNCellBase):
    """The twin of `torch.nn.LSTMCell(input_size, hidden_size, bias=True)`:
    `(h', c') = cell(input, hx=None)`, `hx = (h, c)`."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *,
        rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
    ):
        super().__init__(kinds.LSTM, input_size, hidden_size, bias, rngs=rngs, param_dtype=param_dtype, dtype=dtype)


class GRUCell(RNNCellBase):
    """The twin of `torch.nn.GRUCell(input_size, hidden_size, bias=True)` (with PyTorch's
    `b_hn`): `h' = cell(input, hx=None)`."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *,
        rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
    ):
        super().__init__(kinds.GRU, input_size, hidden_size, bias, rngs=rngs, param_dtype=param_dtype, dtype=dtype)


