"""`Linear` and `Embedding` with PyTorch's initialisation and semantics, for the models.

Both keep Flax's parameter names (`kernel [in, out]`, `bias`; `embedding [num, features]`), so
a Flax user reads them as `nn.Dense` and `nn.Embed`; the converter maps `kernel` to PyTorch's
`weight [out, in]` by a transpose and `embedding` to `weight` as it is.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxseq import checks
from flaxseq.init import linear_uniform


class Linear(nn.Module):
    """`y = x @ kernel + bias`, the twin of `torch.nn.Linear(in_features, features)`.

    `kernel: [in_features, features]` and `bias: [features]` from U(-1/sqrt(in), 1/sqrt(in)), as
    PyTorch's default (Kaiming-uniform with a = sqrt(5)). `x: [..., in_features] -> [..., features]`.
    """

    features: int
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        checks.check_x64(self.param_dtype)
        fan_in = x.shape[-1]
        init = linear_uniform(fan_in)
        kernel = self.param("kernel", init, (fan_in, self.features), self.param_dtype)
        bias = self.param("bias", init, (self.features,), self.param_dtype) if self.use_bias else None
        dtype = self.dtype or jnp.result_type(x, kernel)
        # one 2-D product whatever the rank, then the leading axes back
        y = jnp.asarray(x, dtype).reshape(-1, fan_in) @ jnp.asarray(kernel, dtype)
        if bias is not None:
            y = y + jnp.asarray(bias, dtype)
        return y.reshape(*x.shape[:-1], self.features)


class Embedding(nn.Module):
    """Lookup table, the twin of `torch.nn.Embedding(num_embeddings, features, padding_idx)`.

    `embedding: [num_embeddings, features]` from N(0, 1). With `padding_idx` (negative counts
    from the end, as in PyTorch) that row starts at zero and receives no gradient; the forward
    pass still reads its current value. `ids: [...] integers -> [..., features]`.

    Ids outside `[0, num_embeddings)` raise `ValueError` where they are concrete. Under
    `jax.jit` they cannot be checked: their rows come out as NaN (never another row's values),
    so the loss turns NaN and the training loop stops on it.
    """

    num_embeddings: int
    features: int
    padding_idx: int | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

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
        table = jax.random.normal(key, shape, dtype)
        return table if self.padding_idx is None else table.at[self.padding_idx].set(0)

    @nn.compact
    def __call__(self, ids) -> jax.Array:
        checks.check_x64(self.param_dtype)
        ids = check_ids("ids", ids, self.num_embeddings)
        table = self.param("embedding", self._init, (self.num_embeddings, self.features), self.param_dtype)
        return lookup(table, ids, self.padding_idx, self.dtype)


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
