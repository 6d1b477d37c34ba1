"""The time loop: scan a cell over time, in either direction, with variable lengths.

This is the only place that loops over time. Layers call `scan_layer` once per layer with the
layer's input and each direction's weights, in PyTorch's layout (`Weights`); the directions of
a bidirectional layer step together in one loop, the reverse one over its input reversed.

Where the input projection `x_t @ W_ih^T + b_ih` is computed: differentiated, before the loop,
one large product per gate over all steps, the bias added in the step (and its gradients `dx`,
`dW_ih` one product each after the backward loop). Not differentiated (inference, evaluation),
the same, unless the projection of all steps (`time * batch * gates * hidden` values) takes
more bytes than `PROJECTION_BUFFER_BYTES`: then it is computed inside the loop, step by step, as
flax's cells do, since writing and reading back that buffer made the forward pass up to 1.5x
slower at large sizes and held 1.25 GB at a sequence of 1,000 steps (`docs/performance.md`).
The two orders round differently, within float rounding.

Variable lengths give what PyTorch's `pack_padded_sequence(..., enforce_sorted=False)` then
`pad_packed_sequence(..., total_length=T)` give: outputs past a sequence's length are zero,
the final carry is the state at its last valid step, and the reverse direction starts at each
sequence's own last element. A mask freezes the carry once `t >= length`; the reverse
direction reads each sequence's valid prefix reversed in place (an involution), steps forward
with the same mask, and its outputs are reversed back.

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


def scan_layer(
    mode: str, weights: list[Weights], x: jax.Array, carries: list, lengths: jax.Array | None = None,
    custom_gradient: bool = True,
):
    """Run one layer over the time axis of `x`: its directions, forward then reverse, in one loop.

    Each step is, per direction, `gx = x_t @ W_ih^T + b_ih; gh = h @ W_hh^T + b_hh; (state, u) =
    gates(h, state, gx, gh); h = u @ W_hr^T` (no projection unless `weights.w_hr`), and outputs
    `h`. The reverse direction reads its input reversed in time (each sequence's valid prefix
    reversed, with `lengths`), so that both directions step forward together: XLA:CPU runs
    independent loops one after the other, but overlaps independent work within one loop
    (`docs/performance.md`, finding 24).

    Args:
      mode: the cell, a key of `flaxseq.cells.GATES` (`"LSTM"`, `"GRU"`, `"RNN_TANH"`, `"RNN_RELU"`).
      weights: one `Weights` per direction, `[forward]` or `[forward, reverse]`, PyTorch's layout
        (`W_ih [gates * hidden, input]`, ...).
      x: the layer's input, `[time, batch, input]`.
      carries: one initial `(h [batch, proj or hidden], state)` per direction, `state` the
        LSTM's `c [batch, hidden]` or `()`.
      lengths: `[batch]` integers, or None when every sequence fills the time axis. Values are
        clipped to [0, time]; a sequence of length 0 gives zero outputs and keeps its carry.
      custom_gradient: differentiate by the hand-written rule (`recurrence`, reverse mode only);
        False: let JAX differentiate the loop (`plain_recurrence`), which forward mode needs.

    Returns:
      `(outputs, finals)`, per direction: outputs `[time, batch, proj or hidden]` in input time
      order, and the final `(h, state)`.
    """
    time_steps = x.shape[0]
    if lengths is None:
        mask = None

        def reverse(a):
            return jnp.flip(a, axis=0)
    else:
        lengths = jnp.clip(lengths, 0, time_steps)
        mask = jnp.arange(time_steps)[:, None] < lengths[None, :]  # [time, batch]
        index = reverse_index(lengths, time_steps)[:, :, None]  # [time, batch, 1], an involution

        def reverse(a):
            return jnp.take_along_axis(a, index, axis=0)

    xs = tuple(reverse(x) if direction else x for direction in range(len(weights)))
    loop = recurrence if custom_gradient else plain_recurrence
    ys, hs, ss = loop(mode, tuple(weights), xs, tuple(h for h, _ in carries), tuple(s for _, s in carries), mask)
    ys = [reverse(y) if direction else y for direction, y in enumerate(ys)]
    return ys, list(zip(hs, ss, strict=True))


def _select(mask, new, old):
    """`new` where `mask` (`[batch]`, or None: everywhere), else `old`; any pytree of `[batch, ...]`."""
    if mask is None:
        return new
    return jax.tree.map(lambda a, b: jnp.where(mask[:, None], a, b), new, old)


def _project_gates(projection: InputWeights, x: jax.Array, count: int) -> tuple:
    """`x @ W_ih^T` without the bias, as `count` per-gate parts: `[..., input] -> [..., hidden]` each.

    One product per gate writes each part where the loop reads it; one product then a split
    would pass over all of it once more (`docs/performance.md`, finding 25). The bias is added
    in the loop's step, where it costs no pass of its own.
    """
    return tuple(x @ w for w in split_gates(projection.w_ih, count))


def _forward(mode, weights: tuple, projections: tuple, xs: tuple, h0s: tuple, s0s: tuple, mask, save: bool):
    """The loop over time, every direction (a tuple entry each) stepping forward together.

    Per direction: `weights` its `StepWeights`, `projections` its `InputWeights`; `xs` either
    its inputs `[time, batch, input]`, projected at each step, or their projections without the
    bias (`_project_gates`), a tuple of per-gate parts `[time, batch, hidden]`. The step adds
    `b_ih` either way. With `save`, also the residuals of each
    step that the backward loop reads: `h_{t-1}`, `state_{t-1}`, the cell's saved activations,
    and `u_t` with a projection. Returns `(ys, hs, ss, residuals)`, each a tuple per direction.
    """
    gates = GATES[mode]

    def direction_step(w: StepWeights, projection: InputWeights, h, s, x_t, m):
        # x_t: the input [batch, input], or its per-gate projection without the bias (a tuple)
        gx_t = x_t if isinstance(x_t, tuple) else split_gates(x_t @ projection.w_ih, gates.count)
        if projection.b_ih is not None:
            gx_t = tuple(a + b for a, b in zip(gx_t, split_gates(projection.b_ih, gates.count), strict=True))
        gh = h @ w.w_hh  # [batch, gates * hidden]
        if w.b_hh is not None:
            gh = gh + w.b_hh
        s_new, u, saved = gates.forward(h, s, gx_t, split_gates(gh, gates.count))  # u: [batch, hidden]
        h_new = u if w.w_hr is None else u @ w.w_hr
        y = h_new if m is None else jnp.where(m[:, None], h_new, jnp.zeros_like(h_new))
        h_new, s_new = _select(m, (h_new, s_new), (h, s))
        residuals = (h, s, saved, u if w.w_hr is not None else ()) if save else ()
        return (h_new, s_new), (y, residuals)

    def step(carry, inputs):
        x_t, m = inputs  # per direction [batch, input] or per-gate parts [batch, hidden]; [batch] or None
        steps = [
            direction_step(w, projection, h, s, x_d, m)
            for w, projection, (h, s), x_d in zip(weights, projections, carry, x_t, strict=True)
        ]
        return tuple(c for c, _ in steps), tuple(zip(*(out for _, out in steps), strict=True))

    carry, (ys, residuals) = jax.lax.scan(step, tuple(zip(h0s, s0s, strict=True)), (xs, mask))
    hs, ss = zip(*carry, strict=True)
    return ys, hs, ss, residuals


def plain_recurrence(mode, weights: tuple, xs: tuple, h0s: tuple, s0s: tuple, mask):
    """`recurrence` without its hand-written gradient: JAX differentiates the loop itself, in
    forward mode (`jax.jvp`, `jax.jacfwd`) too; the input projection is computed in the loop."""
    ys, hs, ss, _ = _forward(
        mode, tuple(map(step_weights, weights)), tuple(map(input_weights, weights)), xs, h0s, s0s, mask,
        save=False,
    )
    return ys, hs, ss


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def recurrence(mode, weights: tuple, xs: tuple, h0s: tuple, s0s: tuple, mask):
    """`(ys, h_T, state_T)`, each a tuple per direction, of the loop in `scan_layer`, with a
    hand-written gradient (module docstring). Every direction steps forward in time over its
    own input in `xs` (`[time, batch, input]`); `mask`: `[time, batch]` booleans (False: skip
    the step) or None. Not differentiated, a direction's input projection is computed inside the
    loop above `PROJECTION_BUFFER_BYTES`."""
    count = GATES[mode].count
    projections = tuple(map(input_weights, weights))
    inputs = tuple(
        x if x.shape[0] * x.shape[1] * w.w_ih.shape[0] * x.dtype.itemsize > PROJECTION_BUFFER_BYTES
        else _project_gates(p, x, count)  # per-gate [time, batch, hidden]
        for w, p, x in zip(weights, projections, xs, strict=True)
    )
    ys, hs, ss, _ = _forward(mode, tuple(map(step_weights, weights)), projections, inputs, h0s, s0s, mask, save=False)
    return ys, hs, ss


def _recurrence_fwd(mode, weights, xs, h0s, s0s, mask):
    count = GATES[mode].count
    # per direction, the projection of all steps before the loop, as per-gate parts [time, batch, hidden]
    projections = tuple(map(input_weights, weights))
    gxs = tuple(_project_gates(p, x, count) for p, x in zip(projections, xs, strict=True))
    step = tuple(map(step_weights, weights))
    ys, hs, ss, residuals = _forward(mode, step, projections, gxs, h0s, s0s, mask, save=True)
    return (ys, hs, ss), (weights, xs, mask, residuals)


def _recurrence_bwd(mode, residuals, cotangents):
    weights, xs, mask, residuals = residuals  # residuals per direction: (h_{t-1}, state_{t-1}, saved, u)
    gates = GATES[mode]
    dys, dhs, dss = cotangents

    def direction_step(w: Weights, dh, ds, residuals_t, dy, m):
        h, s, saved_t, _ = residuals_t  # dh, ds: gradients of h_t and state_t
        dh_total = dh + dy  # h_t is both the output and the next step's input
        du = dh_total if w.w_hr is None else dh_total @ w.w_hr
        dh_prev, ds_prev, dgx, dgh = gates.gradient(saved_t, h, s, ds, du)  # dgx, dgh: [batch, gates * hidden]
        dh_prev = dh_prev + dgh @ w.w_hh
        zero = jnp.zeros_like
        dh_prev, ds_prev = _select(m, (dh_prev, ds_prev), (dh, ds))  # a skipped step passes them on
        dgx, dgh, dh_total = _select(m, (dgx, dgh, dh_total), (zero(dgx), zero(dgh), zero(dh_total)))
        return (dh_prev, ds_prev), (dgx, () if gates.tied else dgh, dh_total if w.w_hr is not None else ())

    def step(carry, inputs):
        residuals_t, dy, m = inputs
        steps = [
            direction_step(w, dh, ds, r, dy_d, m)
            for w, (dh, ds), r, dy_d in zip(weights, carry, residuals_t, dy, strict=True)
        ]
        return tuple(c for c, _ in steps), tuple(out for _, out in steps)

    # the residuals without u (read after the loop only): [time, batch, ...] per direction
    loop_residuals = tuple((h, s, saved, ()) for h, s, saved, _ in residuals)
    carry, gradients = jax.lax.scan(
        step, tuple(zip(dhs, dss, strict=True)), (loop_residuals, dys, mask), reverse=True
    )
    d_weights, dxs = [], []
    for w, x, (hs, _, _, us), (dgx, dgh, dh_totals) in zip(weights, xs, residuals, gradients, strict=True):
        if gates.tied:
            dgh = dgx  # [time, batch, gates * hidden]
        # the weight gradients: one matrix product each, over all time steps and the batch
        d_weights.append(Weights(
            w_ih=_summed_outer_products(dgx, x),  # [gates * hidden, input]
            w_hh=_summed_outer_products(dgh, hs),  # [gates * hidden, proj or hidden]
            b_ih=None if w.b_ih is None else dgx.sum(axis=(0, 1)),
            b_hh=None if w.b_hh is None else dgh.sum(axis=(0, 1)),
            w_hr=None if w.w_hr is None else _summed_outer_products(dh_totals, us),  # [proj, hidden]
        ))
        dxs.append(jnp.einsum("tbg,gi->tbi", dgx, w.w_ih))  # [time, batch, input]
    dh0s, ds0s = zip(*carry, strict=True)
    return tuple(d_weights), tuple(dxs), dh0s, ds0s, None


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
