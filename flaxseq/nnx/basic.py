"""The twins of `torch.nn`'s common modules in NNX, with PyTorch's constructor arguments,
parameter names, layouts, initialisation and arithmetic: `Linear`, `Embedding`, `LayerNorm`,
`Dropout`, `Sequential`, `Identity` and the activations.

`linear.weight [out, in]`, `linear.bias [out]`; `embedding.weight [num, features]`;
`norm.weight`, `norm.bias [*normalized_shape]`, as in PyTorch, so `nnx.state(model, nnx.Param)`
reads like `model.state_dict()`.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flaxseq import checks
from flaxseq.basic import attend, check_approximate, check_ids, layer_norm, lookup, normalized_shape
from flaxseq.init import linear_uniform
from flaxseq.nnx.recurrent import require_rngs
from flaxseq.products import affine


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
            given = x.shape[-1] if x.ndim else "a scalar"
            raise ValueError(f"{checks.class_name(self)}: input.size(-1) must be equal to in_features. "
                             f"Expected {self.in_features}, got {given}")
        weight = self.weight[...]
        dtype = self.dtype or jnp.result_type(x, weight)
        lead = x.shape[:-1]
        # one 2-D product whatever the rank, then the leading axes back
        bias = jnp.asarray(self.bias[...], dtype) if hasattr(self, "bias") else None
        y = affine(jnp.asarray(x, dtype).reshape(-1, self.in_features), jnp.asarray(weight, dtype).T, bias)
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
        return attend(self.weight[...], x, self.dtype)


class LayerNorm(nnx.Module):
    """The twin of `torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)`.

    `y = (x - mean) / sqrt(var + eps) * weight + bias` over the trailing `normalized_shape`
    axes, the variance biased; `weight` (ones) and `bias` (zeros) of `normalized_shape`, absent
    without `elementwise_affine` (and `bias` without `bias`). It draws nothing: `rngs` is
    taken, as by the other modules and flax's `nnx.LayerNorm`, and not used.

    >>> norm = LayerNorm(64)
    """

    def __init__(
        self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True,
        bias: bool = True, *, rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
    ):
        del rngs  # no random initialisation
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        for size in shape:
            checks.check_int("normalized_shape", size, 1)
        checks.check_x64(param_dtype)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        self.param_dtype, self.dtype = param_dtype, dtype
        if elementwise_affine:
            self.weight = nnx.Param(jnp.ones(shape, param_dtype))
            if bias:
                self.bias = nnx.Param(jnp.zeros(shape, param_dtype))

    def __call__(self, x) -> jax.Array:
        x = checks.as_float_array("input", x)
        normalized_shape(self.normalized_shape, x)
        weight, bias = (getattr(self, name, None) for name in ("weight", "bias"))
        return layer_norm(
            x, len(self.normalized_shape), None if weight is None else weight[...],
            None if bias is None else bias[...], self.eps, self.dtype,
        )


class Dropout(nnx.Dropout):
    """The twin of `torch.nn.Dropout(p=0.5)`: `flax.nnx.Dropout` with PyTorch's argument name.

    Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)` in training
    mode (when new, or after `.train()`); the identity after `.eval()`.

    >>> drop = Dropout(0.2, rngs=nnx.Rngs(0))
    """

    def __init__(self, p: float = 0.5, *, rngs: nnx.Rngs | None = None):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p!r}")
        super().__init__(p, rngs=require_rngs(self, rngs))
        self.p = p


class Sequential(nnx.Module):
    """The twin of `torch.nn.Sequential(*layers)`: the layers applied in order, held as
    attributes `0`, `1`, … as PyTorch names them (`0.weight`).

    >>> mlp = Sequential(Linear(8, 16, rngs=rngs), Tanh(), Linear(16, 4, rngs=rngs))
    """

    def __init__(self, *layers: Callable):
        self.size = len(layers)
        for index, layer in enumerate(layers):
            setattr(self, str(index), layer)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        return getattr(self, str(range(self.size)[index]))

    def __call__(self, x):
        for index in range(self.size):
            x = getattr(self, str(index))(x)
        return x


class Identity(nnx.Module):
    """The twin of `torch.nn.Identity`: `x -> x`."""

    def __call__(self, x):
        return x


class Tanh(nnx.Module):
    """The twin of `torch.nn.Tanh`."""

    def __call__(self, x):
        return jnp.tanh(x)


class ReLU(nnx.Module):
    """The twin of `torch.nn.ReLU`."""

    def __call__(self, x):
        return jax.nn.relu(x)


class Sigmoid(nnx.Module):
    """The twin of `torch.nn.Sigmoid`."""

    def __call__(self, x):
        return jax.nn.sigmoid(x)


class GELU(nnx.Module):
    """The twin of `torch.nn.GELU(approximate='none')`: exact (erf) unless `approximate='tanh'`."""

    def __init__(self, approximate: str = "none"):
        check_approximate(approximate)
        self.approximate = approximate

    def __call__(self, x):
        return jax.nn.gelu(x, approximate=self.approximate == "tanh")


