"""`affine(x, kernel, bias)`: `x @ kernel + bias` laid out for XLA:CPU's fast products.

The value is the plain product and sum; two things differ from what JAX and XLA would do by
themselves (`docs/performance.md`, finding 36):

- **The bias inside the product** where the output is the largest array. XLA:CPU runs the
  product on its fast (YNNPACK) kernel and the bias as a pass of its own; where the sum has
  several users (a loss's maximum, exponentials and gather), it keeps the product and the sum
  as two arrays of the output's size. When `folds_bias(n, in, out)` the input is extended with
  a column of ones and the kernel with the bias as its last row, so that one product writes
  the output once: `[x, 1] @ [kernel; bias]`.
- **The kernel's gradient from a row-major copy of the input** where that copy is small
  (`TRANSPOSED_INPUT_BYTES`). JAX's gradient of `x @ kernel` is `x^T @ g`, which XLA:CPU runs
  on a slower kernel with the transpose folded in; here `[x, 1]` is transposed once into a
  copy (`[in + 1, n]`) that the product reads as it is, and the same product gives the bias's
  gradient as its last row (no reduction, no second pass over `g`). XLA's transposing copy is
  fast only while the input stays in the core's cache; above the threshold the gradient is
  JAX's own.

The derivative is a `jax.custom_jvp`, so forward mode, reverse mode and their compositions all
work; only the layout of the gradient's products is chosen.
"""

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

TRANSPOSED_INPUT_BYTES = 1 << 20  # the largest `[x, 1]` whose transposed copy pays (finding 36)


def affine(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """`x [n, in] @ kernel [in, out] + bias [out] -> [n, out]` (no bias where `bias` is None);
    the operands share one dtype."""
    if bias is None:
        return _product(x, kernel)
    return _affine(x, kernel, bias)


def folds_bias(n: int, fan_in: int, out: int) -> bool:
    """Whether the bias goes inside the product: the extended copies (`n * (in + 1)` and
    `(in + 1) * out` elements) are smaller than the output (`n * out`) they save a pass over."""
    return (fan_in + 1) * (n + out) < n * out


@jax.custom_jvp
def _product(x, kernel):
    return x @ kernel


@jax.custom_jvp
def _affine(x, kernel, bias):
    n, fan_in = x.shape
    if folds_bias(n, fan_in, kernel.shape[1]):
        return _with_ones(x) @ jnp.concatenate([kernel, bias[None]], axis=0)
    return x @ kernel + bias


def _with_ones(x):
    """`[n, in] -> [n, in + 1]`, a last column of ones."""
    return jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)


def _tangent(x, kernel, dx, dkernel, dbias=None):
    """`dx @ kernel + x @ dkernel + dbias` (symbolic zeros drop their terms), written so that
    its transpose, the gradient, reads a row-major copy of `[x, 1]^T` where that copy is small."""
    n, out = x.shape[0], kernel.shape[1]
    has_bias = dbias is not None and not isinstance(dbias, SymbolicZero)
    terms = [] if isinstance(dx, SymbolicZero) else [dx @ kernel]  # its gradient g @ kernel^T
    if has_bias or not isinstance(dkernel, SymbolicZero):
        if isinstance(dkernel, SymbolicZero):
            dkernel = jnp.zeros(kernel.shape, kernel.dtype)
        if n * (x.shape[1] + 1) * x.dtype.itemsize > TRANSPOSED_INPUT_BYTES:
            terms.append(x @ dkernel)  # JAX's own gradients: x^T g, and g summed over rows
            if has_bias:
                terms.append(jnp.broadcast_to(dbias, (n, out)))
        else:
            if has_bias:
                x, dkernel = _with_ones(x), jnp.concatenate([dkernel, dbias[None]], axis=0)
            x_t = jax.lax.optimization_barrier(x.T)  # [in (+ 1), n]: the barrier keeps the copy
            terms.append(x_t.T @ dkernel)  # its gradient x_t @ g, the bias's in its last row
    if not terms:
        return jnp.zeros((n, out), x.dtype)
    return sum(terms[1:], terms[0])


def _product_jvp(primals, tangents):
    x, kernel = primals
    return _product(x, kernel), _tangent(x, kernel, *tangents)


def _affine_jvp(primals, tangents):
    x, kernel, bias = primals
    return _affine(x, kernel, bias), _tangent(x, kernel, *tangents)


_product.defjvp(_product_jvp, symbolic_zeros=True)
_affine.defjvp(_affine_jvp, symbolic_zeros=True)
