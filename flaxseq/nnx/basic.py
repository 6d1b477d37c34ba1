"""`Linear` and `Embedding` as NNX modules with PyTorch's layout, initialisation and semantics.

`linear.weight [out, in]`, `linear.bias [out]`; `embedding.weight [num, features]`, as in
PyTorch, so `nnx.state(model, nnx.Param)` reads like `model.state_dict()`.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flaxseq import checks
from flaxseq.basic import check_ids, lookup
from flaxseq.init import linear_uniform
from flaxseq.nnx.recurrent import require_rngs


class Linear(nnx.Module):
    """`y = x W^T + b`, the twin of `torch.nn.Linear(in_features, out_features, bias=True)`.

    `weight: [out_features, in_features]`, `bias: [out_features]`, both from
    U(-1/sqrt(in), 1/sqrt(in)) unless `weight_init` / `bias_init` are given, each called as
    `init(key, shape, dtype)` with PyTorch's shape. `x: [..., in_features] -> [..., out_features]`.

    >>> linear = Linear(8, 5, rngs=nnx.Rngs(0))
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, rngs: nnx.Rngs | None = None,
        param_dtype: Any = jnp.float32, dtype: Any = None, weight_init: Callable | None = None,
        bias_init: Callable | None = None,
    ):
        checks.check_int("in_features", in_features, 0)
        checks.check_int("out_features", out_features, 0)
        rngs = require_rngs(self, rngs)
        checks.check_x64(param_dtype)
        self.in_features, self.out_features = in_features, out_features
        self.param_dtype, self.dtype = param_dtype, dtype
        default = linear_uniform(in_features)
        self.weight = nnx.Param((weight_init or default)(rngs.params(), (out_features, in_features), param_dtype))
        if bias:
            self.bias = nnx.Param((bias_init or default)(rngs.params(), (out_features,), param_dtype))

    def __call__(self, x) -> jax.Array:
        x = checks.as_float_array("input", x)
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"input.size(-1) must be equal to in_features. Expected {self.in_features}, got {x.shape[-1:]}"
            )
        weight = self.weight[...]
        dtype = self.dtype or jnp.result_type(x, weight)
        lead = x.shape[:-1]
        # one 2-D product whatever the rank, then the leading axes back
        y = jnp.asarray(x, dtype).reshape(-1, self.in_features) @ jnp.asarray(weight, dtype).T
        if hasattr(self, "bias"):
            y = y + jnp.asarray(self.bias[...], dtype)
        return y.reshape(*lead, self.out_features)


class Embedding(nnx.Module):
    """Lookup table, the twin of `torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None)`.

    `weight: [num_embeddings, embedding_dim]` from N(0, 1) (or `weight_init(key, shape, dtype)`),
    the `padding_idx` row (negative counts from the end) starting at zero and receiving no
    gradient. `embedding(ids)`: `[...] integers -> [..., embedding_dim]`, ids checked as
    `flaxseq.basic.Embedding` checks them. `embedding.attend(x)`: `x [..., embedding_dim] ->
    [..., num_embeddings]`, the table as a decoder (`x W^T`), for tied weights.

    >>> embedding = Embedding(1000, 64, padding_idx=0, rngs=nnx.Rngs(0))
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
        rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
        weight_init: Callable | None = None,
    ):
        checks.check_int("num_embeddings", num_embeddings, 1)
        checks.check_int("embedding_dim", embedding_dim, 1)
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(
                f"padding_idx must be within [-num_embeddings, num_embeddings) = "
                f"[{-num_embeddings}, {num_embeddings}), got {padding_idx}"
            )
        rngs = require_rngs(self, rngs)
        checks.check_x64(param_dtype)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        self.param_dtype, self.dtype = param_dtype, dtype
        shape = (num_embeddings, embedding_dim)
        table = weight_init(rngs.params(), shape, param_dtype) if weight_init else jax.random.normal(
            rngs.params(), shape, param_dtype
        )
        if self.padding_idx is not None:
            table = table.at[self.padding_idx].set(0)
        self.weight = nnx.Param(table)

    def __call__(self, ids) -> jax.Array:
        ids = check_ids("ids", ids, self.num_embeddings)
        return lookup(self.weight[...], ids, self.padding_idx, self.dtype)

    def attend(self, x) -> jax.Array:
        x = checks.as_float_array("input", x)
        weight = self.weight[...]
        dtype = self.dtype or jnp.result_type(x, weight)
        return jnp.asarray(x, dtype) @ jnp.asarray(weight, dtype).T


