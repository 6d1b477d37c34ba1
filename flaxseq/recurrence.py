"""The time loop: scan a cell's step over time, in either direction, with variable lengths.

This is the only place that loops over time. Layers call `scan_direction` once per layer and
direction with the input projection of all time steps already computed.

Variable lengths give what PyTorch's `pack_padded_sequence(..., enforce_sorted=False)` then
`pad_packed_sequence(..., total_length=T)` give: outputs past a sequence's length are zero,
the final carry is the state at its last valid step, and the reverse direction starts at each
sequence's own last element. Forward, a mask freezes the carry once `t >= length`; reverse,
each sequence's valid prefix is reversed in place (an involution), scanned forward with the
same mask, and reversed back.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def reverse_index(lengths: jax.Array, time_steps: int) -> jax.Array:
    """`[time, batch]` index that reverses each column's first `lengths[b]` steps, fixing the rest."""
    t = jnp.arange(time_steps)[:, None]  # [time, 1]
    return jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def scan_direction(
    step: Callable, weights, gx: jax.Array, carry, lengths: jax.Array | None = None,
    reverse: bool = False,
):
    """Run `step(weights, carry, gx_t) -> (carry, y_t)` over the time axis of `gx`.

    Args:
      step: a cell's step function (`flaxseq.cells.STEPS`).
      weights: the cell's weights, passed to `step` unchanged.
      gx: input projections, `[time, batch, gates * hidden]`.
      carry: initial state, a pytree of `[batch, ...]` arrays.
      lengths: `[batch]` integers, or None when every sequence fills the time axis. Values are
        clipped to [0, time]; a sequence of length 0 gives zero outputs and keeps its `carry`.
      reverse: run from each sequence's last valid step back to its first.

    Returns:
      `(outputs [time, batch, out], final_carry)`; outputs stay in input time order.
    """
    if lengths is None:
        carry, ys = jax.lax.scan(lambda c, g: step(weights, c, g), carry, gx, reverse=reverse)
        return ys, carry

    time_steps = gx.shape[0]
    lengths = jnp.clip(lengths, 0, time_steps)
    mask = jnp.arange(time_steps)[:, None] < lengths[None, :]  # [time, batch]
    if reverse:
        index = reverse_index(lengths, time_steps)[:, :, None]  # [time, batch, 1]
        gx = jnp.take_along_axis(gx, index, axis=0)

    def masked_step(carry, inputs):
        gx_t, valid = inputs  # [batch, gates * hidden], [batch]
        new_carry, y = step(weights, carry, gx_t)
        valid = valid[:, None]
        carry = jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_carry, carry)
        return carry, jnp.where(valid, y, jnp.zeros_like(y))

    carry, ys = jax.lax.scan(masked_step, carry, (gx, mask))
    if reverse:
        ys = jnp.take_along_axis(ys, index, axis=0)
    return ys, carry
