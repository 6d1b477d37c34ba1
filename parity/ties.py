"""Tied parameters: one parameter under two (or more) PyTorch names.

A tie is a mapping `alias -> parameter` of PyTorch state_dict keys, e.g.
`{"decoder.weight": "encoder.weight"}` for a decoder whose weight is the embedding's. The twin
holds the parameter once (`Embedding.attend`, or one `nnx.Param` in two places); PyTorch's
`state_dict` has both names, with the same values, and its gradient is the sum over both uses.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch


def torch_ties(module: torch.nn.Module, parameters: Iterable[str]) -> dict[str, str]:
    """The ties of a PyTorch module: every state_dict key sharing storage (the same elements,
    shape and strides) with exactly one key of `parameters` (the twin's own) is its alias."""
    parameters = set(parameters)
    groups: dict[tuple, list[str]] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if tensor.numel():
            where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                     tuple(tensor.stride()), tensor.dtype)
            groups.setdefault(where, []).append(name)
    ties = {}
    for names in groups.values():
        owners = [name for name in names if name in parameters]
        if len(names) > 1 and len(owners) == 1:
            ties.update({name: owners[0] for name in names if name != owners[0]})
    return ties


def split_aliases(
    expected: Mapping[str, tuple], state_dict: Mapping[str, Any], ties: Mapping[str, str], as_numpy
) -> tuple[dict, list[str]]:
    """`state_dict` without the aliases of `ties`, and the problems of each tie: an alias that
    is a parameter itself, a parameter that is not one of `expected` (PyTorch key -> shape), an
    alias whose shape or values differ from its parameter's."""
    problems = _untied_problems(expected, state_dict, ties)
    state_dict = dict(state_dict)
    for alias, target in ties.items():
        if alias in expected:
            problems.append(f"ties: {alias} is a parameter of the module itself, not an alias of {target}")
            continue
        if target not in expected:
            problems.append(f"ties: {alias} is tied to {target}, which is not a parameter of the module")
            continue
        if alias not in state_dict:
            continue
        value = as_numpy(state_dict.pop(alias))
        if target not in state_dict:
            continue
        shape = tuple(expected[target])
        if value.shape != shape:
            problems.append(f"ties: {alias} has shape {value.shape}, but {target}, to which it is tied, {shape}")
        elif not np.array_equal(value, as_numpy(state_dict[target])):
            problems.append(f"ties: {alias} differs from {target}, to which it is tied")
    return state_dict, problems


def _untied_problems(expected: Mapping[str, tuple], state_dict: Mapping[str, Any], ties: Mapping[str, str]
                     ) -> list[str]:
    """A problem for each tensor of `state_dict` under two or more names that the twin holds as
    parameters of its own (`expected`, less the aliases of `ties`): tied in PyTorch, the twin
    would train them apart. One tensor: the same storage, offset, shape and strides (torch), or
    the same array (numpy, as `flaxseq.load_torch_state_dict` gives a tied tensor)."""
    groups: dict[Any, list[str]] = {}
    for name, value in state_dict.items():
        if name not in expected or name in ties or _is_empty(value):
            continue
        groups.setdefault(_storage_key(value), []).append(name)
    problems = []
    for names in groups.values():
        if len(names) > 1:
            target, aliases = names[0], names[1:]
            declared = ", ".join(f"'{alias}': '{target}'" for alias in aliases)
            problems.append(
                f"ties: {', '.join(names)} are one tensor in the state_dict (tied in PyTorch), but the twin holds "
                f"them as {len(names)} parameters: hold it once (flaxseq.basic.TiedLinear, or one nnx.Param in "
                f"every place) and declare the tie, ties={{{declared}}}"
            )
    return problems


def _is_empty(value) -> bool:
    return (value.numel() if isinstance(value, torch.Tensor) else np.size(value)) == 0


def _storage_key(value):
    """What makes two state_dict values one tensor."""
    if isinstance(value, torch.Tensor):
        return ("torch", value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                tuple(value.stride()), value.dtype)
    return ("object", id(value))


def with_aliases(state_dict: dict, ties: Mapping[str, str]) -> dict:
    """`state_dict` with each alias of `ties` added, the same array as its parameter's (as
    PyTorch's `state_dict` gives both names)."""
    missing = sorted(target for target in ties.values() if target not in state_dict)
    if missing:
        raise ValueError(f"ties: not parameters of the module: {', '.join(missing)}")
    return {**state_dict, **{alias: state_dict[target] for alias, target in ties.items()}}


def retie(module: torch.nn.Module, ties: Mapping[str, str]) -> torch.nn.Module:
    """Make each alias of `ties` the very `Parameter` of its target, as `decoder.weight =
    encoder.weight` does; returns `module`."""
    for alias, target in ties.items():
        owner, _, attribute = alias.rpartition(".")
        setattr(module.get_submodule(owner), attribute, module.get_parameter(target))
    return module
