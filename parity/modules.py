"""Conversion rules for `torch.nn`'s common modules, both ways, in linen and in NNX.

`Linear`, `Embedding` (with `padding_idx`), `LayerNorm`, `Dropout`, `Identity`, `Tanh`,
`ReLU`, `Sigmoid`, `GELU` and `Sequential` of convertible modules. Their twins are flaxseq's
own: `flaxseq.basic` in linen, with flax-style arguments (`Linear(features)`, and the twin of
`Dropout(p)` is `flax.linen.Dropout(p)`), and `flaxseq.nnx` with PyTorch's (`Linear(in_features,
out_features)`, `LayerNorm(normalized_shape, eps)`, `Dropout(p)`). A `Sequential`'s children keep
PyTorch's names `0`, `1`, … in the converted tree.
"""

import flax.linen as nn
import jax.numpy as jnp
import torch
from flax import nnx

import flaxseq.nnx as fnnx
from flaxseq import basic
from parity import rules
from parity.convert import Rule, find_rule, module_dtype, register, torch_dtype
from parity.nnx import NNXRule, find_nnx_rule, register_nnx


def _param_dtype(module: torch.nn.Module):
    return jnp.dtype(module_dtype(module))


def _nnx_torch_dtype(module) -> dict:
    params = nnx.to_flat_state(nnx.state(module, nnx.Param))
    return {"dtype": torch_dtype(params[0][1][...].dtype)} if params else {}


def _needs(module, field: str, value):
    if value is None:
        raise TypeError(
            f"{type(module).__name__}: {field} is None, so the parameters' shapes are not in its configuration; "
            f"give {field}= to convert it, or pass example_args to parity.from_state_dict"
        )
    return value


def _check_embedding(module: torch.nn.Embedding) -> torch.nn.Embedding:
    unsupported = {"max_norm": module.max_norm is not None, "scale_grad_by_freq": module.scale_grad_by_freq,
                   "sparse": module.sparse}
    if any(unsupported.values()):
        options = ", ".join(name for name, used in unsupported.items() if used)
        raise ValueError(f"torch.nn.Embedding with {options} has no flaxseq twin (padding_idx is supported)")
    return module


def _check_sequential(module: torch.nn.Sequential) -> list[torch.nn.Module]:
    names = [name for name, _ in module.named_children()]
    if names != [str(i) for i in range(len(names))]:
        raise ValueError(
            f"torch.nn.Sequential: children must be named 0, 1, … as Sequential(*modules) names them, "
            f"got {names}; write a module with those attributes and convert it with parity.from_state_dict"
        )
    return list(module)


def _linear_twin(module: torch.nn.Linear) -> basic.Linear:
    return basic.Linear(module.out_features, module.bias is not None, param_dtype=_param_dtype(module),
                        in_features=module.in_features)


def _layer_norm_twin(module: torch.nn.LayerNorm) -> basic.LayerNorm:
    return basic.LayerNorm(module.eps, module.bias is not None, module.weight is not None,
                           tuple(module.normalized_shape), param_dtype=_param_dtype(module))


def _layer_norm_torch(module: basic.LayerNorm) -> torch.nn.LayerNorm:
    if module.use_bias and not module.use_scale:
        raise ValueError(
            "LayerNorm(use_bias=True, use_scale=False) has no torch.nn.LayerNorm twin (no bias without weight)"
        )
    shape = _needs(module, "normalized_shape", module.normalized_shape)
    return torch.nn.LayerNorm(shape, module.epsilon, elementwise_affine=module.use_scale, bias=module.use_bias,
                              dtype=torch_dtype(module.param_dtype))


def _sequential_args(module: basic.Sequential):
    for layer in module.layers:
        if not isinstance(layer, nn.Module):
            return None
        args = find_rule(layer).example_args(layer)
        if args is not None:
            return args
    return None


def _layer_norm_args(module: basic.LayerNorm):
    if not (module.use_scale or module.use_bias):
        return None
    return (jnp.zeros((1, *_needs(module, "normalized_shape", module.normalized_shape)), module.param_dtype),)


def _to_torch_layer(layer) -> torch.nn.Module:
    if not isinstance(layer, (nn.Module, nnx.Module)):
        raise TypeError(f"Sequential: {layer!r} is a function, not a module; PyTorch's Sequential needs modules")
    return (find_nnx_rule if isinstance(layer, nnx.Module) else find_rule)(layer).to_torch(layer)


LINEN_RULES = [
    Rule(torch.nn.Linear, basic.Linear, _linear_twin,
         lambda m: torch.nn.Linear(_needs(m, "in_features", m.in_features), m.features, m.use_bias,
                                   dtype=torch_dtype(m.param_dtype)),
         lambda m: (jnp.zeros((1, _needs(m, "in_features", m.in_features)), m.param_dtype),)),
    Rule(torch.nn.Embedding, basic.Embedding,
         lambda m: basic.Embedding(m.num_embeddings, m.embedding_dim, _check_embedding(m).padding_idx,
                                   param_dtype=_param_dtype(m)),
         lambda m: torch.nn.Embedding(m.num_embeddings, m.features, m.padding_idx, dtype=torch_dtype(m.param_dtype)),
         lambda m: (jnp.zeros((1,), jnp.int32),)),
    Rule(torch.nn.LayerNorm, basic.LayerNorm, _layer_norm_twin, _layer_norm_torch, _layer_norm_args),
    Rule(torch.nn.Dropout, nn.Dropout, lambda m: nn.Dropout(m.p), lambda m: torch.nn.Dropout(m.rate), lambda m: None),
    Rule(torch.nn.GELU, basic.GELU, lambda m: basic.GELU(m.approximate), lambda m: torch.nn.GELU(m.approximate),
         lambda m: None),
    Rule(torch.nn.Sequential, basic.Sequential,
         lambda m: basic.Sequential(tuple(rules.within(str(i), lambda c=c: find_rule(c).to_flax(c))
                                          for i, c in enumerate(_check_sequential(m)))),
         lambda m: torch.nn.Sequential(*(rules.within(str(i), _to_torch_layer, layer)
                                         for i, layer in enumerate(m.layers))),
         _sequential_args),
]
for _name in ("Identity", "Tanh", "ReLU", "Sigmoid"):
    LINEN_RULES.append(Rule(getattr(torch.nn, _name), getattr(basic, _name), lambda m, n=_name: getattr(basic, n)(),
                            lambda m, n=_name: getattr(torch.nn, n)(), lambda m: None))


def _rngs() -> nnx.Rngs:
    return nnx.Rngs(0)


NNX_RULES = [
    NNXRule(torch.nn.Linear, fnnx.Linear,
            lambda m: fnnx.Linear(m.in_features, m.out_features, m.bias is not None, rngs=_rngs(),
                                  param_dtype=_param_dtype(m)),
            lambda m: torch.nn.Linear(m.in_features, m.out_features, hasattr(m, "bias"), **_nnx_torch_dtype(m))),
    NNXRule(torch.nn.Embedding, fnnx.Embedding,
            lambda m: fnnx.Embedding(m.num_embeddings, m.embedding_dim, _check_embedding(m).padding_idx, rngs=_rngs(),
                                     param_dtype=_param_dtype(m)),
            lambda m: torch.nn.Embedding(m.num_embeddings, m.embedding_dim, m.padding_idx, **_nnx_torch_dtype(m))),
    NNXRule(torch.nn.LayerNorm, fnnx.LayerNorm,
            lambda m: fnnx.LayerNorm(tuple(m.normalized_shape), m.eps, m.elementwise_affine, m.bias is not None,
                                     param_dtype=_param_dtype(m)),
            lambda m: torch.nn.LayerNorm(m.normalized_shape, m.eps, m.elementwise_affine, hasattr(m, "bias"),
                                         **_nnx_torch_dtype(m))),
    NNXRule(torch.nn.Dropout, fnnx.Dropout, lambda m: fnnx.Dropout(m.p, rngs=_rngs()),
            lambda m: torch.nn.Dropout(m.rate)),
    NNXRule(torch.nn.GELU, fnnx.GELU, lambda m: fnnx.GELU(m.approximate), lambda m: torch.nn.GELU(m.approximate)),
    NNXRule(torch.nn.Sequential, fnnx.Sequential,
            lambda m: fnnx.Sequential(*(rules.within(str(i), lambda c=c: find_nnx_rule(c).to_nnx(c))
                                        for i, c in enumerate(_check_sequential(m)))),
            lambda m: torch.nn.Sequential(*(rules.within(str(i), _to_torch_layer, m[i]) for i in range(len(m))))),
]
for _name in ("Identity", "Tanh", "ReLU", "Sigmoid"):
    NNX_RULES.append(NNXRule(getattr(torch.nn, _name), getattr(fnnx, _name), lambda m, n=_name: getattr(fnnx, n)(),
                             lambda m, n=_name: getattr(torch.nn, n)()))

for _rule in LINEN_RULES:
    register(_rule)
for _rule in NNX_RULES:
    register_nnx(_rule)
