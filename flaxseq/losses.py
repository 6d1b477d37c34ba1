"""Losses with PyTorch's definitions, classes on the last axis as JAX lays them out.

`cross_entropy` is `torch.nn.functional.cross_entropy` for integer class targets: the same
values and gradients, `ignore_index`, the three reductions and label smoothing. PyTorch puts
the classes on axis 1 (`[batch, classes, ...]`); here they are the last axis (`[..., classes]`),
where `flaxseq.basic.Linear` puts them, so a `[time, batch, classes]` or `[batch, time,
classes]` output goes in as it is.

It is written for large vocabularies: the log-sum-exp of each row is one fused pass over the
logits, the target's logit is gathered (no one-hot array), and the gradient is written by hand
(`softmax - (1 - eps) onehot - eps / classes`, scaled per row), one element-wise pass that XLA
fuses with the comparison against each row's target. The logits are the only array of their
size that the gradient keeps, and the gradient is written over them: the softmax is computed
again rather than kept beside them. Measurements: `docs/performance.md`, findings 28 and 36.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(logits, targets, *, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> jax.Array:
    """`torch.nn.functional.cross_entropy(input, target, ...)` with the classes on the last axis.

    For a row `x` (the logits of one position, `C` classes) with target `t` and smoothing `e`:

        loss = (1 - e) * (logsumexp(x) - x[t]) + e * (logsumexp(x) - mean_c x[c])

    Positions whose target equals `ignore_index` give 0 and count for nothing. `reduction`:
    'mean' divides the sum by the number of positions not ignored (NaN when every position is
    ignored, as in PyTorch), 'sum' adds them up, 'none' returns them, shaped as `targets`.

    Shapes: `logits [..., C]` floating, `targets [...]` integers in `[0, C)` (or `ignore_index`),
    the same leading axes. PyTorch's `[N, C]` input is the same here; its `[N, C, d1, ...]` is
    `jnp.moveaxis(input, 1, -1)` here, e.g. a `[batch, time, C]` output against `[batch, time]`
    targets is PyTorch's `cross_entropy(output.transpose(1, 2), targets)`. Class-probability
    targets (floating, shaped as the logits) are not taken: use
    `optax.softmax_cross_entropy`.

    Targets outside `[0, C)` that are not `ignore_index` raise `ValueError` where they are
    concrete; under `jax.jit` they cannot be checked, and their positions give NaN (loss and
    gradient), never another class's values.

        >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
        >>> cross_entropy(logits, jnp.array([0, -100]))  # the second position is ignored
        Array(0.2413..., dtype=float32)
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    logits = jnp.asarray(logits)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"logits must be a floating-point array, got dtype {logits.dtype}")
    if logits.ndim < 1:
        raise ValueError("logits must have a class axis (the last), got a 0-D array")
    if not hasattr(targets, "dtype"):
        targets = np.asarray(targets)
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets must be an integer array of class indices, got dtype {targets.dtype}")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"targets must have the shape of logits without its last (class) axis: expected "
            f"{tuple(logits.shape[:-1])}, got {tuple(targets.shape)}"
        )
    classes = logits.shape[-1]
    if not isinstance(targets, jax.core.Tracer) and np.size(targets):
        values = np.asarray(targets)
        bad = values[(values != ignore_index) & ((values < 0) | (values >= classes))]
        if bad.size:
            raise ValueError(
                f"targets must lie in [0, {classes}) (the number of classes) or equal ignore_index="
                f"{ignore_index}, got {bad.flat[0]}"
            )
    targets = jnp.asarray(targets)

    flat = targets.reshape(-1)  # [N]
    losses = _losses(logits.reshape(-1, classes), flat, ignore_index, float(label_smoothing))  # [N]
    if reduction == "none":
        return losses.reshape(targets.shape)
    total = losses.sum()
    if reduction == "sum":
        return total
    counted = (flat != ignore_index).sum().astype(losses.dtype)
    return total / counted  # 0 / 0 = NaN when every position is ignored, as in PyTorch


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _losses(logits, targets, ignore_index, smoothing):
    """Per row of `logits [N, C]` and `targets [N]`: the loss, 0 where ignored."""
    return _losses_fwd(logits, targets, ignore_index, smoothing)[0]


def _losses_fwd(logits, targets, ignore_index, smoothing):
    classes = logits.shape[-1]
    valid = targets != ignore_index
    in_range = (targets >= 0) & (targets < classes)
    peak = jnp.max(logits, axis=-1)  # [N], the shift that keeps exp finite
    peak = jnp.where(jnp.isfinite(peak), peak, jnp.zeros_like(peak))
    # the logits are the residual, and the gradient computes exp(x - lse) again: a kept
    # exp(x - peak) would be a second array of the logits' size (docs/performance.md, finding 36)
    lse = peak + jnp.log(jnp.sum(jnp.exp(logits - peak[:, None]), axis=-1))  # [N]
    index = jnp.where(in_range, targets, 0)[:, None]
    picked = jnp.take_along_axis(logits, index, axis=-1)[:, 0]  # [N]: x[t]
    picked = jnp.where(in_range, picked, jnp.nan)  # an unchecked target out of range gives NaN
    loss = lse - picked
    if smoothing:
        loss = (1.0 - smoothing) * loss + smoothing * (lse - jnp.mean(logits, axis=-1))
    loss = jnp.where(valid, loss, jnp.zeros_like(loss))
    return loss, (logits, lse, picked, targets)


def _losses_bwd(ignore_index, smoothing, residuals, d_loss):
    # d loss / d x_c = softmax(x)_c - (1 - e) [c == t] - e / C, per row scaled by its cotangent
    logits, lse, picked, targets = residuals
    classes = logits.shape[-1]
    valid = targets != ignore_index
    scale = jnp.where(valid, d_loss, jnp.zeros_like(d_loss))
    # a counted row with a target out of range (its picked logit NaN) gets NaN; where x[t] is
    # NaN the row is NaN anyway. Reading the picked logits orders the gradient after every read
    # of the logits, so that XLA writes it over them (docs/performance.md, finding 36)
    scale = jnp.where(valid & jnp.isnan(picked), jnp.nan, scale)[:, None]  # [N, 1]
    onehot = jnp.arange(classes)[None, :] == targets[:, None]  # fused with its use, never stored
    grad = jnp.exp(logits - lse[:, None]) - jnp.where(onehot, 1.0 - smoothing, 0.0).astype(logits.dtype)
    if smoothing:
        grad = grad - smoothing / classes
    return grad * scale, None


_losses.defvjp(_losses_fwd, _losses_bwd)
