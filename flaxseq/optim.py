"""Optimisers: Adam with gradient clipping, by optax's rule or by PyTorch's.

The two clipping rules differ slightly:

- `torch.nn.utils.clip_grad_norm_` multiplies every gradient by min(1, max_norm / (norm + 1e-6)),
  so it also scales, by a hair, gradients whose norm is just below `max_norm`;
- `optax.clip_by_global_norm` scales by max_norm / norm only when norm > max_norm, with no 1e-6.

`clip_grad_norm_torch` is PyTorch's rule as an optax transform; the lockstep comparison with
PyTorch training uses it. The training CLI uses optax's rule unless `--clip torch` is given.
"""

import jax
import jax.numpy as jnp
import optax

CLIPPING = ("optax", "torch")


def clip_grad_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """`torch.nn.utils.clip_grad_norm_(params, max_norm)` as an optax transform.

    total_norm = ||(||g_1||, ..., ||g_n||)||_2; every gradient is multiplied by
    min(1, max_norm / (total_norm + 1e-6)).
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")

    def update(updates, state, params=None):
        del params
        norms = jnp.stack([jnp.linalg.norm(g.ravel()) for g in jax.tree.leaves(updates)])
        total = jnp.linalg.norm(norms)
        scale = jnp.minimum(1.0, max_norm / (total + 1e-6))
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def adam_with_clipping(
    learning_rate: float = 1e-3, max_norm: float | None = 1.0, clipping: str = "optax", decay_steps: int = 0,
) -> optax.GradientTransformation:
    """`optax.chain(clip(max_norm), adam(learning_rate))`, PyTorch's Adam defaults (betas 0.9,
    0.999, eps 1e-8). `clipping` is 'optax' (`clip_by_global_norm`) or 'torch'
    (`clip_grad_norm_torch`); `max_norm=None` clips nothing. With `decay_steps > 0` the learning
    rate follows a cosine from `learning_rate` down to 0 over that many steps."""
    if clipping not in CLIPPING:
        raise ValueError(f"clipping must be one of {CLIPPING}, got {clipping!r}")
    if decay_steps:
        learning_rate = optax.cosine_decay_schedule(learning_rate, decay_steps)
    adam = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
    if max_norm is None:
        return adam
    clip = clip_grad_norm_torch(max_norm) if clipping == "torch" else optax.clip_by_global_norm(max_norm)
    return optax.chain(clip, adam)
