"""`flaxseq.products.affine`: the value and every derivative of `x @ kernel + bias`, float64,
on each of its layouts (bias folded or not, the kernel's gradient from a transposed copy or
JAX's own); and the buffers a decoder and its loss take under the gradient."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from flaxseq import products
from flaxseq.basic import Linear
from flaxseq.losses import cross_entropy
from flaxseq.products import affine, folds_bias

TOL = 1e-12
# [n, in, out]: the first two fold the bias, the last two do not
SHAPES = [(40, 3, 50), (9, 2, 30), (6, 5, 4), (3, 7, 2)]


def _operands(n, fan_in, out, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal(s)) for s in [(n, fan_in), (fan_in, out), (out,), (n, out)])


def plain(x, kernel, bias=None):
    return x @ kernel if bias is None else x @ kernel + bias


def close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=TOL, atol=TOL)


def test_the_shapes_cover_both_sides_of_the_fold():
    assert [folds_bias(*s) for s in SHAPES] == [True, True, False, False]


@pytest.mark.parametrize("copy", [True, False], ids=["transposed-copy", "jax-gradient"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_value_and_gradients_equal_the_plain_product(shape, copy, monkeypatch):
    monkeypatch.setattr(products, "TRANSPOSED_INPUT_BYTES", 1 << 30 if copy else 0)
    x, kernel, bias, weights = _operands(*shape)

    def loss(f, *args):
        return jnp.sum(weights * jnp.sin(f(*args)))

    close(affine(x, kernel, bias), plain(x, kernel, bias))
    close(affine(x, kernel), plain(x, kernel))
    for argnums in [(0, 1, 2), (1, 2), (1,), (0,), (2,)]:  # the zero tangents of the others dropped
        close(jax.grad(lambda *a: loss(affine, *a), argnums)(x, kernel, bias),
              jax.grad(lambda *a: loss(plain, *a), argnums)(x, kernel, bias))
    close(jax.grad(lambda *a: loss(affine, *a), (0, 1))(x, kernel),
          jax.grad(lambda *a: loss(plain, *a), (0, 1))(x, kernel))
    close(jax.jit(jax.grad(lambda *a: loss(affine, *a), (0, 1, 2)))(x, kernel, bias),
          jax.grad(lambda *a: loss(plain, *a), (0, 1, 2))(x, kernel, bias))


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=str)
def test_forward_mode_and_second_derivatives(shape):
    x, kernel, bias, weights = _operands(*shape, seed=1)
    tangents = _operands(*shape, seed=2)[:3]

    def loss(f, *args):
        return jnp.sum(weights * jnp.sin(f(*args)))

    close(jax.jvp(lambda *a: affine(*a), (x, kernel, bias), tangents),
          jax.jvp(lambda *a: plain(*a), (x, kernel, bias), tangents))
    close(jax.hessian(lambda *a: loss(affine, *a), (0, 2))(x, kernel, bias),
          jax.hessian(lambda *a: loss(plain, *a), (0, 2))(x, kernel, bias))
    close(jax.vmap(affine, (0, None, None))(jnp.stack([x, 2 * x]), kernel, bias),
          jnp.stack([plain(x, kernel, bias), plain(2 * x, kernel, bias)]))


def _primitives(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn.primitive.name
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _primitives(sub)


@pytest.mark.parametrize("limit, copies", [(1 << 30, True), (0, False)])
def test_the_transposed_copy_below_its_threshold(limit, copies, monkeypatch):
    """The kernel's gradient reads a transposed copy of `[x, 1]` kept by a barrier (XLA would fold
    the transpose into a slower product) where the copy is small, and JAX's `x^T g` above."""
    monkeypatch.setattr(products, "TRANSPOSED_INPUT_BYTES", limit)
    x, kernel, bias, _ = _operands(*SHAPES[0])
    jaxpr = jax.make_jaxpr(jax.grad(lambda k, b: jnp.sum(affine(x, k, b) ** 2), (0, 1)))(kernel, bias)
    assert ("optimization_barrier" in set(_primitives(jaxpr.jaxpr))) == copies


def test_a_decoder_and_its_loss_keep_one_array_of_the_logits_size():
    """Under the gradient of `cross_entropy(Linear(vocab)(x))` the `[n, vocab]` logits are one
    array: the bias inside the product (no second array for the sum) and the loss's gradient
    written over the logits (no kept softmax beside them). The plain product with a loss that
    keeps its softmax took two."""
    n, hidden, vocab = 300, 16, 2000
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((n, hidden)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, vocab, n))
    decoder = Linear(vocab)
    params = decoder.init(jax.random.key(0), x)["params"]

    def step(params, x):
        return jax.grad(lambda p: cross_entropy(decoder.apply({"params": p}, x), targets))(params)

    memory = jax.jit(step).lower(params, x).compile().memory_analysis()
    if memory is None:
        pytest.skip("this backend gives no memory analysis")
    logits_bytes = n * vocab * 4
    assert logits_bytes <= memory.temp_size_in_bytes < 1.5 * logits_bytes
