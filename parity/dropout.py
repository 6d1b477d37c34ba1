"""Dropout in training-mode comparisons: the same masks on both sides.

Two kinds of dropout site are matched by name (PyTorch's module name `encoder.drop` is flax's
path `encoder/drop`, by the project's convention):

- Dropout modules: `torch.nn.Dropout` on PyTorch's side; `flax.linen.Dropout` (intercepted with
  `flax.linen.intercept_methods`) or `flax.nnx.Dropout` (on the comparison's copy of the
  module), subclasses included, on flaxseq's. Each is replaced for the comparison by one that
  multiplies its input by `keep / (1 - p)`, `keep = keep_mask(site_key(base, site, call), p,
  shape)`, as both frameworks scale: one mask per call in call order, drawn with the shape the
  call sees (a key or rng given to the call is not used). A deterministic call (flax's
  `deterministic=True`, a PyTorch module in `eval()`) is the identity and still counts as a call.
- A multi-layer `torch.nn.RNN/LSTM/GRU` with `dropout > 0`, against a flaxseq recurrent layer
  (`flaxseq.RNNBase` and its kin, linen or NNX). flaxseq runs its own dropout between layers
  (`flaxseq.stack.dropout`) from its keys; PyTorch's module is run as its layer-by-layer
  equivalent, single-layer modules sharing its parameters, with the mask flaxseq's key gives
  (`jax.random.bernoulli(key, 1 - p, [time, batch, features])`, scaled by `1 / (1 - p)`) applied
  between them, packed sequences included. This checks where flaxseq drops, how it scales, and
  that it does not drop after the last layer. linen's keys (from `flaxseq.layers._DropoutKey`)
  are replaced by `site_key(base, site, call, layer)`, counted in the order the layer asks for
  them; an NNX layer draws its keys from its own
  stream, reseeded on the comparison's copy from `seed` and the site (so the masks depend on the
  seed alone), read from a copy of that stream.

Keys are `'rbg'` keys (`jax.random.key(seed, impl='rbg')`): XLA compiles the threefry
generator's draws slowly, a few seconds per mask on CPU, where `'rbg'` takes a fraction.

A site seen by one side only, called a different number of times, or with different shapes,
is a `ValueError` naming it; a different rate, or a call that drops on one side only, is a
problem the report lists. Dropout that no module performs (`torch.nn.functional.dropout` in a
forward, `jax.random` in a call) cannot be matched: it must not run in a training comparison.
"""

import contextlib
import types
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import flaxseq.nnx
from flaxseq import checks
from flaxseq import layers as linen_layers


def base_key(seed: int, step: int | None = None) -> jax.Array:
    """The comparison's key (of one training step): an `'rbg'` key."""
    key = jax.random.key(seed, impl="rbg")
    return key if step is None else jax.random.fold_in(key, step)


def site_key(base: jax.Array, site: str, call: int, layer: int | None = None) -> jax.Array:
    """The key of one call of a dropout site (and, for a recurrent site, one layer boundary)."""
    key = jax.random.fold_in(jax.random.fold_in(base, zlib.crc32(site.encode()) & 0x7FFFFFFF), call)
    return key if layer is None else jax.random.fold_in(key, layer)


def keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """Where dropout with probability `rate` keeps its input: `Bernoulli(1 - rate)`, the draw
    `flax.linen.Dropout` and `flaxseq.stack.dropout` make from `key`."""
    if rate >= 1.0:
        return jnp.zeros(shape, bool)
    return jax.random.bernoulli(key, 1.0 - rate, shape)


def _flax_scale(keep, rate: float, dtype) -> jax.Array:
    if rate >= 1.0:
        return jnp.zeros(keep.shape, dtype)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def _torch_scale(keep, rate: float, dtype: torch.dtype) -> torch.Tensor:
    """PyTorch's dropout noise for the keep mask `keep`: `bernoulli_(1 - p).div_(1 - p)`."""
    keep = torch.from_numpy(np.array(keep)).to(dtype)
    return keep.zero_() if rate >= 1.0 else keep.div_(1.0 - rate)


@dataclass(frozen=True)
class Call:
    """One call of a dropout site: the input's shape (for a recurrent site, the shape between
    layers, `[time, batch, directions * size]`), the rate, whether it drops."""

    shape: tuple[int, ...]
    rate: float
    drops: bool


@dataclass
class Log:
    """One side's dropout calls in one forward pass, by site."""

    dropouts: dict[str, list[Call]] = field(default_factory=dict)
    layers: dict[str, list[Call]] = field(default_factory=dict)

    def add(self, table: dict, site: str, call: Call) -> int:
        """Record `call` and return its index among the site's calls."""
        calls = table.setdefault(site, [])
        calls.append(call)
        return len(calls) - 1

    def summary(self) -> list[str]:
        """`'drop: 2 calls'`, `'lstm: 1 call, between layers'`, in site order; the compared
        module's own site (PyTorch's name `''`) reads `'the module'`."""
        def count(n):
            return f"{n} call{'s' * (n != 1)}"

        def named(site):
            return site or "the module"

        rows = [f"{named(site)}: {count(len(calls))}" for site, calls in self.dropouts.items()]
        return rows + [f"{named(site)}: {count(len(calls))}, between layers" for site, calls in self.layers.items()]


_ACTIVE: list["_FlaxRecorder"] = []  # the recorder of the flax forward being traced (NNX reads it)


class _FlaxRecorder:
    """flaxseq's side of one forward pass: applies the masks, substitutes linen's keys, logs."""

    def __init__(self, base: jax.Array, rename: Mapping[str, str]):
        self.base, self.rename, self.log = base, rename, Log()
        self.masks: dict[str, jax.Array] = {}  # the keep masks drawn, for PyTorch's side
        self._layers: list[list] = []  # open recurrent calls: [site, call, next layer]

    def site(self, path) -> str:
        name = ".".join(str(p) for p in path)
        return self.rename.get(name, name)

    def dropout(self, site: str, inputs, rate: float, broadcast_dims, deterministic: bool):
        drops = not deterministic and rate > 0
        call = self.log.add(self.log.dropouts, site, Call(tuple(jnp.shape(inputs)), float(rate), drops))
        if not drops:
            return inputs
        if tuple(broadcast_dims):
            raise ValueError(f"dropout site '{site}': broadcast_dims {tuple(broadcast_dims)} has no PyTorch twin")
        inputs = jnp.asarray(inputs)
        keep = self.masks[f"dropout/{site}/{call}"] = keep_mask(site_key(self.base, site, call), rate, inputs.shape)
        return inputs * _flax_scale(keep, rate, inputs.dtype)

    def layer_mask(self, site: str, call: int, layer: int, key: jax.Array) -> None:
        """Keep the mask flaxseq's `key` gives between `layer` and the next, for PyTorch."""
        between = self.log.layers[site][call]
        self.masks[f"layer/{site}/{call}/{layer}"] = keep_mask(key, between.rate, between.shape)

    def layer(self, site: str, input, config, drops: bool) -> int:
        shape = jnp.shape(input)
        if len(shape) == 3:
            time, batch = (shape[1], shape[0]) if config.batch_first else shape[:2]
        else:
            time, batch = shape[0], 1
        between = (time, batch, config.num_directions * config.output_size)
        drops = drops and config.dropout > 0 and config.num_layers > 1
        return self.log.add(self.log.layers, site, Call(between, float(config.dropout), drops))

    def intercept(self, next_fun, args, kwargs, context):
        """`flax.linen.intercept_methods`'s interceptor for linen modules."""
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if isinstance(module, nn.Dropout):
            inputs = args[0] if args else kwargs["inputs"]
            deterministic = args[1] if len(args) > 1 else kwargs.get("deterministic")
            deterministic = nn.merge_param("deterministic", module.deterministic, deterministic)
            return self.dropout(self.site(module.scope.path), inputs, module.rate, module.broadcast_dims, deterministic)
        if isinstance(module, linen_layers._Stack):
            site = self.site(module.scope.path)
            input = args[0] if args else kwargs["input"]
            call = self.layer(site, input, module.config(), not kwargs.get("deterministic", True))
            self._layers.append([site, call, 0])
            try:
                return next_fun(*args, **kwargs)
            finally:
                self._layers.pop()
        if isinstance(module, linen_layers._DropoutKey) and self._layers:
            site, call, layer = self._layers[-1]
            self._layers[-1][2] += 1
            key = site_key(self.base, site, call, layer)
            self.layer_mask(site, call, layer, key)
            return key
        return next_fun(*args, **kwargs)


def _is_rnn(module) -> bool:
    return isinstance(module, flaxseq.nnx.RNNBase)


_SUBCLASSES: dict[type, type] = {}


def _masked_class(cls: type) -> type:
    """`cls` (an `nnx.Dropout` or a flaxseq NNX recurrent layer) reporting to the comparison."""
    if cls in _SUBCLASSES:
        return _SUBCLASSES[cls]
    if issubclass(cls, nnx.Dropout):
        def call(self, inputs, *, deterministic=None, rngs=None):
            if not _ACTIVE:
                return cls.__call__(self, inputs, deterministic=deterministic, rngs=rngs)
            deterministic = self.deterministic if deterministic is None else deterministic
            return _ACTIVE[-1].dropout(self.parity_site, inputs, self.rate, self.broadcast_dims, bool(deterministic))
    else:
        def call(self, input, hx=None, *, lengths=None):
            if _ACTIVE:
                drops = not self.deterministic and self.dropout_rngs is not None
                recorder = _ACTIVE[-1]
                call = recorder.layer(self.parity_site, input, self.config, drops)
                if drops:  # the keys the layer is about to draw, from a copy of its stream
                    stream = nnx.clone(self.dropout_rngs)
                    for layer in range(self.num_layers - 1):
                        recorder.layer_mask(self.parity_site, call, layer, stream())
            return cls.__call__(self, input, hx, lengths=lengths)
    sub = types.new_class(cls.__name__, (cls,), exec_body=lambda ns: ns.update(__call__=call))
    sub.__qualname__ = f"{cls.__qualname__} (masked for parity)"
    return _SUBCLASSES.setdefault(cls, sub)


class FlaxSide:
    """flaxseq's module as a comparison runs it, linen or NNX, in training or evaluation mode.

    `apply(params, state, base, *args, **kwargs) -> (outputs, state, masks)`: the forward pass,
    its dropout masked (training, `base` the comparison's key) and logged in `log`; `state` is
    an NNX module's non-parameter state (its rng streams, threaded through training steps),
    None for linen; `masks` the keep masks drawn, by name, for PyTorch's side (`torch_side`).
    `variables` and `state` are the starting values.

    linen in training: `deterministic=False` is passed when the module's `__call__` takes
    `deterministic` and `kwargs` does not set it; the `'dropout'` rng stream is `base`.
    NNX: a copy of the module, `train()` or `eval()`, whose dropout modules and recurrent layers
    report to the comparison.
    """

    def __init__(
        self, module, variables: Mapping | None, *, train: bool, seed: int = 0, rename: Mapping[str, str] | None = None
    ):
        self.train, self.rename = train, dict(rename or {})
        self.is_nnx = isinstance(module, nnx.Module)
        self.log = Log()
        if self.is_nnx:
            module = nnx.clone(module)
            module.train() if train else module.eval()
            for path, node in nnx.iter_modules(module):
                if train and (isinstance(node, nnx.Dropout) or _is_rnn(node)):
                    name = ".".join(str(p) for p in path)
                    node.__class__ = _masked_class(type(node))
                    node.parity_site = self.rename.get(name, name)
                    if _is_rnn(node) and node.dropout_rngs is not None:
                        node.dropout_rngs.key.set_value(site_key(base_key(seed), node.parity_site, 0))
            self.graphdef, params, self.state = nnx.split(module, nnx.Param, ...)
            self._params = params
            self.variables = {"params": nnx.to_pure_dict(params)}
        else:
            self.module, self.variables, self.state = module, dict(variables), None
            takes = "deterministic" in checks.parameter_names(module.__call__)
            self.train_kwargs = {"deterministic": False} if train and takes else {}

    def apply(self, params, state, base, *args, **kwargs):
        recorder = _FlaxRecorder(base, self.rename)
        _ACTIVE.append(recorder)
        try:
            if self.is_nnx:
                params_state = jax.tree.map(lambda a: a, self._params)
                nnx.replace_by_pure_dict(params_state, params)
                module = nnx.merge(self.graphdef, params_state, jax.tree.map(lambda a: a, state))
                outputs = module(*args, **kwargs)
                state = nnx.split(module, nnx.Param, ...)[2]
            elif self.train:
                with nn.intercept_methods(recorder.intercept):
                    outputs = self.module.apply(
                        {**self.variables, "params": params}, *args, **{**self.train_kwargs, **kwargs},
                        rngs={"dropout": base},
                    )
            else:
                outputs = self.module.apply({**self.variables, "params": params}, *args, **kwargs)
        finally:
            _ACTIVE.pop()
        self.log = recorder.log
        return outputs, state, recorder.masks

    def layer_keys(self, base, state) -> Callable[[str], Callable[[int, int], jax.Array]]:
        """`site -> (call, layer) -> key`: the keys flaxseq's recurrent layer at `site` draws
        between layers, from `state` (NNX) or `base` (linen)."""
        streams = {}
        if self.is_nnx:
            module = nnx.merge(self.graphdef, jax.tree.map(lambda a: a, self._params), jax.tree.map(lambda a: a, state))
            for _, node in nnx.iter_modules(module):
                if _is_rnn(node) and hasattr(node, "parity_site") and node.dropout_rngs is not None:
                    streams[node.parity_site] = (node.dropout_rngs, node.num_layers - 1, [])

        def keys(site):
            if site not in streams:
                return lambda call, layer: site_key(base, site, call, layer)
            stream, per_call, drawn = streams[site]

            def key(call, layer):
                while len(drawn) <= call * per_call + layer:
                    drawn.append(stream())
                return drawn[call * per_call + layer]
            return key
        return keys


def _torch_rnn_twin(module: torch.nn.RNNBase, input_size: int) -> torch.nn.RNNBase:
    """A one-layer module of `module`'s kind and settings, without parameters of its own."""
    common = dict(bias=module.bias, batch_first=module.batch_first, bidirectional=module.bidirectional, device="meta")
    if isinstance(module, torch.nn.LSTM):
        return torch.nn.LSTM(input_size, module.hidden_size, 1, proj_size=module.proj_size, **common)
    if isinstance(module, torch.nn.GRU):
        return torch.nn.GRU(input_size, module.hidden_size, 1, **common)
    if isinstance(module, torch.nn.RNN):
        return torch.nn.RNN(input_size, module.hidden_size, 1, nonlinearity=module.nonlinearity, **common)
    raise TypeError(f"no layer-by-layer form for {type(module).__name__}")


def _single_layers(module: torch.nn.RNNBase) -> list[torch.nn.RNNBase]:
    """`module`'s layers as one-layer modules sharing its parameters (so gradients reach it)."""
    directions = 2 if module.bidirectional else 1
    size = module.proj_size or module.hidden_size
    singles = []
    for layer in range(module.num_layers):
        single = _torch_rnn_twin(module, module.input_size if layer == 0 else directions * size)
        for name in single._flat_weights_names:
            setattr(single, name, getattr(module, name.replace("_l0", f"_l{layer}")))
        singles.append(single.train(module.training))
    return singles


class _TorchRecorder:
    """PyTorch's side of one forward pass: the masked forwards and their log.

    A call uses the keep mask flaxseq drew for it (`masks`) when one of that name, rate and
    shape exists; otherwise (the sides disagree, which the comparison reports) it draws its own
    from the same key."""

    def __init__(self, base, layer_keys, flax_log: Log, masks: Mapping[str, Any]):
        self.base, self.layer_keys, self.flax_log, self.masks, self.log = base, layer_keys, flax_log, masks, Log()

    def keep(self, name: str, flax_calls: list[Call], call: int, rate: float, shape, key):
        mine = flax_calls[call] if call < len(flax_calls) else None
        if name in self.masks and mine is not None and mine.rate == rate and tuple(mine.shape) == tuple(shape):
            return self.masks[name]
        return np.asarray(keep_mask(key(), rate, tuple(shape)))

    def dropout(self, site: str, module: torch.nn.Dropout, input):
        drops = module.training and module.p > 0
        call = self.log.add(self.log.dropouts, site, Call(tuple(input.shape), float(module.p), drops))
        if not drops:
            return input
        keep = self.keep(f"dropout/{site}/{call}", self.flax_log.dropouts.get(site, []), call, module.p,
                         input.shape, lambda: site_key(self.base, site, call))
        return input * _torch_scale(keep, module.p, input.dtype)

    def layers(self, site: str, module: torch.nn.RNNBase, input, hx=None):
        """`module(input, hx)` layer by layer, flaxseq's masks between layers."""
        packed = isinstance(input, PackedSequence)
        flax_calls = self.flax_log.layers.get(site, [])
        call = len(self.log.layers.get(site, []))
        if packed and call >= len(flax_calls):
            raise ValueError(
                f"recurrent layer '{site}': PyTorch's {module.num_layers}-layer {type(module).__name__} with "
                f"dropout={module.dropout} has no flaxseq recurrent layer called there (call {call})"
            )
        directions = 2 if module.bidirectional else 1
        size = directions * (module.proj_size or module.hidden_size)
        if packed:  # the time axis flaxseq's mask has, which a packed sequence does not tell
            shape = flax_calls[call].shape
        elif input.dim() == 2:
            shape = (input.shape[0], 1, size)
        else:
            time, batch = (input.shape[1], input.shape[0]) if module.batch_first else input.shape[:2]
            shape = (time, batch, size)
        self.log.add(self.log.layers, site, Call(tuple(shape), float(module.dropout), True))
        keys = self.layer_keys(site)

        def state_slice(state, layer):
            if state is None:
                return None
            part = slice(layer * directions, (layer + 1) * directions)
            return tuple(s[part] for s in state) if isinstance(state, tuple) else state[part]

        x, finals = input, []
        singles = _single_layers(module)
        for layer, single in enumerate(singles):
            x, state = single(x, state_slice(hx, layer))
            finals.append(state)
            if layer == len(singles) - 1:
                break
            keep = self.keep(f"layer/{site}/{call}/{layer}", flax_calls, call, module.dropout, shape,
                             lambda layer=layer: keys(call, layer))
            scale = _torch_scale(keep, module.dropout, (x.data if packed else x).dtype)  # [time, batch, size]
            if packed:  # flaxseq's mask is over the padded sequence
                padded, lengths = pad_packed_sequence(x, total_length=shape[0])
                x = pack_padded_sequence(padded * scale, lengths, enforce_sorted=False)
            elif x.dim() == 2:
                x = x * scale[:, 0]
            else:
                x = x * (scale.transpose(0, 1) if module.batch_first else scale)
        if isinstance(finals[0], tuple):
            return x, tuple(torch.cat(parts) for parts in zip(*finals, strict=True))
        return x, torch.cat(finals)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(str(dtype).removeprefix("torch."))


@contextlib.contextmanager
def torch_side(module: torch.nn.Module, base, layer_keys, flax_log: Log, masks: Mapping[str, Any]):
    """Within: `module`'s `nn.Dropout` submodules apply the masks flaxseq's side drew (`masks`,
    `FlaxSide.apply`'s), and its multi-layer recurrent submodules with dropout run layer by
    layer with flaxseq's masks between layers (where flaxseq drew none, from `base` and
    `layer_keys(site)(call, layer)`, `FlaxSide.layer_keys`'s). Yields the log of the calls.
    Other dropout modules (`Dropout1d`, `AlphaDropout`, ...) are refused."""
    recorder = _TorchRecorder(base, layer_keys, flax_log, masks)
    forwards = {}
    for site, sub in module.named_modules():
        if isinstance(sub, torch.nn.Dropout):
            forwards[sub] = lambda input, site=site, sub=sub: recorder.dropout(site, sub, input)
        elif isinstance(sub, torch.nn.RNNBase) and sub.num_layers > 1 and sub.dropout > 0 and sub.training:
            forwards[sub] = lambda input, hx=None, site=site, sub=sub: recorder.layers(site, sub, input, hx)
        elif isinstance(sub, torch.nn.modules.dropout._DropoutNd) and sub.training:
            raise ValueError(f"'{site}': {type(sub).__name__} has no flaxseq twin in a training comparison "
                             "(torch.nn.Dropout has: flax's Dropout)")
    for sub, forward in forwards.items():  # on the instances, so the parameters keep their names
        sub.forward = forward
    try:
        yield recorder.log
    finally:
        for sub in forwards:
            del sub.forward


def check_sites(flax_log: Log, torch_log: Log, torch_module: torch.nn.Module) -> list[str]:
    """The two sides' dropout calls against each other: `ValueError` listing every site seen by
    one side only, called a different number of times or with different shapes; returns the
    problems the report lists (a different rate, a call that drops on one side only)."""
    errors, problems = [], []

    def pair(kind, flax_calls, torch_calls):
        for site in sorted(set(flax_calls) | set(torch_calls)):
            mine, theirs = flax_calls.get(site), torch_calls.get(site)
            if mine is None or theirs is None:
                side, other = ("PyTorch", flax_calls) if mine is None else ("flaxseq", torch_calls)
                has = ", ".join(sorted(other)) or "none"
                functional = (" (a functional torch.nn.functional.dropout is not seen: use an nn.Dropout module)"
                              if side == "flaxseq" and kind == "dropout site" else "")
                errors.append(f"{kind} '{site}' only in {side} (the other side has: {has}){functional}")
            elif len(mine) != len(theirs):
                errors.append(f"{kind} '{site}': PyTorch calls it {len(theirs)} times, flaxseq {len(mine)}")
            else:
                for call, (a, b) in enumerate(zip(mine, theirs, strict=True)):
                    if a.shape != b.shape:
                        errors.append(f"{kind} '{site}' call {call}: PyTorch's shape {b.shape}, flaxseq's {a.shape}")
                    elif a.drops != b.drops:
                        problems.append(f"{kind} '{site}' call {call}: drops in {'flaxseq' if a.drops else 'PyTorch'} "
                                        f"only (flaxseq rate {a.rate}, PyTorch p {b.rate})")
                    elif a.drops and a.rate != b.rate:
                        problems.append(f"{kind} '{site}' call {call}: flaxseq's rate {a.rate}, PyTorch's p {b.rate}")

    pair("dropout site", flax_log.dropouts, torch_log.dropouts)
    # a flaxseq layer that drops where PyTorch's does not (dropout 0, one layer, eval) is not
    # run layer by layer on PyTorch's side: its values show the difference
    torch_names = dict(torch_module.named_modules())
    flax_layers = {}
    for site, calls in flax_log.layers.items():
        if site in torch_log.layers:
            flax_layers[site] = calls
        elif site not in torch_names and any(c.drops for c in calls):
            errors.append(f"recurrent layer '{site}' only in flaxseq (drops between layers, rate {calls[0].rate})")
        elif any(c.drops for c in calls):
            theirs = getattr(torch_names[site], "dropout", None)
            problems.append(f"recurrent layer '{site}': drops between layers in flaxseq only "
                            f"(flaxseq rate {calls[0].rate}, PyTorch's dropout {theirs})")
    pair("recurrent layer", flax_layers, torch_log.layers)
    if errors:
        raise ValueError("dropout sites differ:\n  " + "\n  ".join(errors))
    return problems
