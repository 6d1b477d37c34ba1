"""Two-way weight conversion between PyTorch modules and flaxseq modules.

Parameter names follow one convention in both frameworks: a Flax submodule has the attribute
name of its PyTorch twin, so `fc.weight` is `params['fc']['kernel']` and `lstm.weight_ih_l0` is
`params['lstm']['weight_ih_l0']`. Converting is then a table of leaf renames (`LEAF_RULES`),
with a transpose for `nn.Dense` kernels, and no arithmetic on weights.

Building a module from the other framework's configuration needs a rule per class: `register`
one for your own modules, as `parity/layers.py` and `parity/models.py` do for flaxseq's.
"""

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict

import parity.nnx as parity_nnx
from parity import rules

# Flax leaf name -> (PyTorch leaf name, whether the array is transposed between the two).
LEAF_RULES = {"kernel": ("weight", True), "embedding": ("weight", False)}


@dataclass(frozen=True)
class Rule:
    """How to build one framework's module from the other's, for one pair of classes.

    Attributes:
      torch_type, flax_type: the pair of classes.
      to_flax: PyTorch module -> flaxseq module with the same configuration.
      to_torch: flaxseq module -> PyTorch module with the same configuration (any weights).
      example_args: flaxseq module -> positional arguments that `module.init` accepts, used to
        learn the parameter tree's names and shapes without computing anything.
    """

    torch_type: type
    flax_type: type
    to_flax: Callable[[torch.nn.Module], nn.Module]
    to_torch: Callable[[nn.Module], torch.nn.Module]
    example_args: Callable[[nn.Module], tuple]


_RULES: list[Rule] = []


def register(rule: Rule) -> Rule:
    """Add (or replace) the rule for `rule.torch_type` and `rule.flax_type`."""
    _RULES[:] = [r for r in _RULES if r.torch_type is not rule.torch_type and r.flax_type is not rule.flax_type]
    _RULES.append(rule)
    return rule


def copy_rule(
    torch_type: type, flax_type: type, fields: tuple[str, ...], example_args: Callable[[nn.Module], tuple]
) -> Rule:
    """Register a rule for twins whose constructor arguments `fields` share names and meaning.

    Arguments that are modules themselves (`Seq2Seq(encoder, decoder)`) are converted with their
    own rules. PyTorch's parameter dtype becomes `param_dtype`; PyTorch modules whose
    constructor takes no `dtype=` are cast by `to_torch` after construction.
    """
    takes_dtype = "dtype" in inspect.signature(torch_type).parameters

    def convert(value, direction):
        if isinstance(value, (torch.nn.Module, nn.Module)):
            return getattr(find_rule(value), direction)(value)
        return value

    def to_flax(module):
        config = {f: convert(getattr(module, f), "to_flax") for f in fields}
        if "param_dtype" in {f.name for f in dataclasses.fields(flax_type)}:
            config["param_dtype"] = jnp.dtype(module_dtype(module))
        return flax_type(**config)

    def to_torch(module):
        config = {f: convert(getattr(module, f), "to_torch") for f in fields}
        if takes_dtype:
            config["dtype"] = torch_dtype(module.param_dtype)
        return torch_type(**config)

    return register(Rule(torch_type, flax_type, to_flax, to_torch, example_args))


def find_rule(module) -> Rule:
    """The rule whose torch or flax class is `type(module)` (or its nearest base class)."""
    return rules.find(_RULES, module, lambda r: (r.torch_type, r.flax_type), "parity.register")


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype of a numpy/JAX dtype."""
    return getattr(torch, np.dtype(dtype).name)


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype of a torch dtype."""
    return np.dtype(str(dtype).removeprefix("torch."))


def module_dtype(module: torch.nn.Module) -> np.dtype:
    """The dtype of a PyTorch module's parameters (float32 when it has none)."""
    param = next(module.parameters(), None)
    return np.dtype("float32") if param is None else numpy_dtype(param.dtype)


def torch_name(flax_path: tuple[str, ...]) -> tuple[str, bool]:
    """Flax parameter path -> (PyTorch state_dict key, transposed?)."""
    *prefix, leaf = flax_path
    leaf, transposed = LEAF_RULES.get(leaf, (leaf, False))
    return ".".join([*prefix, leaf]), transposed


def expected_params(flax_module: nn.Module) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """The flat parameter tree of `flax_module`: path -> shape and dtype, computed abstractly."""
    args = find_rule(flax_module).example_args(flax_module)
    shapes = jax.eval_shape(lambda: flax_module.init(jax.random.key(0), *args))
    return flatten_dict(shapes["params"])


def to_state_dict(flax_module, variables: Mapping | None = None) -> dict[str, np.ndarray]:
    """flaxseq variables (linen), or an NNX module's parameters -> PyTorch state_dict of numpy
    arrays (dtype kept).

    linen: works for any pytree with the parameter structure, gradients included.
    """
    if isinstance(flax_module, nnx.Module):
        return parity_nnx.to_state_dict(flax_module)
    del flax_module  # the names alone decide; kept for symmetry with `from_state_dict`
    state_dict = {}
    for path, value in flatten_dict(variables["params"]).items():
        name, transposed = torch_name(path)
        value = np.asarray(value)
        state_dict[name] = value.T if transposed else value
    return state_dict


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def check_state_dict(expected: Mapping[str, Any], state_dict: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """`state_dict` against `expected` (PyTorch's key -> shape in PyTorch's layout): the values
    as numpy arrays, and every problem: missing, unexpected, non-floating (integer, boolean),
    misshaped keys, and float64 while JAX's x64 mode is off (JAX would silently give float32)."""
    problems, values = [], {}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    for key in sorted(set(expected) & set(state_dict)):
        value = _as_numpy(state_dict[key])
        if not jnp.issubdtype(value.dtype, jnp.floating):
            problems.append(f"{key}: expected floating-point weights, got dtype {value.dtype}")
        elif value.shape != tuple(expected[key]):
            problems.append(f"{key}: expected shape {tuple(expected[key])}, got {value.shape}")
        elif value.dtype == np.float64 and not jax.config.jax_enable_x64:
            problems.append(
                f"{key}: float64 needs JAX's x64 mode, which is off "
                "(jax.config.update('jax_enable_x64', True)); JAX would give float32"
            )
        else:
            values[key] = value
    return values, problems


def from_state_dict(module, state_dict: Mapping[str, Any]):
    """PyTorch state_dict (torch tensors or numpy arrays) -> the module's parameters.

    linen: returns the variables `{'params': ...}`. NNX (`flaxseq.nnx`): fills the module's
    parameters in place and returns the module. Strict: every missing, unexpected, misshaped
    and non-floating key is collected and raised at once in a `ValueError` naming each. The
    arrays keep their dtype; float64 while JAX's x64 mode is off is an error.
    """
    if isinstance(module, nnx.Module):
        return parity_nnx.from_state_dict(
            module, state_dict,
            problems_of=lambda expected, sd: check_state_dict({k: v.shape for k, v in expected.items()}, sd),
        )
    expected = expected_params(module)
    by_key = {}
    for path, spec in expected.items():
        key, transposed = torch_name(path)
        by_key[key] = (path, transposed, tuple(spec.shape)[::-1] if transposed else tuple(spec.shape))
    values, problems = check_state_dict({k: shape for k, (_, _, shape) in by_key.items()}, state_dict)
    if problems:
        raise ValueError(f"state_dict does not match {type(module).__name__}:\n  " + "\n  ".join(problems))
    params = {}
    for key, value in values.items():
        path, transposed, _ = by_key[key]
        params[path] = jnp.asarray(value.T if transposed else value)
    return {"params": unflatten_dict(params)}


def from_torch(torch_module: torch.nn.Module, api: str = "linen"):
    """A PyTorch module -> its flaxseq twin with the same configuration and weights.

    `api="linen"`: `(module, variables)`. `api="nnx"`: the `flaxseq.nnx` module, holding the
    weights, in the torch module's mode (training or evaluation).
    """
    if api == "nnx":
        return parity_nnx.from_torch(torch_module, from_state_dict)
    if api != "linen":
        raise ValueError(f"api must be 'linen' or 'nnx', got {api!r}")
    flax_module = find_rule(torch_module).to_flax(torch_module)
    return flax_module, from_state_dict(flax_module, torch_module.state_dict())


def to_torch(flax_module, variables: Mapping | None = None) -> torch.nn.Module:
    """flaxseq module and variables (linen), or an NNX module alone -> the PyTorch module with
    the same configuration and weights (and, from NNX, mode)."""
    if isinstance(flax_module, nnx.Module):
        return parity_nnx.to_torch(flax_module)
    torch_module = find_rule(flax_module).to_torch(flax_module)
    state_dict = {k: torch.from_numpy(np.array(v)) for k, v in to_state_dict(flax_module, variables).items()}
    dtypes = {v.dtype for v in state_dict.values()}
    if len(dtypes) == 1:
        torch_module = torch_module.to(dtypes.pop())
    torch_module.load_state_dict(state_dict, strict=True)
    return torch_module
