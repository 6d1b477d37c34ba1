"""`flaxseq.losses.cross_entropy` against `torch.nn.functional.cross_entropy`, float64."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flaxseq.losses import cross_entropy

TOL = 1e-12


def torch_loss(logits: np.ndarray, targets: np.ndarray, weights, **kw):
    """PyTorch's loss (classes moved to axis 1) and the gradient of `sum(loss * weights)`."""
    x = torch.tensor(np.moveaxis(logits, -1, 1) if logits.ndim > 2 else logits, requires_grad=True)
    loss = F.cross_entropy(x, torch.tensor(targets), **kw)
    (loss * torch.tensor(weights)).sum().backward()
    grad = x.grad.numpy()
    return loss.detach().numpy(), np.moveaxis(grad, 1, -1) if logits.ndim > 2 else grad


def jax_loss(logits, targets, weights, **kw):
    def f(a):
        loss = cross_entropy(a, jnp.asarray(targets), **kw)
        return (loss * weights).sum(), loss

    (_, loss), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logits))
    return np.asarray(loss), np.asarray(grad)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL)


SHAPES = [(5,), (6, 7), (3, 4, 7)]  # [C] with a scalar target, [N, C], [B, T, C]


@pytest.mark.parametrize("shape, reduction, smoothing, ignore", list(itertools.product(
    SHAPES, ["mean", "sum", "none"], [0.0, 0.25, 1.0], [False, True])))
def test_values_and_gradients_match_torch(shape, reduction, smoothing, ignore):
    rng = np.random.default_rng(abs(hash((shape, reduction, smoothing, ignore))) % 2**32)
    logits = 3 * rng.standard_normal(shape)
    targets = rng.integers(0, shape[-1], shape[:-1])
    if ignore and targets.ndim:
        targets.flat[::3] = -100
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    weights = rng.standard_normal(targets.shape if reduction == "none" else ())
    expected, expected_grad = torch_loss(logits, targets, weights, **kw)
    got, grad = jax_loss(logits, targets, weights, **kw)
    close(got, expected)
    close(grad, expected_grad)


def test_ignore_index_any_class_and_jit():
    rng = np.random.default_rng(1)
    logits, targets = rng.standard_normal((8, 5)), rng.integers(0, 5, 8)
    expected = F.cross_entropy(torch.tensor(logits), torch.tensor(targets), ignore_index=2, label_smoothing=0.1)
    f = jax.jit(lambda a, t: cross_entropy(a, t, ignore_index=2, label_smoothing=0.1))
    close(f(logits, targets), expected.numpy())


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_every_position_ignored_gives_nan_as_torch(smoothing):
    logits = np.random.default_rng(2).standard_normal((4, 5))
    targets = np.full(4, -100)
    expected, expected_grad = torch_loss(logits, targets, 1.0, label_smoothing=smoothing)
    got, grad = jax_loss(logits, targets, 1.0, label_smoothing=smoothing)
    assert np.isnan(expected) and np.isnan(got)
    close(grad, expected_grad)  # zeros on both sides
    assert cross_entropy(logits, targets, reduction="sum") == 0.0
    assert np.isnan(cross_entropy(np.zeros((0, 5)), np.zeros(0, int)))  # no positions: NaN, as torch


def test_large_logits_stay_finite():
    logits = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4 + 1, -1e4 + 2]])
    targets = np.array([0, 2])
    expected, expected_grad = torch_loss(logits, targets, 1.0)
    got, grad = jax_loss(logits, targets, 1.0)
    close(got, expected)
    close(grad, expected_grad)


def test_float32_and_time_major_vocabulary():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((5, 2, 1000)).astype(np.float32)  # [time, batch, vocab]
    targets = rng.integers(0, 1000, (5, 2))
    got = cross_entropy(jnp.asarray(logits), targets)
    assert got.dtype == jnp.float32
    expected = F.cross_entropy(torch.tensor(logits.reshape(-1, 1000)), torch.tensor(targets.reshape(-1)))
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)


def test_unchecked_target_out_of_range_gives_nan():
    f = jax.jit(lambda a, t: cross_entropy(a, t, reduction="none"))
    logits = np.zeros((3, 4))
    loss = f(logits, np.array([1, 4, -100]))
    assert loss[0] == np.log(4) and np.isnan(loss[1]) and loss[2] == 0
    grad = jax.grad(lambda a: f(a, np.array([1, 7, -100])).sum())(logits)
    assert np.isfinite(grad[0]).all() and np.isnan(grad[1]).all() and (grad[2] == 0).all()


@pytest.mark.parametrize("logits, targets, kw, error, message", [
    (np.zeros((3, 4)), np.zeros(3), {}, TypeError,
     "targets must be an integer array of class indices, got dtype float64"),
    (np.zeros((3, 4), int), np.zeros(3, int), {}, TypeError, "logits must be a floating-point array, got dtype int64"),
    (np.zeros((3, 4)), np.zeros(2, int), {}, ValueError,
     r"targets must have the shape of logits without its last \(class\) axis: expected \(3,\), got \(2,\)"),
    (np.zeros((2, 5, 4)), np.zeros((2, 4), int), {}, ValueError, r"expected \(2, 5\), got \(2, 4\)"),
    (np.zeros((3, 4)), np.array([0, 4, 1]), {}, ValueError,
     r"targets must lie in \[0, 4\) \(the number of classes\) or equal ignore_index=-100, got 4"),
    (np.zeros((3, 4)), np.array([0, -1, 1]), {}, ValueError, "got -1"),
    (np.zeros((3, 4)), np.array([0, 1, 1]), {"reduction": "avg"}, ValueError,
     r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"),
    (np.zeros((3, 4)), np.array([0, 1, 1]), {"label_smoothing": 1.5}, ValueError,
     "label_smoothing must be between 0.0 and 1.0, got 1.5"),
    (np.zeros((3, 4)), np.array([0, 1, 1]), {"ignore_index": 1.0}, TypeError, "ignore_index must be an int, got float"),
    (np.float64(1.0), np.array(0), {}, ValueError, "logits must have a class axis"),
])
def test_bad_inputs(logits, targets, kw, error, message):
    with pytest.raises(error, match=message):
        cross_entropy(logits, targets, **kw)
