"""Conversion between PyTorch modules and `flaxseq.nnx` modules, both ways.

An NNX module's parameters are attributes with PyTorch's names and layouts, so its flat
parameter state is the state_dict itself: `lstm.weight_ih_l0` is `weight_ih_l0`, `fc.weight`
is `fc.weight`, no renames and no transposes. Building a module from the other framework's
configuration needs a rule per class (`NNXRule`), registered by the architecture's conversion
file as the linen rules are.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from flax.traverse_util import flatten_dict

from parity import rules


@dataclass(frozen=True)
class NNXRule:
    """How to build an NNX module from a PyTorch one and back, for one pair of classes."""

    torch_type: type
    nnx_type: type
    to_nnx: Callable[[torch.nn.Module], nnx.Module]
    to_torch: Callable[[nnx.Module], torch.nn.Module]


_RULES: list[NNXRule] = []


def register_nnx(rule: NNXRule) -> NNXRule:
    """Add (or replace) the NNX rule for `rule.torch_type` and `rule.nnx_type`."""
    _RULES[:] = [r for r in _RULES if r.torch_type is not rule.torch_type and r.nnx_type is not rule.nnx_type]
    _RULES.append(rule)
    return rule


def nnx_copy_rule(torch_type: type, nnx_type: type, fields: Mapping[str, Callable | str] | tuple[str, ...]) -> NNXRule:
    """Register a rule for twins whose constructor arguments `fields` share names and meaning.

    `fields` names attributes both modules keep, or maps each argument to a function of the
    module (the same function is applied to both). PyTorch's `dtype=` is NNX's `param_dtype`.
    """
    getters = {f: (lambda m, f=f: getattr(m, f)) for f in fields} if isinstance(fields, tuple) else {
        f: (lambda m, g=g: getattr(m, g)) if isinstance(g, str) else g for f, g in fields.items()
    }

    def to_nnx(module):
        config = {f: get(module) for f, get in getters.items()}
        return nnx_type(**config, rngs=nnx.Rngs(0), param_dtype=jnp.dtype(_torch_param_dtype(module)))

    def to_torch(module):
        config = {f: get(module) for f, get in getters.items()}
        dtypes = {np.dtype(v[...].dtype) for v in _flat_params(module).values()} or {np.dtype("float32")}
        return torch_type(**config).to(getattr(torch, dtypes.pop().name))

    return register_nnx(NNXRule(torch_type, nnx_type, to_nnx, to_torch))


def find_nnx_rule(module) -> NNXRule:
    """The rule whose torch or NNX class is `type(module)` (or its nearest base class)."""
    return rules.find(_RULES, module, lambda r: (r.torch_type, r.nnx_type), "parity.nnx.register_nnx")


def _torch_param_dtype(module: torch.nn.Module) -> np.dtype:
    param = next(module.parameters(), None)
    return np.dtype("float32") if param is None else np.dtype(str(param.dtype).removeprefix("torch."))


def _flat_params(module: nnx.Module) -> dict[str, nnx.Variable]:
    """PyTorch's key -> the module's `nnx.Param`, for every parameter."""
    flat = {}
    for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        flat[".".join(str(p) for p in path)] = variable
    return flat


def to_state_dict(module: nnx.Module) -> dict[str, np.ndarray]:
    """An NNX module's parameters -> PyTorch's state_dict of numpy arrays (dtype kept)."""
    return {key: np.asarray(variable[...]) for key, variable in _flat_params(module).items()}


def state_dict_of(pure_params: Mapping) -> dict[str, np.ndarray]:
    """A pure dict of an NNX module's parameters (`nnx.to_pure_dict`, gradients too) ->
    PyTorch's names to numpy arrays."""
    return {".".join(str(p) for p in path): np.asarray(v) for path, v in flatten_dict(dict(pure_params)).items()}


def from_state_dict(module: nnx.Module, state_dict: Mapping[str, Any], *, problems_of: Callable) -> nnx.Module:
    """Fill `module`'s parameters in place from a PyTorch state_dict and return it.

    Strict as the linen version: every missing, unexpected, misshaped and non-floating key
    (`problems_of(expected, state_dict)` lists them, shapes in PyTorch's layout) is raised at
    once in a `ValueError`; nothing is written unless everything fits.
    """
    params = _flat_params(module)
    expected = {key: jax.ShapeDtypeStruct(v[...].shape, v[...].dtype) for key, v in params.items()}
    values, problems = problems_of(expected, state_dict)
    if problems:
        raise ValueError(f"state_dict does not match {type(module).__name__}:\n  " + "\n  ".join(problems))
    for key, value in values.items():
        params[key][...] = jnp.asarray(value)
    return module


def from_torch(torch_module: torch.nn.Module, fill: Callable) -> nnx.Module:
    """A PyTorch module -> the NNX module with its configuration, weights and mode."""
    module = find_nnx_rule(torch_module).to_nnx(torch_module)
    fill(module, torch_module.state_dict())
    module.train() if torch_module.training else module.eval()
    return module


def to_torch(module: nnx.Module) -> torch.nn.Module:
    """An NNX module -> the PyTorch module with its configuration, weights and mode."""
    torch_module = find_nnx_rule(module).to_torch(module)
    state_dict = {k: torch.from_numpy(np.array(v)) for k, v in to_state_dict(module).items()}
    torch_module.load_state_dict(state_dict, strict=True)
    modes = [m.deterministic for _, m in nnx.iter_modules(module) if hasattr(m, "deterministic")]
    return torch_module.train(not all(modes))


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
