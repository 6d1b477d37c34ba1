"""The time loop: scan a cell kind over time, in either direction, with variable lengths.

This is the only place that loops over time. `scan_layer` runs one layer of a stack: its
directions step forward together in one loop, the reverse one over its input reversed, each
reading its weights in PyTorch's layout (`flaxseq.weights.Weights`) and stepping by its
`flaxseq.kinds.CellKind`.

The rules, with the measurements behind them in `docs/performance.md`:
- The input projection `x_t W_ih^T` is one product per gate over all steps, before the loop,
  its bias added in the step; not differentiated, it is computed inside the loop step by step
  when the projection of all steps would take more than `PROJECTION_BUFFER_BYTES`.
- Arrays the loop reads per step are kept per gate (`[time, batch, hidden]` each). Saving for
  the gradient, the loop writes each step's saved residuals over the per-gate parts it has just
  read, where shapes and dtypes match (the LSTM's four gates, three of the GRU's four arrays).
- The gradient is written by hand (`jax.custom_vjp`), as cuDNN does it: the backward loop
  carries only the carry's gradient and emits each step's gate gradients; the weight gradients
  are one product each over all steps, in PyTorch's layout, and so is the input's. A step's
  own gradient is its kind's `StepGradient`, or JAX's differentiation of its step.
- Variable lengths give what PyTorch's packed sequences give: outputs past a sequence's length
  are zero, the final carry is the state at its last valid step, and the reverse direction
  starts at each sequence's own last element (it reads each valid prefix reversed in place).
  Values past a length are never read: the input is zeroed there before anything uses it, so
  NaN or infinity in the padding reaches no output and no gradient.
"""

from functools import partial

import jax
import jax.numpy as jnp

from flaxseq.kinds import CellKind, check_step
from flaxseq.weights import InputWeights, StepWeights, Weights, input_weights, split_gates, step_weights

# Not differentiated, a larger input projection of all steps is computed step by step instead
PROJECTION_BUFFER_BYTES = 32 * 2**20


def reverse_index(lengths: jax.Array, time_steps: int) -> jax.Array:
    """`[time, batch]` index that reverses each column's first `lengths[b]` steps, fixing the rest."""
    t = jnp.arange(time_steps)[:, None]  # [time, 1]
    return jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def scan_layer(
    kind: CellKind, weights: list[Weights], x: jax.Array, carries: list, lengths: jax.Array | None = None,
    custom_gradient: bool = True,
):
    """Run one layer over the time axis of `x`: its directions, forward then reverse, in one loop.

    Each step is, per direction, `gx = x_t W_ih^T + b_ih; gh = h W_hh^T + b_hh; carry =
    kind.step(gx, gh, carry)` (gates split into blocks), then `h = h W_hr^T` where `weights.w_hr`
    is given; the step outputs `h`.

    Args:
      kind: the cell kind.
      weights: one `Weights` per direction, `[forward]` or `[forward, reverse]`, PyTorch's layout.
      x: the layer's input, `[time, batch, input]`.
      carries: one initial carry per direction, `h [batch, proj or hidden]` or `(h, c)`.
      lengths: `[batch]` integers, or None when every sequence fills the time axis. Values are
        clipped to [0, time]; a sequence of length 0 gives zero outputs and keeps its carry.
      custom_gradient: differentiate by the hand-written loop gradient (reverse mode only);
        False: let JAX differentiate the loop (`plain_recurrence`), which forward mode needs.

    Returns:
      `(outputs, finals)`, per direction: outputs `[time, batch, proj or hidden]` in input time
      order, and the final carry.
    """
    _check_kind(kind, weights[0], x, carries[0])
    time_steps = x.shape[0]
    if lengths is None:
        mask = None

        def reverse(a):
            return jnp.flip(a, axis=0)
    else:
        lengths = jnp.clip(lengths, 0, time_steps)
        mask = jnp.arange(time_steps)[:, None] < lengths[None, :]  # [time, batch]
        x = jnp.where(mask[:, :, None], x, jnp.zeros_like(x))  # the padding is never read
        index = reverse_index(lengths, time_steps)[:, :, None]  # [time, batch, 1], an involution

        def reverse(a):
            return jnp.take_along_axis(a, index, axis=0)

    xs = tuple(reverse(x) if direction else x for direction in range(len(weights)))
    loop = recurrence if custom_gradient else plain_recurrence
    ys, finals = loop(kind, tuple(weights), xs, tuple(carries), mask)
    ys = [reverse(y) if direction else y for direction, y in enumerate(ys)]
    return ys, list(finals)


def _check_kind(kind: CellKind, weights: Weights, x: jax.Array, carry) -> None:
    """The step must map a carry to a carry of the same form (`flaxseq.kinds.check_step`)."""
    batch, hidden = x.shape[1], weights.w_ih.shape[0] // kind.gates
    block = jax.ShapeDtypeStruct((batch, hidden), x.dtype)
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), carry)
    expected = kind.with_hidden(spec, block)  # the step's h is projected after it
    check_step(kind, (block,) * kind.gates, (block,) * kind.gates, spec, expected)


def _select(mask, new, old):
    """`new` where `mask` (`[batch]`, or None: everywhere), else `old`; any pytree of `[batch, ...]`."""
    if mask is None:
        return new
    return jax.tree.map(lambda a, b: jnp.where(mask[:, None], a, b), new, old)


def _project_gates(projection: InputWeights, x: jax.Array, count: int) -> tuple:
    """`x W_ih^T` without the bias, as `count` per-gate parts: `[..., input] -> [..., hidden]` each.

    One product per gate writes each part where the loop reads it; the bias is added in the
    loop's step, where it costs no pass of its own.
    """
    return tuple(x @ w for w in split_gates(projection.w_ih, count))


def _forward(kind: CellKind, weights: tuple, projections: tuple, xs: tuple, carries: tuple, mask, save: bool):
    """The loop over time, every direction (a tuple entry each) stepping forward together.

    Per direction: `weights` its `StepWeights`, `projections` its `InputWeights`; `xs` either
    its inputs `[time, batch, input]`, projected at each step, or their projections without the
    bias (`_project_gates`), a tuple of per-gate parts `[time, batch, hidden]`. The step adds
    `b_ih` either way. With `save`, also the residuals of each step that the backward loop
    reads: the carry before the step, the step's own residuals, and the unprojected `h` with a
    projection; saving from per-gate parts, the loop is `_forward_in_place`. Returns `(ys,
    finals, residuals)`, each a tuple per direction.
    """
    count = kind.gates
    step_fn = kind.differentiable().forward if save else None

    def direction_step(w: StepWeights, projection: InputWeights, carry, x_t, m):
        # x_t: the input [batch, input], or its per-gate projection without the bias (a tuple)
        gx_t = x_t if isinstance(x_t, tuple) else split_gates(x_t @ projection.w_ih, count)
        if projection.b_ih is not None:
            gx_t = tuple(a + b for a, b in zip(gx_t, split_gates(projection.b_ih, count), strict=True))
        gh = kind.hidden(carry) @ w.w_hh  # [batch, gates * hidden]
        if w.b_hh is not None:
            gh = gh + w.b_hh
        gh = split_gates(gh, count)
        if save:
            new, saved = step_fn(gx_t, gh, carry)
        else:
            new, saved = kind.step(gx_t, gh, carry), ()
        u = kind.hidden(new)  # [batch, hidden]
        h_new = u if w.w_hr is None else u @ w.w_hr
        new = kind.with_hidden(new, h_new)
        y = h_new if m is None else jnp.where(m[:, None], h_new, jnp.zeros_like(h_new))
        residuals = (carry, saved, u if w.w_hr is not None else ()) if save else ()
        return _select(m, new, carry), (y, residuals)

    if save and all(isinstance(x, tuple) for x in xs):
        plans = tuple(_buffer_plan(step_fn, kind, x, c) for x, c in zip(xs, carries, strict=True))
        return _forward_in_place(direction_step, weights, projections, xs, carries, mask, plans)

    def step(carry, inputs):
        x_t, m = inputs  # per direction [batch, input] or per-gate parts [batch, hidden]; [batch] or None
        steps = [
            direction_step(w, projection, c, x_d, m)
            for w, projection, c, x_d in zip(weights, projections, carry, x_t, strict=True)
        ]
        return tuple(c for c, _ in steps), tuple(zip(*(out for _, out in steps), strict=True))

    finals, (ys, residuals) = jax.lax.scan(step, carries, (xs, mask))
    return ys, finals, residuals


def _buffer_plan(step_fn, kind: CellKind, parts: tuple, carry):
    """Which input part's buffer each of the step's saved residuals takes over.

    `parts`: a direction's per-gate projections, `[time, batch, hidden]` each. Returns `(plan,
    treedef)`: `plan` maps the index of a leaf of the step's saved residuals (`treedef`) to the
    index of a part of the same shape and dtype, each part taken once."""
    def spec(a):
        return jax.ShapeDtypeStruct(a.shape, a.dtype)

    part = jax.ShapeDtypeStruct(parts[0].shape[1:], parts[0].dtype)
    _, saved = jax.eval_shape(step_fn, (part,) * kind.gates, (part,) * kind.gates, jax.tree.map(spec, carry))
    leaves, treedef = jax.tree.flatten(saved)
    free, plan = list(range(len(parts))), {}
    for k, leaf in enumerate(leaves):
        j = next((j for j in free if (parts[j].shape[1:], parts[j].dtype) == (leaf.shape, leaf.dtype)), None)
        if j is not None:
            plan[k] = j
            free.remove(j)
    return plan, treedef


def _forward_in_place(direction_step, weights: tuple, projections: tuple, xs: tuple, carries: tuple, mask,
                      plans: tuple):
    """`_forward` saving residuals, each step's saved residuals written over the input parts it
    has read (`_buffer_plan`): a part of step t is read only at step t, so its buffer takes the
    residual of the same shape, and XLA neither fills nor copies an output buffer for it."""
    time_steps = xs[0][0].shape[0]

    def step(state, m):
        carry, buffers, t = state
        new_carries, new_buffers, outs = [], [], []
        for w, projection, c, parts, (plan, _) in zip(weights, projections, carry, buffers, plans, strict=True):
            x_t = tuple(jax.lax.dynamic_index_in_dim(p, t, 0, keepdims=False) for p in parts)
            new, (y, (previous, saved, u)) = direction_step(w, projection, c, x_t, m)
            leaves = jax.tree.leaves(saved)
            parts = list(parts)
            for k, j in plan.items():
                parts[j] = jax.lax.dynamic_update_index_in_dim(parts[j], leaves[k], t, 0)
            kept = tuple(None if k in plan else leaf for k, leaf in enumerate(leaves))
            new_carries.append(new)
            new_buffers.append(tuple(parts))
            outs.append((y, previous, kept, u))
        return (tuple(new_carries), tuple(new_buffers), t + 1), tuple(outs)

    state = (carries, xs, jnp.zeros((), jnp.int32))
    (finals, buffers, _), outs = jax.lax.scan(step, state, mask, length=time_steps)
    ys, residuals = [], []
    for (y, previous, kept, u), parts, (plan, treedef) in zip(outs, buffers, plans, strict=True):
        leaves = [parts[plan[k]] if k in plan else leaf for k, leaf in enumerate(kept)]
        ys.append(y)
        residuals.append((previous, jax.tree.unflatten(treedef, leaves), u))
    return tuple(ys), finals, tuple(residuals)


def plain_recurrence(kind: CellKind, weights: tuple, xs: tuple, carries: tuple, mask):
    """`recurrence` without its hand-written gradient: JAX differentiates the loop itself, in
    forward mode (`jax.jvp`, `jax.jacfwd`) too; the input projection is computed in the loop."""
    ys, finals, _ = _forward(
        kind, tuple(map(step_weights, weights)), tuple(map(input_weights, weights)), xs, carries, mask,
        save=False,
    )
    return ys, finals


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def recurrence(kind: CellKind, weights: tuple, xs: tuple, carries: tuple, mask):
    """`(ys, finals)`, each a tuple per direction, of the loop in `scan_layer`, with a
    hand-written gradient (module docstring). Every direction steps forward in time over its
    own input in `xs` (`[time, batch, input]`) from its carry in `carries`; `mask`: `[time,
    batch]` booleans (False: skip the step) or None. Not differentiated, a direction's input
    projection is computed inside the loop above `PROJECTION_BUFFER_BYTES`."""
    projections = tuple(map(input_weights, weights))
    inputs = tuple(
        x if x.shape[0] * x.shape[1] * w.w_ih.shape[0] * x.dtype.itemsize > PROJECTION_BUFFER_BYTES
        else _project_gates(p, x, kind.gates)  # per-gate [time, batch, hidden]
        for w, p, x in zip(weights, projections, xs, strict=True)
    )
    ys, finals, _ = _forward(kind, tuple(map(step_weights, weights)), projections, inputs, carries, mask, save=False)
    return ys, finals


def _recurrence_fwd(kind, weights, xs, carries, mask):
    # per direction, the projection of all steps before the loop, as per-gate parts [time, batch, hidden]
    projections = tuple(map(input_weights, weights))
    gxs = tuple(_project_gates(p, x, kind.gates) for p, x in zip(projections, xs, strict=True))
    step = tuple(map(step_weights, weights))
    ys, finals, residuals = _forward(kind, step, projections, gxs, carries, mask, save=True)
    return (ys, finals), (weights, xs, mask, residuals)


def _recurrence_bwd(kind, residuals, cotangents):
    weights, xs, mask, residuals = residuals  # residuals per direction: (carry_{t-1}, saved, u)
    backward = kind.differentiable().backward
    dys, d_finals = cotangents

    def direction_step(w: Weights, d_carry, residuals_t, dy, m):
        carry, saved_t, _ = residuals_t  # d_carry: the gradient of carry_t
        dh_total = kind.hidden(d_carry) + dy  # h_t is both the output and the next step's input
        du = dh_total if w.w_hr is None else dh_total @ w.w_hr
        dgx, dgh, d_prev = backward(saved_t, carry, kind.with_hidden(d_carry, du))
        dgx = jnp.concatenate(dgx, axis=-1) if len(dgx) > 1 else dgx[0]  # [batch, gates * hidden]
        tied = dgh is None
        if not tied:
            dgh = jnp.concatenate(dgh, axis=-1) if len(dgh) > 1 else dgh[0]
        dh_prev = kind.hidden(d_prev) + (dgx if tied else dgh) @ w.w_hh
        d_prev = kind.with_hidden(d_prev, dh_prev)
        zero = jnp.zeros_like
        d_prev = _select(m, d_prev, d_carry)  # a skipped step passes the gradient on
        dgx, dh_total = _select(m, (dgx, dh_total), (zero(dgx), zero(dh_total)))
        if not tied:
            dgh = _select(m, dgh, zero(dgh))
        return d_prev, (dgx, () if tied else dgh, dh_total if w.w_hr is not None else ())

    def step(carry, inputs):
        residuals_t, dy, m = inputs
        steps = [
            direction_step(w, d_carry, r, dy_d, m)
            for w, d_carry, r, dy_d in zip(weights, carry, residuals_t, dy, strict=True)
        ]
        return tuple(c for c, _ in steps), tuple(out for _, out in steps)

    # the residuals without u (read after the loop only): [time, batch, ...] per direction
    loop_residuals = tuple((carry, saved, ()) for carry, saved, _ in residuals)
    d_carries, gradients = jax.lax.scan(step, tuple(d_finals), (loop_residuals, dys, mask), reverse=True)
    d_weights, dxs = [], []
    for w, x, (carries, _, us), (dgx, dgh, dh_totals) in zip(weights, xs, residuals, gradients, strict=True):
        if isinstance(dgh, tuple):  # tied: dgh is dgx
            dgh = dgx  # [time, batch, gates * hidden]
        # the weight gradients: one matrix product each, over all time steps and the batch
        d_weights.append(Weights(
            w_ih=_summed_outer_products(dgx, x),  # [gates * hidden, input]
            w_hh=_summed_outer_products(dgh, kind.hidden(carries)),  # [gates * hidden, proj or hidden]
            b_ih=None if w.b_ih is None else dgx.sum(axis=(0, 1)),
            b_hh=None if w.b_hh is None else dgh.sum(axis=(0, 1)),
            w_hr=None if w.w_hr is None else _summed_outer_products(dh_totals, us),  # [proj, hidden]
        ))
        dxs.append(jnp.einsum("tbg,gi->tbi", dgx, w.w_ih))  # [time, batch, input]
    return tuple(d_weights), tuple(dxs), d_carries, None


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
