"""Two-way weight conversion between PyTorch modules and flaxseq modules.

Parameter names follow one convention in both frameworks: a Flax submodule has the attribute
name of its PyTorch twin, so `fc.weight` is `params['fc']['kernel']` and `lstm.weight_ih_l0` is
`params['lstm']['weight_ih_l0']`. Converting is then a table of leaf renames
(`parity.rules.LEAF_RULES`), with a transpose for `nn.Dense` kernels, and no arithmetic on
weights. Any module whose names agree converts by `from_state_dict(module, state_dict,
example_args)` without a rule.

Building a module from the other framework's configuration needs a rule per class: `register`
one for your own modules (`copy_rule` where the constructor arguments agree), as
`parity/layers.py` and `parity/modules.py` do for flaxseq's.
"""

import dataclasses
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict

import parity.nnx as parity_nnx
from flaxseq.torch_file import load_torch_state_dict
from parity import rules
from parity import ties as tying
from parity.arrays import numpy_dtype, to_numpy, to_tensor, torch_dtype
from parity.rules import torch_name


@dataclass(frozen=True)
class Rule:
    """How to build one framework's module from the other's, for one pair of classes.

    Attributes:
      torch_type, flax_type: the pair of classes.
      to_flax: PyTorch module -> flaxseq module with the same configuration.
      to_torch: flaxseq module -> PyTorch module with the same configuration (any weights).
      example_args: flaxseq module -> positional arguments that `module.init` accepts, used to
        learn the parameter tree's names and shapes without computing anything; None where the
        module has no parameters.
      ties: PyTorch's alias -> parameter, for a twin holding one parameter under both names
        (`{"decoder.weight": "encoder.weight"}`), as `parity.ties` describes.
    """

    torch_type: type
    flax_type: type
    to_flax: Callable[[torch.nn.Module], nn.Module]
    to_torch: Callable[[nn.Module], torch.nn.Module]
    example_args: Callable[[nn.Module], tuple | None]
    ties: Mapping[str, str] = field(default_factory=dict)


_RULES: list[Rule] = []


def register(rule: Rule) -> Rule:
    """Add the rule for the pair `rule.torch_type`, `rule.flax_type` (replacing one for the
    same pair). `from_torch` then converts `torch_type` by it; `to_torch` keeps building from
    `flax_type` by the first rule registered for it (`parity.rules.find`), so a rule pointing a
    subclass of `torch.nn.LSTM` at `flaxseq.LSTM` changes neither the conversion of
    `torch.nn.LSTM` nor what `to_torch(flaxseq.LSTM(...))` builds."""
    rules.replace_or_add(_RULES, rule, lambda r: (r.torch_type, r.flax_type))
    return rule


def field_getters(fields: tuple[str, ...] | Mapping[str, str | Callable]) -> dict[str, Callable]:
    """Constructor argument -> a function of the PyTorch module giving it: `fields` names
    attributes the module keeps, or maps each argument to an attribute name or a function."""
    if isinstance(fields, Mapping):
        return {f: (lambda m, g=g: getattr(m, g)) if isinstance(g, str) else g for f, g in fields.items()}
    return {f: (lambda m, f=f: getattr(m, f)) for f in fields}


def copy_rule(
    torch_type: type, flax_type: type, fields: tuple[str, ...] | Mapping[str, str | Callable],
    example_args: Callable[[nn.Module], tuple | None], *, ties: Mapping[str, str] | None = None,
) -> Rule:
    """Register a rule for twins whose constructor arguments `fields` share names and meaning.

    `fields`: the names of the arguments, which both modules keep as attributes; or a mapping
    from each argument to the attribute of the PyTorch module holding it, or to a function of
    the PyTorch module (`{"ninp": lambda m: m.encoder.embedding_dim, "nhid": "nhid"}`) for
    models that do not keep their arguments. The flaxseq twin keeps them as its fields.
    Arguments that are modules themselves (`Seq2Seq(encoder, decoder)`) are converted with their
    own rules. PyTorch's parameter dtype becomes `param_dtype`; PyTorch modules whose
    constructor takes no `dtype=` are cast by `to_torch` after construction. `ties`: as `Rule`.
    """
    takes_dtype = "dtype" in inspect.signature(torch_type).parameters
    getters = field_getters(fields)

    def convert(value, direction, name):
        if isinstance(value, (torch.nn.Module, nn.Module)):
            return rules.within(name, lambda: getattr(find_rule(value), direction)(value))
        return value

    def to_flax(module):
        config = {f: convert(get(module), "to_flax", f) for f, get in getters.items()}
        if "param_dtype" in {f.name for f in dataclasses.fields(flax_type)}:
            config["param_dtype"] = jnp.dtype(module_dtype(module))
        return flax_type(**config)

    def to_torch(module):
        config = {f: convert(getattr(module, f), "to_torch", f) for f in getters}
        if takes_dtype:
            config["dtype"] = torch_dtype(module.param_dtype)
        return torch_type(**config)

    return register(Rule(torch_type, flax_type, to_flax, to_torch, example_args, dict(ties or {})))


def find_rule(module) -> Rule:
    """The rule for `type(module)` (or its nearest base class), a PyTorch module or a twin
    (`parity.rules.find`)."""
    is_torch = isinstance(module, torch.nn.Module)
    return rules.find(_RULES, module, (lambda r: r.torch_type) if is_torch else (lambda r: r.flax_type),
                      "parity.register", latest=is_torch)


def _rule_ties(module) -> dict[str, str]:
    try:
        return dict(find_rule(module).ties)
    except TypeError:  # no rule: no ties but those given
        return {}


def module_dtype(module: torch.nn.Module) -> np.dtype:
    """The dtype of a PyTorch module's parameters (float32 when it has none)."""
    param = next(module.parameters(), None)
    return np.dtype("float32") if param is None else numpy_dtype(param.dtype)


def expected_params(flax_module: nn.Module, example_args: tuple | None = None) -> dict[tuple, jax.ShapeDtypeStruct]:
    """The flat parameter tree of `flax_module`: path -> shape and dtype, computed abstractly
    from `example_args` (the call's positional arguments), or from its rule's."""
    if example_args is None:
        try:
            rule = find_rule(flax_module)
        except TypeError as error:
            raise TypeError(
                f"{type(flax_module).__name__}: pass example_args=(the call's positional arguments, e.g. a batch), "
                f"from which the parameters' names and shapes are learnt, or register a rule ({error})"
            ) from None
        example_args = rule.example_args(flax_module)
        if example_args is None:  # no parameters
            return {}
    if not isinstance(example_args, tuple):
        raise TypeError(
            f"example_args must be a tuple of the call's positional arguments, got {type(example_args).__name__}"
        )
    key = jax.random.key(0)
    shapes = jax.eval_shape(lambda: flax_module.init({"params": key, "dropout": key}, *example_args))
    return flatten_dict(shapes.get("params", {}))


def to_state_dict(flax_module, variables: Mapping | None = None, *, ties: Mapping[str, str] | None = None
                  ) -> dict[str, np.ndarray]:
    """flaxseq variables (linen), or an NNX module's parameters -> PyTorch state_dict of numpy
    arrays (dtype kept).

    linen: works for any pytree with the parameter structure, gradients included. `ties`
    (alias -> parameter, beside the rule's) adds each alias with its parameter's array, as
    PyTorch's `state_dict` gives both names.
    """
    ties = {**_rule_ties(flax_module), **(ties or {})}
    if isinstance(flax_module, nnx.Module):
        return parity_nnx.to_state_dict(flax_module, ties=ties)
    state_dict = {}
    for path, value in flatten_dict(variables["params"]).items():
        value = np.asarray(value)
        name, transposed = torch_name(path, value.ndim)
        state_dict[name] = value.T if transposed else value
    return tying.with_aliases(state_dict, ties)


def read_state_dict(state_dict_or_path) -> Mapping[str, Any]:
    """A state_dict given as a mapping, or the path of a file `torch.save` wrote (read by
    `flaxseq.load_torch_state_dict`)."""
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        return load_torch_state_dict(state_dict_or_path)
    if not isinstance(state_dict_or_path, Mapping):
        raise TypeError(
            f"state_dict must be a mapping of names to arrays or the path of a torch.save file, "
            f"got {type(state_dict_or_path).__name__}"
        )
    return state_dict_or_path


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
    problems += _list_names_hint(missing, unexpected)
    problems += _unexpected_hints(expected, state_dict, missing, unexpected)
    needs_x64 = []
    for key in sorted(set(expected) & set(state_dict)):
        value = to_numpy(state_dict[key])
        if not jnp.issubdtype(value.dtype, jnp.floating):
            problems.append(f"{key}: expected floating-point weights, got dtype {value.dtype}")
        elif value.shape != tuple(expected[key]):
            problems.append(f"{key}: expected shape {tuple(expected[key])}, got {value.shape}")
        elif value.dtype == np.float64 and not jax.config.jax_enable_x64:
            needs_x64.append(key)
        else:
            values[key] = value
    if needs_x64:  # one line for them all
        more = f" and {len(needs_x64) - 1} more keys" if len(needs_x64) > 1 else ""
        problems.append(
            f"{needs_x64[0]}{more}: float64 needs JAX's x64 mode, which is off "
            "(jax.config.update('jax_enable_x64', True)); JAX would give float32. Or convert a float32 "
            "model (model.float())"
        )
    return values, problems


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # nn.DataParallel / DistributedDataParallel, torch.compile
_BUFFER_NAMES = ("running_mean", "running_var", "num_batches_tracked")


def _unexpected_hints(expected: Mapping, state_dict: Mapping, missing: list[str], unexpected: list[str]) -> list[str]:
    """Hints for unexpected keys: a wrapper's prefix on every key, a tie (an unexpected key
    holding the same array as an expected one), a buffer (not converted)."""
    hints = []
    for prefix in _WRAPPER_PREFIXES:
        if unexpected and all(key.startswith(prefix) for key in unexpected) and any(
                key[len(prefix):] in expected for key in unexpected):
            hints.append(f"hint: every unexpected key starts with {prefix!r}, the prefix of a wrapper "
                         "(nn.DataParallel, DistributedDataParallel: 'module.'; torch.compile: '_orig_mod.'); "
                         f"convert the wrapped module, or strip the prefix: {{k.removeprefix({prefix!r}): v ...}}")
    expected_present = [key for key in expected if key in state_dict]
    for key in unexpected:
        value = to_numpy(state_dict[key])
        if value.size < 2 or np.all(value == value.flat[0]):  # a constant (zeros, ones) says nothing of a tie
            continue
        twin = next((other for other in expected_present if np.shape(state_dict[other]) == value.shape
                     and np.array_equal(to_numpy(state_dict[other]), value)), None)
        if twin is not None:
            hints.append(f"hint: {key} holds the same array as {twin}; if the two are tied, pass "
                         f"ties={{{key!r}: {twin!r}}}")
    buffers = [key for key in unexpected if key.rsplit(".", 1)[-1] in _BUFFER_NAMES]
    if buffers:
        hints.append(f"hint: {', '.join(buffers)} are buffers (batch norm's statistics), which are not "
                     "converted: a twin holds parameters only")
    return hints


def _list_names_hint(missing: list[str], unexpected: list[str]) -> list[str]:
    """A hint where missing keys are unexpected ones with `_i` for `.i` (`layers_0.weight` for
    `layers.0.weight`): linen's names for a list attribute's submodules against PyTorch's
    `nn.ModuleList`'s; else nothing."""
    as_torch = {re.sub(r"_(\d+)(?=\.)", r".\1", key): key for key in missing}
    pairs = [(as_torch[key], key) for key in unexpected if key in as_torch]
    if not pairs:
        return []
    ours, theirs = pairs[0]
    name = re.match(r"(.*?)_\d+\.", ours).group(1)
    return [
        f"hint: {len(pairs)} missing keys differ from unexpected ones by '_i' for '.i' (the twin's {ours} for "
        f"PyTorch's {theirs}): linen names a list attribute's submodules {name}_0, {name}_1, ..., PyTorch's "
        f"nn.ModuleList {name}.0, {name}.1, ...; give the submodules PyTorch's names (name=f'{name}.{{i}}' in "
        "an nn.compact call), or use NNX, whose nnx.List keeps them"
    ]


def from_state_dict(module, state_dict, example_args: tuple | None = None, *,
                    ties: Mapping[str, str] | None = None):
    """A PyTorch state_dict (a mapping of torch tensors or numpy arrays, or the path of a file
    `torch.save` wrote) -> the module's parameters, for any module whose names agree.

    linen: returns the variables `{'params': ...}`. The parameter tree is learnt from
    `example_args` (the call's positional arguments, e.g. `(ids,)`), or, without them, from the
    module's registered rule. NNX: fills the module's parameters in place and returns it.
    PyTorch's names follow from the twin's by `parity.rules.LEAF_RULES`, which covers flax's own
    `nn.Dense`, `nn.Embed` and `nn.LayerNorm` as well as flaxseq's modules. `ties` (alias ->
    parameter, beside the rule's and, in NNX, the module's shared parameters): each alias is
    checked equal to its parameter and not loaded twice.

    Strict: every missing, unexpected, misshaped and non-floating key is collected and raised at
    once in a `ValueError` naming each. The arrays keep their dtype; float64 while JAX's x64
    mode is off is an error.
    """
    state_dict = read_state_dict(state_dict)
    ties = {**_rule_ties(module), **(ties or {})}
    if isinstance(module, nnx.Module):
        return parity_nnx.from_state_dict(module, state_dict, ties=ties, problems_of=check_state_dict)
    by_key = {}
    for path, spec in expected_params(module, example_args).items():
        key, transposed = torch_name(path, len(spec.shape))
        by_key[key] = (path, transposed, tuple(spec.shape)[::-1] if transposed else tuple(spec.shape))
    expected = {k: shape for k, (_, _, shape) in by_key.items()}
    state_dict, tie_problems = tying.split_aliases(expected, state_dict, ties, to_numpy)
    values, problems = check_state_dict(expected, state_dict)
    problems = tie_problems + problems
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
    weights, in the torch module's mode (training or evaluation). Parameters sharing storage in
    the torch module (`decoder.weight = encoder.weight`) become the twin's one parameter.
    """
    if api not in ("linen", "nnx"):
        raise ValueError(f"api must be 'linen' or 'nnx', got {api!r}")
    check_not_wrapped(torch_module)
    check_no_hooks(torch_module)
    if api == "nnx":
        return parity_nnx.from_torch(torch_module, from_state_dict)
    flax_module = find_rule(torch_module).to_flax(torch_module)
    names = [torch_name(path, len(spec.shape))[0] for path, spec in expected_params(flax_module).items()]
    ties = tying.torch_ties(torch_module, names)
    return flax_module, from_state_dict(flax_module, torch_module.state_dict(), ties=ties)


_HOOKS = (("forward hook", "_forward_hooks"), ("forward pre-hook", "_forward_pre_hooks"),
          ("backward hook", "_backward_hooks"), ("backward pre-hook", "_backward_pre_hooks"))


def check_not_wrapped(torch_module: torch.nn.Module) -> None:
    """Refuse a wrapper (`nn.DataParallel`, `DistributedDataParallel`, `torch.compile`'s
    module), naming the wrapped model to convert instead."""
    wrapped = next((name for name in ("_orig_mod", "module") if isinstance(getattr(torch_module, name, None),
                    torch.nn.Module) and type(torch_module).__name__ in _WRAPPERS), None)
    if wrapped is not None:
        raise TypeError(f"{type(torch_module).__name__} wraps the model ({wrapped}); convert the model itself: "
                        f"parity.from_torch(model.{wrapped})")


_WRAPPERS = ("DataParallel", "DistributedDataParallel", "OptimizedModule")


def check_no_hooks(torch_module: torch.nn.Module) -> None:
    """Refuse a module that computes more than its class says, which no twin reproduces: a
    submodule with a hook (forward, forward pre-, backward, backward pre-) or a parametrized
    weight (`torch.nn.utils.parametrize`, `weight_norm`), or a global module hook. `TypeError`
    naming the submodule, the hook and how to remove it."""
    from torch.nn.modules import module as torch_modules
    from torch.nn.utils import parametrize

    for what, attribute in _HOOKS:
        if getattr(torch_modules, f"_global{attribute}", None):
            raise TypeError(f"a global module {what} is registered (torch.nn.modules.module.register_module_"
                            f"{attribute[1:-1]}): it runs in every PyTorch module and in no twin; remove it "
                            "(the handle's .remove()) before converting")
    for name, submodule in torch_module.named_modules():
        label = f"submodule {name} ({type(submodule).__name__})" if name else type(submodule).__name__
        if parametrize.is_parametrized(submodule):
            names = ", ".join(submodule.parametrizations)
            raise TypeError(f"{label}: {names} parametrized (torch.nn.utils.parametrize), which a twin does not "
                            "compute; make the weights plain first: torch.nn.utils.parametrize."
                            f"remove_parametrizations(module, {next(iter(submodule.parametrizations))!r})")
        for what, attribute in _HOOKS:
            hooks = getattr(submodule, attribute, None) or {}
            for hook in hooks.values():
                hint = ("torch.nn.utils.remove_weight_norm(module) makes the weight plain"
                        if type(hook).__name__ == "WeightNorm" else "remove it (the handle's .remove())")
                raise TypeError(f"{label} has a {what} ({getattr(hook, '__name__', type(hook).__name__)}), "
                                f"which may change what it computes and which its twin does not run; {hint} "
                                "before converting, or write a twin that does what it does")


def to_torch(flax_module, variables: Mapping | None = None, *, ties: Mapping[str, str] | None = None
             ) -> torch.nn.Module:
    """flaxseq module and variables (linen), or an NNX module alone -> the PyTorch module with
    the same configuration and weights (and, from NNX, mode). `ties` (alias -> parameter,
    beside the rule's and, in NNX, the module's shared parameters) are tied again: the alias is
    the very `Parameter` of its target."""
    ties = {**_rule_ties(flax_module), **(ties or {})}
    if isinstance(flax_module, nnx.Module):
        return parity_nnx.to_torch(flax_module, ties=ties)
    torch_module = find_rule(flax_module).to_torch(flax_module)
    state_dict = {k: to_tensor(v) for k, v in to_state_dict(flax_module, variables, ties=ties).items()}
    dtypes = {v.dtype for v in state_dict.values()}
    if len(dtypes) == 1:
        torch_module = torch_module.to(dtypes.pop())
    torch_module.load_state_dict(state_dict, strict=True)
    return tying.retie(torch_module, ties)
