"""The twins of `torch.nn`'s common modules in linen: `Linear`, `Embedding`, `LayerNorm`,
`Sequential`, `TiedLinear`, `Identity` and the activations, with PyTorch's initialisation and arithmetic.

They keep Flax's parameter names (`kernel [in, out]`, `bias`; `embedding [num, features]`;
`scale`, `bias`), so a Flax user reads them as `nn.Dense`, `nn.Embed` and `nn.LayerNorm`; the
converter maps `kernel` to PyTorch's `weight [out, in]` by a transpose, `embedding` and `scale`
to `weight` as they are. The twin of `torch.nn.Dropout(p)` is `flax.linen.Dropout(p)`.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxseq import checks
from flaxseq.init import linear_uniform
from flaxseq.products import affine


class Linear(nn.Module):
    """`y = x @ kernel + bias`, the twin of `torch.nn.Linear(in_features, features)`.

    `kernel: [in_features, features]` and `bias: [features]` from U(-1/sqrt(in), 1/sqrt(in)), as
    PyTorch's default (Kaiming-uniform with a = sqrt(5)), or from flax-style initialisers
    `kernel_init(key, [in, out], dtype)` and `bias_init(key, [out], dtype)`. `in_features`
    (None: the input's last axis, as `nn.Dense`) is checked against the input when given.
    `x: [..., in_features] -> [..., features]`.

    >>> fc = Linear(5, kernel_init=flax.linen.initializers.uniform(0.2))
    """

    features: int
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    in_features: int | None = dataclasses.field(default=None, kw_only=True)
    kernel_init: Callable | None = dataclasses.field(default=None, kw_only=True)
    bias_init: Callable | None = dataclasses.field(default=None, kw_only=True)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        checks.check_x64(self.param_dtype)
        x = checks.as_float_array("input", x)
        fan_in = x.shape[-1]
        if self.in_features is not None and fan_in != self.in_features:
            raise ValueError(
                f"{checks.module_label(self)}: input.size(-1) must be equal to in_features. "
                f"Expected {self.in_features}, got {fan_in}"
            )
        default = linear_uniform(fan_in)
        kernel = self.param("kernel", self.kernel_init or default, (fan_in, self.features), self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init or default, (self.features,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, kernel)
        # one 2-D product whatever the rank, then the leading axes back
        y = affine(jnp.asarray(x, dtype).reshape(-1, fan_in), jnp.asarray(kernel, dtype),
                   None if bias is None else jnp.asarray(bias, dtype))
        return y.reshape(*x.shape[:-1], self.features)


class Embedding(nn.Module):
    """Lookup table, the twin of `torch.nn.Embedding(num_embeddings, features, padding_idx)`.

    `embedding: [num_embeddings, features]` from N(0, 1), or `embedding_init(key, shape, dtype)`.
    With `padding_idx` (negative counts from the end, as in PyTorch) that row starts at zero and
    receives no gradient; the forward pass still reads its current value. `embed(ids)`:
    `ids: [...] integers -> [..., features]`. `embed.attend(x)`: `x: [..., features] ->
    [..., num_embeddings]`, the table as a decoder (`x @ embedding.T`, as `nn.Embed.attend`),
    for a decoder tied to the embedding.

    Ids outside `[0, num_embeddings)` raise `ValueError` where they are concrete. Under
    `jax.jit` they cannot be checked: their rows come out as NaN (never another row's values),
    so the loss turns NaN and the training loop stops on it.
    """

    num_embeddings: int
    features: int
    padding_idx: int | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    embedding_init: Callable | None = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self):
        checks.check_int("num_embeddings", self.num_embeddings, 1)
        checks.check_int("features", self.features, 1)
        if self.padding_idx is not None and not -self.num_embeddings <= self.padding_idx < self.num_embeddings:
            raise ValueError(
                f"padding_idx must be within [-num_embeddings, num_embeddings) = "
                f"[{-self.num_embeddings}, {self.num_embeddings}), got {self.padding_idx}"
            )
        super().__post_init__()

    def _init(self, key, shape, dtype):
        table = (self.embedding_init or jax.random.normal)(key, shape, dtype)
        return table if self.padding_idx is None else table.at[self.padding_idx].set(0)

    def setup(self):
        checks.check_x64(self.param_dtype)
        self.embedding = self.param("embedding", self._init, (self.num_embeddings, self.features), self.param_dtype)

    def __call__(self, ids) -> jax.Array:
        ids = check_ids("ids", ids, self.num_embeddings)
        return lookup(self.embedding, ids, self.padding_idx, self.dtype)

    def attend(self, x) -> jax.Array:
        return attend(self.embedding, x, self.dtype)


class TiedLinear(nn.Module):
    """A decoder whose weight is an embedding's table: `y = embedding.attend(x) + bias`, the
    twin of `decoder = torch.nn.Linear(features, num_embeddings)` with `decoder.weight =
    encoder.weight`. It holds only `bias: [num_embeddings]` (`bias_init`, zeros by default); the weight stays the
    embedding's one parameter, whose gradient sums both uses. `x: [..., features] ->
    [..., num_embeddings]`.

    >>> encoder = Embedding(10000, 200, name="encoder")
    >>> logits = TiedLinear(encoder, name="decoder")(hidden)  # parameters: encoder, decoder.bias
    """

    embedding: Embedding
    use_bias: bool = True
    bias_init: Callable | None = None  # None: zeros

    @nn.compact
    def __call__(self, x) -> jax.Array:
        y = self.embedding.attend(x)
        if not self.use_bias:
            return y
        bias = self.param("bias", self.bias_init or nn.initializers.zeros, (self.embedding.num_embeddings,),
                          self.embedding.param_dtype)
        return y + jnp.asarray(bias, y.dtype)


class LayerNorm(nn.Module):
    """The twin of `torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine, bias)`.

    `y = (x - mean) / sqrt(var + epsilon) * scale + bias`, mean and (biased) variance over the
    trailing axes of `normalized_shape` (None: the last axis); `scale` (ones) and `bias`
    (zeros) have that shape. `x: [..., *normalized_shape] -> same shape`.
    """

    epsilon: float = 1e-5
    use_bias: bool = True
    use_scale: bool = True
    normalized_shape: int | tuple[int, ...] | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x) -> jax.Array:
        checks.check_x64(self.param_dtype)
        x = checks.as_float_array("input", x)
        shape = normalized_shape(self.normalized_shape, x)
        scale = self.param("scale", nn.initializers.ones, shape, self.param_dtype) if self.use_scale else None
        bias = self.param("bias", nn.initializers.zeros, shape, self.param_dtype) if self.use_bias else None
        return layer_norm(x, len(shape), scale, bias, self.epsilon, self.dtype)


class Sequential(nn.Module):
    """The twin of `torch.nn.Sequential`: `layers` applied in order, the submodules named `0`,
    `1`, … as PyTorch names them (`params['0']['kernel']` is `0.weight`).

    `seq(x, *, deterministic=True)`; `deterministic` reaches the layers that take it (dropout).
    Layers may be modules or plain functions.

    >>> mlp = Sequential((Linear(16), Tanh(), Linear(4)))
    """

    layers: Sequence[Callable]

    @nn.compact
    def __call__(self, x, *, deterministic: bool = True):
        for index, layer in enumerate(self.layers):
            if isinstance(layer, nn.Module):
                layer = layer.clone(parent=self, name=str(index))
            takes = checks.parameter_names(layer)
            x = layer(x, deterministic=deterministic) if "deterministic" in takes else layer(x)
        return x


class Identity(nn.Module):
    """The twin of `torch.nn.Identity`: `x -> x`."""

    @nn.compact
    def __call__(self, x):
        return x


class Tanh(nn.Module):
    """The twin of `torch.nn.Tanh`."""

    @nn.compact
    def __call__(self, x):
        return jnp.tanh(x)


class ReLU(nn.Module):
    """The twin of `torch.nn.ReLU`."""

    @nn.compact
    def __call__(self, x):
        return jax.nn.relu(x)


class Sigmoid(nn.Module):
    """The twin of `torch.nn.Sigmoid`."""

    @nn.compact
    def __call__(self, x):
        return jax.nn.sigmoid(x)


class GELU(nn.Module):
    """The twin of `torch.nn.GELU(approximate='none')`: exact (erf) unless `approximate='tanh'`
    (note: `jax.nn.gelu`'s own default is the tanh form)."""

    approximate: str = "none"

    def __post_init__(self):
        check_approximate(self.approximate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x):
        return jax.nn.gelu(x, approximate=self.approximate == "tanh")


def check_approximate(approximate) -> None:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def normalized_shape(shape: int | Sequence[int] | None, x) -> tuple[int, ...]:
    """`LayerNorm`'s normalized shape: `shape` as a tuple (None: `x`'s last axis), checked
    against `x`'s trailing axes, with PyTorch's message."""
    if shape is None:
        return tuple(x.shape[-1:])
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if tuple(x.shape[x.ndim - len(shape):]) != shape or x.ndim < len(shape):
        raise ValueError(
            f"Given normalized_shape={list(shape)}, expected input with shape [*, {', '.join(map(str, shape))}], "
            f"but got input of size {list(x.shape)}"
        )
    return shape


def layer_norm(x, ndim: int, scale=None, bias=None, epsilon: float = 1e-5, dtype: Any = None) -> jax.Array:
    """PyTorch's `layer_norm` over `x`'s last `ndim` axes: `(x - mean) / sqrt(var + epsilon)`,
    the variance biased (divided by the count) and of the centred values, then `* scale + bias`."""
    dtype = dtype or jnp.result_type(x, *(p for p in (scale, bias) if p is not None))
    x = jnp.asarray(x, dtype)
    axes = tuple(range(x.ndim - ndim, x.ndim))
    mean = jnp.mean(x, axes, keepdims=True)
    centred = x - mean
    y = centred / jnp.sqrt(jnp.mean(jnp.square(centred), axes, keepdims=True) + epsilon)
    if scale is not None:
        y = y * jnp.asarray(scale, dtype)
    return y if bias is None else y + jnp.asarray(bias, dtype)


def attend(table, x, dtype: Any = None) -> jax.Array:
    """The embedding table `[num, features]` as a decoder: `x [..., features] -> [..., num]`,
    one 2-D product whatever the rank."""
    x = checks.as_float_array("input", x)
    table = jnp.asarray(table)
    if x.shape[-1] != table.shape[1]:
        raise ValueError(
            f"attend: input.size(-1) must be equal to the embedding size {table.shape[1]}, got {x.shape[-1]}"
        )
    dtype = dtype or jnp.result_type(x, table)
    y = jnp.asarray(x, dtype).reshape(-1, table.shape[1]) @ jnp.asarray(table, dtype).T
    return y.reshape(*x.shape[:-1], table.shape[0])


def lookup(table, ids: jax.Array, padding_idx: int | None = None, dtype: Any = None) -> jax.Array:
    """The rows `table[ids]`, `[num, features]`, `[...] -> [..., features]`: the `padding_idx`
    row passes no gradient back, and ids outside `[0, num)` give NaN rows (checked ids never do)."""
    table = jnp.asarray(table)
    if padding_idx is not None:
        table = table.at[padding_idx].set(jax.lax.stop_gradient(table[padding_idx]))
    table = jnp.asarray(table, dtype or table.dtype)
    ids = jnp.where(ids < 0, table.shape[0], ids)  # negative ids would wrap around
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)


def check_ids(name: str, ids, vocab_size: int) -> jax.Array:
    """Token ids: an integer array; concrete values must lie in `[0, vocab_size)`."""
    if not hasattr(ids, "dtype"):
        ids = np.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array of token ids, got dtype {ids.dtype}")
    if not isinstance(ids, jax.core.Tracer) and np.size(ids):
        values = np.asarray(ids)
        low, high = values.min(), values.max()
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"{name} must lie in [0, vocab_size) = [0, {vocab_size}), got values in [{low}, {high}]"
            )
    return jnp.asarray(ids)
