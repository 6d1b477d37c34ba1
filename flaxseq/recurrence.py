"""The time loop: scan a cell over time, in either direction, with variable lengths.

This is the only place that loops over time. Layers call `scan_direction` once per layer and
direction with the layer's input and that cell's weights, in PyTorch's layout (`Weights`).

Where the input projection `x_t @ W_ih^T + b_ih` is computed: differentiated, it is one large
product over all steps before the loop (and its gradients `dx`, `dW_ih` one product each after
the backward loop). Not differentiated (inference, evaluation), the same, unless the projection
of all steps, a `[time, batch, gates * hidden]` buffer, is larger than `PROJECTION_BUFFER_BYTES`:
then it is computed inside the loop, step by step, as flax's cells do, since writing and reading
back that buffer made the forward pass up to 1.5x slower at large sizes and held 1.25 GB at a
sequence of 1,000 steps (`docs/performance.md`). The two orders round differently, within float
rounding.

Variable lengths give what PyTorch's `pack_padded_sequence(..., enforce_sorted=False)` then
`pad_packed_sequence(..., total_length=T)` give: outputs past a sequence's length are zero,
the final carry is the state at its last valid step, and the reverse direction starts at each
sequence's own last element. Forward, a mask freezes the carry once `t >= length`; reverse,
each sequence's valid prefix is reversed in place (an involution), scanned forward with the
same mask, and reversed back.

The gradient is written by hand (`jax.custom_vjp`), as cuDNN does it: the backward loop only
carries `dh`, `dc` and produces each step's gate gradients `dgh_t`, `dgx_t`; the weight
gradients are then one matrix product each over all steps, `dW_hh = sum_t dgh_t^T h_{t-1}`,
`dW_ih = sum_t dgx_t^T x_t`, and so is the input's, `dx_t = dgx_t W_ih`, each written straight
into PyTorch's layout (`_summed_outer_products`). JAX's
own transpose of `lax.scan` instead accumulates `dW_hh` inside the loop, one small product and
a read and write of the whole `[gates * hidden, hidden]` accumulator per step. The element-wise
part of each step is differentiated by its cell's rule (`flaxseq.cells.GATES`): the
forward loop saves the gate activations and the backward loop multiplies them, so it computes
no exp or tanh but the LSTM's one `tanh(c_t)`. Arrays the loop reads per step are kept per gate
(`[time, batch, hidden]` each), which XLA:CPU compiles to much faster step code than slices of
one `[time, batch, gates * hidden]` array (`flaxseq/cells.py`).
"""

from functools import partial

import jax
import jax.numpy as jnp

from flaxseq.cells import GATES, InputWeights, StepWeights, Weights, input_weights, split_gates, step_weights

# Not differentiated, a larger input projection of all steps is computed step by step instead
PROJECTION_BUFFER_BYTES = 32 * 2**20


def reverse_index(lengths: jax.Array, time_steps: int) -> jax.Array:
    """`[time, batch]` index that reverses each column's first `lengths[b]` steps, fixing the rest."""
    t = jnp.arange(time_steps)[:, None]  # [time, 1]
    return jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def scan_direction(
    mode: str, weights: Weights, x: jax.Array, carry, lengths: jax.Array | None = None, reverse: bool = False,
    custom_gradient: bool = True,
):
    """Run one direction of one layer over the time axis of `x`.

    Each step is `gx = x_t @ W_ih^T + b_ih; gh = h @ W_hh^T + b_hh; (state, u) = gates(h, state,
    gx, gh); h = u @ W_hr^T` (no projection unless `weights.w_hr`), and outputs `h`.

    Args:
      mode: the cell, a key of `flaxseq.cells.GATES` (`"LSTM"`, `"GRU"`, `"RNN_TANH"`, `"RNN_RELU"`).
      weights: the cell's `Weights`, PyTorch's layout (`W_ih [gates * hidden, input]`, ...).
      x: the layer's input, `[time, batch, input]`.
      carry: initial `(h [batch, proj or hidden], state)`, `state` the LSTM's `c [batch, hidden]`
        or `()`.
      lengths: `[batch]` integers, or None when every sequence fills the time axis. Values are
        clipped to [0, time]; a sequence of length 0 gives zero outputs and keeps its `carry`.
      reverse: run from each sequence's last valid step back to its first.
      custom_gradient: differentiate by the hand-written rule (`recurrence`, reverse mode only);
        False: let JAX differentiate the loop (`plain_recurrence`), which forward mode needs.

    Returns:
      `(outputs [time, batch, proj or hidden], final (h, state))`; outputs in input time order.
    """
    h0, s0 = carry
    loop = recurrence if custom_gradient else plain_recurrence
    if lengths is None:
        ys, h, s = loop(mode, reverse, weights, x, h0, s0, None)
        return ys, (h, s)

    time_steps = x.shape[0]
    lengths = jnp.clip(lengths, 0, time_steps)
    mask = jnp.arange(time_steps)[:, None] < lengths[None, :]  # [time, batch]
    if reverse:
        index = reverse_index(lengths, time_steps)[:, :, None]  # [time, batch, 1]
        x = jnp.take_along_axis(x, index, axis=0)
    ys, h, s = loop(mode, False, weights, x, h0, s0, mask)
    if reverse:
        ys = jnp.take_along_axis(ys, index, axis=0)
    return ys, (h, s)


def _select(mask, new, old):
    """`new` where `mask` (`[batch]`, or None: everywhere), else `old`; any pytree of `[batch, ...]`."""
    if mask is None:
        return new
    return jax.tree.map(lambda a, b: jnp.where(mask[:, None], a, b), new, old)


def _project(projection: InputWeights, x: jax.Array) -> jax.Array:
    """`x @ W_ih^T + b_ih`: `[..., input] -> [..., gates * hidden]`."""
    gx = x @ projection.w_ih
    return gx if projection.b_ih is None else gx + projection.b_ih


def _forward(mode, reverse, weights: StepWeights, projection, xs, h0, s0, mask, save: bool):
    """The loop over `xs`: the inputs `[time, batch, input]` projected at each step if
    `projection` is given, else the projections themselves, a tuple of per-gate parts
    `[time, batch, hidden]`. With `save`, also the residuals of each step that the backward loop
    reads: `h_{t-1}`, `state_{t-1}`, the cell's saved activations, and `u_t` with a projection."""
    gates = GATES[mode]

    def step(carry, inputs):
        h, s = carry
        x_t, m = inputs  # [batch, input] or per-gate parts [batch, hidden]; [batch] or None
        gx_t = x_t if projection is None else split_gates(_project(projection, x_t), gates.count)
        gh = h @ weights.w_hh  # [batch, gates * hidden]
        if weights.b_hh is not None:
            gh = gh + weights.b_hh
        s_new, u, saved = gates.forward(h, s, gx_t, split_gates(gh, gates.count))  # u: [batch, hidden]
        h_new = u if weights.w_hr is None else u @ weights.w_hr
        y = h_new if m is None else jnp.where(m[:, None], h_new, jnp.zeros_like(h_new))
        h_new, s_new = _select(m, (h_new, s_new), (h, s))
        residuals = (h, s, saved, u if weights.w_hr is not None else ()) if save else ()
        return (h_new, s_new), (y, residuals)

    (h, s), (ys, residuals) = jax.lax.scan(step, (h0, s0), (xs, mask), reverse=reverse)
    return ys, h, s, residuals


def plain_recurrence(mode, reverse, weights: Weights, x, h0, s0, mask):
    """`recurrence` without its hand-written gradient: JAX differentiates the loop itself, in
    forward mode (`jax.jvp`, `jax.jacfwd`) too; the input projection is computed in the loop."""
    ys, h, s, _ = _forward(mode, reverse, step_weights(weights), input_weights(weights), x, h0, s0, mask, save=False)
    return ys, h, s


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def recurrence(mode, reverse, weights: Weights, x, h0, s0, mask):
    """`(ys [time, batch, out], h_T, state_T)` of the loop in `scan_direction`, with a hand-written
    gradient (module docstring). `mask`: `[time, batch]` booleans (False: skip the step) or None.
    Not differentiated, the input projection is computed inside the loop above
    `PROJECTION_BUFFER_BYTES`."""
    count = GATES[mode].count
    projection = input_weights(weights)
    if x.shape[0] * x.shape[1] * weights.w_ih.shape[0] * x.dtype.itemsize > PROJECTION_BUFFER_BYTES:
        ys, h, s, _ = _forward(mode, reverse, step_weights(weights), projection, x, h0, s0, mask, save=False)
    else:
        gx = split_gates(_project(projection, x), count)  # per-gate parts [time, batch, hidden]
        ys, h, s, _ = _forward(mode, reverse, step_weights(weights), None, gx, h0, s0, mask, save=False)
    return ys, h, s


def _recurrence_fwd(mode, reverse, weights, x, h0, s0, mask):
    gx = _project(input_weights(weights), x)  # [time, batch, gates * hidden], one product for all steps
    gx = split_gates(gx, GATES[mode].count)  # per-gate parts [time, batch, hidden]
    ys, h, s, residuals = _forward(mode, reverse, step_weights(weights), None, gx, h0, s0, mask, save=True)
    return (ys, h, s), (weights, x, mask, residuals)


def _recurrence_bwd(mode, reverse, residuals, cotangents):
    weights, x, mask, (hs, ss, saved, us) = residuals  # hs: h_{t-1} [time, batch, proj or hidden]
    gates = GATES[mode]
    dys, dh, ds = cotangents
    w_hh = weights.w_hh  # [gates * hidden, proj or hidden]
    w_hr = weights.w_hr  # [proj, hidden] or None

    def step(carry, inputs):
        dh, ds = carry  # gradients of h_t and state_t
        saved_t, h, s, dy, m = inputs
        dh_total = dh + dy  # h_t is both the output and the next step's input
        du = dh_total if w_hr is None else dh_total @ w_hr
        dh_prev, ds_prev, dgx, dgh = gates.gradient(saved_t, h, s, ds, du)  # dgx, dgh: [batch, gates * hidden]
        dh_prev = dh_prev + dgh @ w_hh
        zero = jnp.zeros_like
        dh_prev, ds_prev = _select(m, (dh_prev, ds_prev), (dh, ds))  # a skipped step passes them on
        dgx, dgh, dh_total = _select(m, (dgx, dgh, dh_total), (zero(dgx), zero(dgh), zero(dh_total)))
        return (dh_prev, ds_prev), (dgx, () if gates.tied else dgh, dh_total if w_hr is not None else ())

    (dh0, ds0), (dgx, dgh, dh_totals) = jax.lax.scan(
        step, (dh, ds), (saved, hs, ss, dys, mask), reverse=not reverse
    )
    if gates.tied:
        dgh = dgx  # [time, batch, gates * hidden]
    # the weight gradients: one matrix product each, over all time steps and the batch
    d_weights = Weights(
        w_ih=_summed_outer_products(dgx, x),  # [gates * hidden, input]
        w_hh=_summed_outer_products(dgh, hs),  # [gates * hidden, proj or hidden]
        b_ih=None if weights.b_ih is None else dgx.sum(axis=(0, 1)),
        b_hh=None if weights.b_hh is None else dgh.sum(axis=(0, 1)),
        w_hr=None if weights.w_hr is None else _summed_outer_products(dh_totals, us),  # [proj, hidden]
    )
    dx = jnp.einsum("tbg,gi->tbi", dgx, weights.w_ih)  # [time, batch, input]
    return d_weights, dx, dh0, ds0, None


def _summed_outer_products(dz, v):
    """`sum_t dz_t^T v_t` over time and batch: `[time, batch, n]`, `[time, batch, m]` -> `[n, m]`,
    a weight's gradient in PyTorch's layout.

    One 2-D product over the `time * batch` rows, with `dz^T` copied out first: XLA:CPU's fast
    matrix kernel needs a row-major left operand, and without the barrier XLA folds the
    transpose into the product and takes a slower kernel (`docs/performance.md`, finding 17).
    """
    dz = dz.reshape(-1, dz.shape[-1])  # [time * batch, n]
    v = v.reshape(-1, v.shape[-1])  # [time * batch, m]
    return jax.lax.optimization_barrier(dz.T) @ v


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
