"""PyTorch's recurrent layers and cells as Flax NNX modules, over the same core as linen's.

Each module reads like its `torch.nn` twin: PyTorch's constructor arguments in its order, then
keyword-only `rngs` (required), `param_dtype` and `dtype`; parameters as attributes with
PyTorch's names, shapes and initialisation (`lstm.weight_ih_l0: nnx.Param [4 * hidden,
input]`, `lstm.bias_hh_l1_reverse`, `lstm.weight_hr_l0`; no bias attributes with
`bias=False`); PyTorch's forward; training mode when new, `model.eval()` / `model.train()` to
switch dropout between layers. The arithmetic is `flaxseq.stack`'s, as for the linen layers.
"""

import dataclasses
import functools
import types
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


def check_kind_state(module, kind: CellKind) -> None:
    """`kind` must reach no NNX variable (`nnx.Param`, any `nnx.Variable`): a kind is static
    data to NNX, held by the module as it is, so `nnx.grad` would give a variable its step reads
    no gradient and `nnx.jit` would keep its first value (`flaxseq.kinds`, what a step may read).

    Looked for in the kind's fields and in what its step and hand-written gradient read from
    outside their arguments: their closures, defaults, `functools.partial` arguments, bound
    `self`, the globals they name, and the attributes they name of the objects found there,
    through the functions those call. Raises `TypeError` naming the module, the kind and the
    variable."""
    seen: set[int] = set()

    def names(fn) -> set[str]:  # the global and attribute names fn's code reads, nested code too
        code, found = getattr(fn, "__code__", None), set()
        stack = [code] if code is not None else []
        while stack:
            code = stack.pop()
            found.update(code.co_names)
            stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        return found

    def find(value, path: str, read: set[str] | None, depth: int = 0):
        """The path of the first NNX variable reached from `value`, or None; of an object's
        attributes, those named in `read` (None: all)."""
        if isinstance(value, nnx.Variable):
            return path
        if depth > 8 or id(value) in seen or isinstance(value, (types.ModuleType, type, str, bytes, int, float)):
            return None
        seen.add(id(value))
        if isinstance(value, (tuple, list)):
            children = [(f"{path}[{k}]", v, read) for k, v in enumerate(value)]
        elif isinstance(value, dict):
            children = [(f"{path}[{k!r}]", v, read) for k, v in value.items()]
        elif isinstance(value, functools.partial):
            children = [(path, value.func, read)] + [(path, v, read) for v in (*value.args, *value.keywords.values())]
        elif isinstance(value, types.MethodType):
            own = names(value.__func__)
            children = [(path, value.__func__, own), ("self", value.__self__, own)]
        elif isinstance(value, types.FunctionType):
            own = names(value)
            cells = zip(value.__code__.co_freevars, value.__closure__ or (), strict=True)
            children = [(name, _contents(cell), own) for name, cell in cells]
            children += [(name, value.__globals__[name], own) for name in sorted(own) if name in value.__globals__]
            children += [(f"{path} default", v, own) for v in (*(value.__defaults__ or ()),
                                                                 *(value.__kwdefaults__ or {}).values())]
        elif hasattr(value, "__dict__"):
            call = type(value).__call__ if callable(value) else None
            if read is not None:
                read = read | (names(call) if isinstance(call, types.FunctionType) else set())
            children = [(f"{path}.{name}", v, read) for name, v in vars(value).items() if read is None or name in read]
            if isinstance(call, types.FunctionType):
                children.append((path, call, read))
        else:
            return None
        for child_path, child, child_read in children:
            if (found := find(child, child_path, child_read, depth + 1)) is not None:
                return found
        return None

    roots = [("step", kind.step)]
    if kind.gradient is not None:
        roots += [("gradient.forward", kind.gradient.forward), ("gradient.backward", kind.gradient.backward)]
    fields = {field.name for field in dataclasses.fields(CellKind)}
    roots += [(f"kind.{field.name}", getattr(kind, field.name)) for field in dataclasses.fields(kind)
              if field.name not in fields]  # a subclass's own fields
    for where, root in roots:
        path = find(root, where, None if where.startswith("kind.") else set())
        if path is not None:
            raise TypeError(
                f"{checks.class_name(module)}: cell kind {kind.name!r} reads the NNX variable {path} "
                f"from outside its step's arguments; NNX holds a kind as static data, so nnx.grad would give "
                "that variable no gradient and nnx.jit would keep its first value. A kind's learnable "
                "parameters are the cell's parameters (weight_ih, weight_hh, bias_ih, bias_hh, which reach "
                "its step as gx and gh); a constant it reads must be a plain array or number"
            )


def _contents(cell):
    """A closure cell's value; None while the name is not yet bound."""
    try:
        return cell.cell_contents
    except ValueError:
        return None


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
    (read once, at construction, after the subclass has set its own attributes); a kind whose
    step reads an `nnx.Param` is refused there (`check_kind_state`: a kind's learnable
    parameters are the cell's). `custom_gradient` as in `flaxseq.RNNBase`: the loop's gradient
    by hand (True, reverse mode only) or JAX's (False, forward mode too).

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
        check_kind_state(self, self.config.kind)
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
        check_kind_state(self, kind)
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


