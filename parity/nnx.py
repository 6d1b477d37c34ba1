"""Conversion between PyTorch modules and `flaxseq.nnx` modules, both ways.

A `flaxseq.nnx` module's parameters are attributes with PyTorch's names and layouts, so its
flat parameter state is the state_dict itself: `lstm.weight_ih_l0` is `lstm.weight_ih_l0`,
`fc.weight` is `fc.weight`. flax's own `nnx.Linear`, `nnx.Embed` and `nnx.LayerNorm` inside a
twin convert by the leaf renames of `parity.rules.LEAF_RULES` (`kernel` transposed). A
parameter held in two places (one `nnx.Param` as `encoder.weight` and `decoder.weight`) is a
tie (`parity.ties`). Building a module from the other framework's configuration needs a rule
per class (`NNXRule`), registered by the architecture's conversion file as the linen rules are.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from flax.traverse_util import flatten_dict

from parity import rules
from parity import ties as tying
from parity.arrays import numpy_dtype, to_numpy, to_tensor
from parity.rules import torch_name


@dataclass(frozen=True)
class NNXRule:
    """How to build an NNX module from a PyTorch one and back, for one pair of classes."""

    torch_type: type
    nnx_type: type
    to_nnx: Callable[[torch.nn.Module], nnx.Module]
    to_torch: Callable[[nnx.Module], torch.nn.Module]
    ties: Mapping[str, str] = field(default_factory=dict)  # alias -> parameter, as `parity.ties`


_RULES: list[NNXRule] = []


def register_nnx(rule: NNXRule) -> NNXRule:
    """Add the NNX rule for the pair `rule.torch_type`, `rule.nnx_type` (replacing one for the
    same pair); other rules are kept, as `parity.register` says."""
    rules.replace_or_add(_RULES, rule, lambda r: (r.torch_type, r.nnx_type))
    return rule


def nnx_copy_rule(
    torch_type: type, nnx_type: type, fields: Mapping[str, Callable | str] | tuple[str, ...], *,
    ties: Mapping[str, str] | None = None,
) -> NNXRule:
    """Register a rule for twins whose constructor arguments `fields` share names and meaning.

    `fields` names attributes both modules keep, or maps each argument to an attribute name or
    a function of the PyTorch module (`{"ninp": lambda m: m.encoder.embedding_dim}`), applied
    to the NNX module too, which otherwise gives the argument from its attribute of that name.
    PyTorch's `dtype=` is NNX's `param_dtype`. `ties`: as `NNXRule`.
    """
    getters = {f: (lambda m, f=f: getattr(m, f)) for f in fields} if isinstance(fields, tuple) else {
        f: (lambda m, g=g: getattr(m, g)) if isinstance(g, str) else g for f, g in fields.items()
    }

    def to_nnx(module):
        config = {f: get(module) for f, get in getters.items()}
        return nnx_type(**config, rngs=nnx.Rngs(0), param_dtype=jnp.dtype(_torch_param_dtype(module)))

    def to_torch(module):
        config = {f: _argument(module, f, get) for f, get in getters.items()}
        dtypes = {np.dtype(v.dtype) for v in to_state_dict(module).values()} or {np.dtype("float32")}
        return torch_type(**config).to(getattr(torch, dtypes.pop().name))

    return register_nnx(NNXRule(torch_type, nnx_type, to_nnx, to_torch, dict(ties or {})))


def _argument(module: nnx.Module, name: str, get: Callable):
    try:
        return get(module)
    except AttributeError:
        return getattr(module, name)


def find_nnx_rule(module) -> NNXRule:
    """The rule for `type(module)` (or its nearest base class), a PyTorch module or an NNX twin
    (`parity.rules.find`)."""
    is_torch = isinstance(module, torch.nn.Module)
    return rules.find(_RULES, module, (lambda r: r.torch_type) if is_torch else (lambda r: r.nnx_type),
                      "parity.nnx.register_nnx", latest=is_torch)


def _torch_param_dtype(module: torch.nn.Module) -> np.dtype:
    param = next(module.parameters(), None)
    return np.dtype("float32") if param is None else numpy_dtype(param.dtype)


def _flat_params(module: nnx.Module) -> dict[str, tuple[nnx.Variable, bool]]:
    """PyTorch's key -> (the module's `nnx.Param`, transposed?), each parameter once."""
    flat = {}
    for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        key, transposed = torch_name(path, variable[...].ndim)
        flat[key] = (variable, transposed)
    return flat


def shared_ties(module: nnx.Module) -> dict[str, str]:
    """The module's ties: every other place holding an `nnx.Param` it holds (the same object as
    two attributes) -> the key `nnx.state` gives it."""
    canonical = {id(variable): key for key, (variable, _) in _flat_params(module).items()}
    ties = {}
    for path, child in nnx.iter_modules(module):
        for attribute, value in vars(child).items():
            if isinstance(value, nnx.Param) and id(value) in canonical:
                key, _ = torch_name((*path, attribute), value[...].ndim)
                if key != canonical[id(value)]:
                    ties[key] = canonical[id(value)]
    return ties


def to_state_dict(module: nnx.Module, ties: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """An NNX module's parameters -> PyTorch's state_dict of numpy arrays (dtype kept), each
    alias of the module's shared parameters and of `ties` beside its parameter."""
    state_dict = {}
    for key, (variable, transposed) in _flat_params(module).items():
        value = np.asarray(variable[...])
        state_dict[key] = value.T if transposed else value
    return tying.with_aliases(state_dict, {**shared_ties(module), **(ties or {})})


def state_dict_of(pure_params: Mapping, ties: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """A pure dict of an NNX module's parameters (`nnx.to_pure_dict`, gradients too) ->
    PyTorch's names to numpy arrays, aliases of `ties` beside their parameters."""
    state_dict = {}
    for path, value in flatten_dict(dict(pure_params)).items():
        value = np.asarray(value)
        key, transposed = torch_name(path, value.ndim)
        state_dict[key] = value.T if transposed else value
    return tying.with_aliases(state_dict, ties or {})


def from_state_dict(module: nnx.Module, state_dict: Mapping[str, Any], *, ties: Mapping[str, str] | None = None,
                    problems_of: Callable) -> nnx.Module:
    """Fill `module`'s parameters in place from a PyTorch state_dict and return it.

    Strict as the linen version: every missing, unexpected, misshaped and non-floating key
    (`problems_of(expected, state_dict)` lists them, shapes in PyTorch's layout) is raised at
    once in a `ValueError`; nothing is written unless everything fits. The aliases of the
    module's shared parameters and of `ties` are checked equal to their parameters. Each
    parameter takes the state_dict's array with its dtype, as in linen (the module's
    `param_dtype` is what it initialises with): nothing is cast, so a float64 state_dict gives
    a float64 twin whatever it was built with, and a float32 one a float32 twin.
    """
    params = _flat_params(module)
    expected = {
        key: tuple(v[...].shape)[::-1] if transposed else tuple(v[...].shape) for key, (v, transposed) in params.items()
    }
    ties = {**shared_ties(module), **(ties or {})}
    state_dict, problems = tying.split_aliases(expected, state_dict, ties, to_numpy)
    values, more = problems_of(expected, state_dict)
    problems += more
    if problems:
        raise ValueError(f"state_dict does not match {type(module).__name__}:\n  " + "\n  ".join(problems))
    for key, value in values.items():
        variable, transposed = params[key]
        variable.set_value(jnp.asarray(value.T if transposed else value))  # its dtype, as linen keeps it
    return module


def from_torch(torch_module: torch.nn.Module, fill: Callable) -> nnx.Module:
    """A PyTorch module -> the NNX module with its configuration, weights and mode; parameters
    sharing storage in the torch module become the twin's one parameter."""
    module = find_nnx_rule(torch_module).to_nnx(torch_module)
    ties = tying.torch_ties(torch_module, _flat_params(module))
    fill(module, torch_module.state_dict(), ties=ties)
    module.train() if torch_module.training else module.eval()
    return module


def to_torch(module: nnx.Module, ties: Mapping[str, str] | None = None) -> torch.nn.Module:
    """An NNX module -> the PyTorch module with its configuration, weights and mode, the
    module's shared parameters and `ties` tied again."""
    torch_module = find_nnx_rule(module).to_torch(module)
    ties = {**shared_ties(module), **(ties or {})}
    state_dict = {k: to_tensor(v) for k, v in to_state_dict(module, ties).items()}
    torch_module.load_state_dict(state_dict, strict=True)
    modes = [m.deterministic for _, m in nnx.iter_modules(module) if hasattr(m, "deterministic")]
    return tying.retie(torch_module, ties).train(not all(modes))


class AsLinen:
    """An NNX module seen through linen's `apply(variables, *args)`, for the comparison code:
    `variables = {'params': pure dict}`, evaluated on a copy in evaluation mode."""

    def __init__(self, module: nnx.Module):
        module = nnx.clone(module)
        module.eval()
        self.graphdef, params, self.rest = nnx.split(module, nnx.Param, ...)
        self.variables = {"params": nnx.to_pure_dict(params)}
        self._params = params

    def apply(self, variables, *args, **kwargs):
        params = jax.tree.map(lambda a: a, self._params)
        nnx.replace_by_pure_dict(params, variables["params"])
        return nnx.merge(self.graphdef, params, self.rest)(*args, **kwargs)
