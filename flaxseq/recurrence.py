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
  read, where shapes and dtypes match (the LSTM's four gates, three of the GRU's four arrays);
  the backward loop writes each step's gate gradients over the saved residuals in turn (the
  LSTM's four, four of the GRU's six): for those, XLA fills and copies no stacked output.
- The gradient is written by hand (`jax.custom_vjp`), as cuDNN does it: the backward loop
  carries only the carry's gradient and emits each step's gate gradients; the weight gradients
  are one product each over all steps, in PyTorch's layout, and so is the input's, all from
  one transposed copy of the gate gradients up to `TRANSPOSED_COPY_BYTES`, above it from the
  per-gate parts as they are and one transposed copy of the input and of `h`. A step's own
  gradient is its kind's `StepGradient`, or JAX's differentiation of its step.
- Outputs come out time-major, or batch-major (`[batch, time, ...]`, for a batch-first
  layer's last layer): the loop writes each step's output into its place in that layout and
  the backward loop reads each step's output gradient from there, so no transposed copy is
  made on either side, and what the caller computes from the outputs reads a row-major array.
- Variable lengths give what PyTorch's packed sequences give: outputs past a sequence's length
  are zero, the final carry is the state at its last valid step, and the reverse direction
  starts at each sequence's own last element (it reads each valid prefix reversed in place).
  Values past a length are never read: the input is zeroed there before anything uses it, so
  NaN or infinity in the padding reaches no output and no gradient.
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from flaxseq.kinds import CellKind, StepGradient, check_gradient, check_step
from flaxseq.weights import InputWeights, StepWeights, Weights, input_weights, split_gates, step_weights

# Not differentiated, a larger input projection of all steps is computed step by step instead
PROJECTION_BUFFER_BYTES = 32 * 2**20
# Larger gate gradients are not copied transposed for the weight gradients (`_weight_gradients`)
TRANSPOSED_COPY_BYTES = 8 * 2**20


def reverse_index(lengths: jax.Array, time_steps: int) -> jax.Array:
    """`[time, batch]` index that reverses each column's first `lengths[b]` steps, fixing the rest."""
    t = jnp.arange(time_steps)[:, None]  # [time, 1]
    return jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def scan_layer(
    kind: CellKind, weights: list[Weights], x: jax.Array, carries: list, lengths: jax.Array | None = None,
    custom_gradient: bool = True, batch_major: bool = False,
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
      custom_gradient: differentiate by the hand-written loop gradient (reverse mode only: forward
        mode raises a `TypeError` naming the kind, or under `jax.jit` JAX's own custom_vjp
        message, raised past this function; a step closing over a value being differentiated is
        refused, `closed_recurrence`); False: let JAX differentiate the loop
        (`plain_recurrence`), which forward mode and such steps need.
      batch_major: the outputs as `[batch, time, proj or hidden]`, written so by the loop.

    Returns:
      `(outputs, finals)`, per direction: outputs `[time, batch, proj or hidden]` (`[batch,
      time, ...]` with `batch_major`) in input time order, and the final carry.
    """
    _check_kind(kind, weights[0], x, carries[0], custom_gradient)
    time_steps = x.shape[0]
    if lengths is None:
        mask = None

        def reverse(a, axis=0):
            return jnp.flip(a, axis=axis)
    else:
        lengths = jnp.clip(jnp.asarray(lengths, jnp.int32), 0, time_steps)  # a narrow dtype would wrap
        mask = jnp.arange(time_steps)[:, None] < lengths[None, :]  # [time, batch]
        x = jnp.where(mask[:, :, None], x, jnp.zeros_like(x))  # the padding is never read
        index = reverse_index(lengths, time_steps)[:, :, None]  # [time, batch, 1], an involution

        def reverse(a, axis=0):
            return jnp.take_along_axis(a, index if axis == 0 else jnp.swapaxes(index, 0, 1), axis=axis)

    xs = tuple(reverse(x) if direction else x for direction in range(len(weights)))
    args = (tuple(weights), xs, tuple(carries), mask)
    if not custom_gradient:
        ys, finals = plain_recurrence(kind, batch_major, *args)
    else:
        consts, bind = _closed_over(kind, weights[0], x, carries[0])
        try:
            if consts:
                ys, finals = closed_recurrence(kind.name, bind, batch_major, *args, consts)
            else:
                ys, finals = recurrence(kind, batch_major, *args)
        except TypeError as error:  # JAX's words for forward mode through a custom_vjp, outside `jax.jit`
            if "forward-mode autodiff" not in str(error):
                raise
            raise TypeError(_FORWARD_MODE.format(name=kind.name)) from error
    time_axis = 1 if batch_major else 0
    ys = [reverse(y, time_axis) if direction else y for direction, y in enumerate(ys)]
    return ys, list(finals)


def _check_kind(kind: CellKind, weights: Weights, x: jax.Array, carry, custom_gradient: bool) -> None:
    """The step must map a carry to a carry of the same form (`flaxseq.kinds.check_step`), and
    a hand-written gradient the loop uses return what the backward loop reads (`check_gradient`)."""
    batch, hidden = x.shape[1], weights.w_ih.shape[0] // kind.gates
    block = jax.ShapeDtypeStruct((batch, hidden), x.dtype)
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), carry)
    expected = kind.with_hidden(spec, block)  # the step's h is projected after it
    check_step(kind, (block,) * kind.gates, (block,) * kind.gates, spec, expected)
    if custom_gradient and kind.gradient is not None:
        check_gradient(kind, (block,) * kind.gates, (block,) * kind.gates, spec, expected)


_FORWARD_MODE = (
    "cell kind {name!r}: forward-mode differentiation (jax.jvp, jax.jacfwd) is not defined for the "
    "hand-written gradient of the time loop (custom_gradient=True, reverse mode only); construct the layer "
    "with custom_gradient=False, and JAX differentiates the loop itself, with the same values"
)


def _closed_over(kind: CellKind, weights: Weights, x: jax.Array, carry) -> tuple:
    """`(consts, bind)`: the traced values that `kind`'s step, or its hand-written gradient,
    reads from its closure and that JAX could be differentiating (`jax.closure_convert`: arrays
    of an outer `jax.grad`, `jax.jit`), and `bind(consts)`, the same kind reading them from
    `consts` instead. `consts` is `()` for a kind that closes over no traced value, as the
    built-in ones; `closed_recurrence` then refuses to differentiate with respect to them."""
    block = jax.ShapeDtypeStruct((x.shape[1], weights.w_ih.shape[0] // kind.gates), x.dtype)
    gates = (block,) * kind.gates
    carry = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), carry)
    step, step_consts = jax.closure_convert(kind.step, gates, gates, carry)
    halves, consts = [], [tuple(step_consts)]
    if kind.gradient is not None:
        _, residuals = jax.eval_shape(kind.gradient.forward, gates, gates, carry)
        for fn, args in ((kind.gradient.forward, (gates, gates, carry)),
                         (kind.gradient.backward, (residuals, carry, kind.with_hidden(carry, block)))):
            converted, closed = jax.closure_convert(fn, *args)
            halves.append(converted)
            consts.append(tuple(closed))
    if not any(consts):
        return (), None

    def bind(consts):
        def with_consts(fn, values):
            return lambda *args: fn(*args, *values)

        gradient = None if not halves else StepGradient(*map(with_consts, halves, consts[1:]))
        return dataclasses.replace(kind, step=with_consts(step, consts[0]), gradient=gradient)

    return tuple(consts), bind


def _select(mask, new, old):
    """`new` where `mask` (`[batch]`, or None: everywhere), else `old`; any pytree of `[batch, ...]`."""
    if mask is None:
        return new
    return jax.tree.map(lambda a, b: jnp.where(mask[:, None], a, b), new, old)


def _project_gates(w_ih: jax.Array, x: jax.Array, count: int) -> tuple:
    """`x W_ih^T` without the bias, as `count` per-gate parts: `[..., input] -> [..., hidden]` each.

    One product per gate writes each part where the loop reads it; the bias is added in the
    loop's step, where it costs no pass of its own. Each gate's block of `w_ih` (PyTorch's
    layout, `[gates * hidden, input]`) is the product's right operand as it is, contracted on its
    input axis: XLA:CPU's fast kernel takes it so, and no transposed or sliced copy is made.
    """
    contract = (((x.ndim - 1,), (1,)), ((), ()))
    return tuple(jax.lax.dot_general(x, w, contract) for w in jnp.split(w_ih, count, axis=0))


def _forward(kind: CellKind, weights: tuple, projections: tuple, xs: tuple, carries: tuple, mask, save: bool,
             batch_major: bool = False):
    """The loop over time, every direction (a tuple entry each) stepping forward together.

    Per direction: `weights` its `StepWeights`, `projections` its `InputWeights`; `xs` either
    its inputs `[time, batch, input]`, projected at each step, or their projections without the
    bias (`_project_gates`), a tuple of per-gate parts `[time, batch, hidden]`. The step adds
    `b_ih` either way. With `save`, also the residuals of each step that the backward loop
    reads: the carry before the step, the step's own residuals, and the unprojected `h` with a
    projection; saving from per-gate parts, the loop is `_forward_in_place`. Returns `(ys,
    finals, residuals)`, each a tuple per direction, `ys` `[time, batch, size]`, or `[batch,
    time, size]` written so step by step with `batch_major` (`_output_buffers`).
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

    outputs = _output_buffers(kind, carries, jax.tree.leaves(xs)[0].shape[0]) if batch_major else None
    if save and all(isinstance(x, tuple) for x in xs):
        plans = tuple(_buffer_plan(step_fn, kind, x, c) for x, c in zip(xs, carries, strict=True))
        return _forward_in_place(direction_step, weights, projections, xs, carries, mask, plans, outputs)

    def step(state, inputs):
        carry, outputs, t = state
        x_t, m = inputs  # per direction [batch, input] or per-gate parts [batch, hidden]; [batch] or None
        steps = [
            direction_step(w, projection, c, x_d, m)
            for w, projection, c, x_d in zip(weights, projections, carry, x_t, strict=True)
        ]
        outputs, ys = _write_outputs(outputs, tuple(y for _, (y, _) in steps), t)
        return (tuple(c for c, _ in steps), outputs, t + 1), (ys, tuple(r for _, (_, r) in steps))

    state = (carries, outputs, jnp.zeros((), jnp.int32))
    (finals, outputs, _), (ys, residuals) = jax.lax.scan(step, state, (xs, mask))
    return (ys if outputs is None else outputs), finals, residuals


def _output_buffers(kind: CellKind, carries: tuple, time_steps: int) -> tuple:
    """Per direction, the `[batch, time, size]` zeros a batch-major loop writes its outputs into."""
    return tuple(jnp.zeros((h.shape[0], time_steps, h.shape[1]), h.dtype) for h in map(kind.hidden, carries))


def _write_outputs(outputs, ys: tuple, t):
    """`(outputs, stacked)`: each direction's step-`t` output `[batch, size]` written into its
    batch-major buffer in `outputs`, nothing left for the scan to stack; `outputs` None
    (time-major): `(None, ys)`, the scan stacking them."""
    if outputs is None:
        return None, ys
    return tuple(jax.lax.dynamic_update_index_in_dim(o, y, t, 1) for o, y in zip(outputs, ys, strict=True)), ()


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
    return _match_buffers(enumerate(leaves), parts), treedef


def _match_buffers(values, buffers) -> dict:
    """`{key: index}` for `(key, value)` pairs of `values` (each `[batch, ...]`, in order), each
    taking the first free buffer of `buffers` (`[time, batch, ...]`) with its shape and dtype per
    step; a value that finds none is left out. Each buffer is taken once."""
    free, plan = list(range(len(buffers))), {}
    for key, value in values:
        j = next((j for j in free if (buffers[j].shape[1:], buffers[j].dtype) == (value.shape, value.dtype)), None)
        if j is not None:
            plan[key] = j
            free.remove(j)
    return plan


def _forward_in_place(direction_step, weights: tuple, projections: tuple, xs: tuple, carries: tuple, mask,
                      plans: tuple, outputs):
    """`_forward` saving residuals, each step's saved residuals written over the input parts it
    has read (`_buffer_plan`): a part of step t is read only at step t, so its buffer takes the
    residual of the same shape, and XLA neither fills nor copies an output buffer for it.
    `outputs`: the batch-major output buffers (`_output_buffers`), or None."""
    time_steps = xs[0][0].shape[0]

    def step(state, m):
        carry, buffers, outputs, t = state
        new_carries, new_buffers, outs, ys = [], [], [], []
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
            outs.append((previous, kept, u))
            ys.append(y)
        outputs, ys = _write_outputs(outputs, tuple(ys), t)
        return (tuple(new_carries), tuple(new_buffers), outputs, t + 1), (ys, tuple(outs))

    state = (carries, xs, outputs, jnp.zeros((), jnp.int32))
    (finals, buffers, outputs, _), (ys, outs) = jax.lax.scan(step, state, mask, length=time_steps)
    residuals = []
    for (previous, kept, u), parts, (plan, treedef) in zip(outs, buffers, plans, strict=True):
        leaves = [parts[plan[k]] if k in plan else leaf for k, leaf in enumerate(kept)]
        residuals.append((previous, jax.tree.unflatten(treedef, leaves), u))
    return (ys if outputs is None else outputs), finals, tuple(residuals)


def plain_recurrence(kind: CellKind, batch_major: bool, weights: tuple, xs: tuple, carries: tuple, mask):
    """`recurrence` without its hand-written gradient: JAX differentiates the loop itself, in
    forward mode (`jax.jvp`, `jax.jacfwd`) too; the input projection is computed in the loop."""
    ys, finals, _ = _forward(
        kind, tuple(map(step_weights, weights)), tuple(map(input_weights, weights)), xs, carries, mask,
        save=False, batch_major=batch_major,
    )
    return ys, finals


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def recurrence(kind: CellKind, batch_major: bool, weights: tuple, xs: tuple, carries: tuple, mask):
    """`(ys, finals)`, each a tuple per direction, of the loop in `scan_layer`, with a
    hand-written gradient (module docstring). Every direction steps forward in time over its
    own input in `xs` (`[time, batch, input]`) from its carry in `carries`; `mask`: `[time,
    batch]` booleans (False: skip the step) or None. `ys` are `[time, batch, size]`, or `[batch,
    time, size]` with `batch_major`. Not differentiated, a direction's input projection is
    computed inside the loop above `PROJECTION_BUFFER_BYTES`."""
    projections = tuple(map(input_weights, weights))
    inputs = tuple(
        x if x.shape[0] * x.shape[1] * w.w_ih.shape[0] * x.dtype.itemsize > PROJECTION_BUFFER_BYTES
        else _project_gates(w.w_ih, x, kind.gates)  # per-gate [time, batch, hidden]
        for w, x in zip(weights, xs, strict=True)
    )
    ys, finals, _ = _forward(kind, tuple(map(step_weights, weights)), projections, inputs, carries, mask,
                             save=False, batch_major=batch_major)
    return ys, finals


def _recurrence_fwd(kind, batch_major, weights, xs, carries, mask):
    # per direction, the projection of all steps before the loop, as per-gate parts [time, batch, hidden]
    projections = tuple(map(input_weights, weights))
    gxs = tuple(_project_gates(w.w_ih, x, kind.gates) for w, x in zip(weights, xs, strict=True))
    step = tuple(map(step_weights, weights))
    ys, finals, residuals = _forward(kind, step, projections, gxs, carries, mask, save=True, batch_major=batch_major)
    return (ys, finals), (weights, xs, mask, residuals)


def _recurrence_bwd(kind, batch_major, residuals, cotangents):
    weights, xs, mask, residuals = residuals  # residuals per direction: (carry_{t-1}, saved, u)
    backward = kind.differentiable().backward
    dys, d_finals = cotangents

    def direction_step(w: Weights, d_carry, residuals_t, dy, m):
        carry, saved_t = residuals_t  # d_carry: the gradient of carry_t
        dh_total = kind.hidden(d_carry) + dy  # h_t is both the output and the next step's input
        du = dh_total if w.w_hr is None else dh_total @ w.w_hr
        dgx, dgh, d_prev = backward(saved_t, carry, kind.with_hidden(d_carry, du))
        tied = dgh is None
        dz = (dgx if tied else dgh)
        dz = jnp.concatenate(dz, axis=-1) if len(dz) > 1 else dz[0]  # [batch, gates * hidden]
        dh_prev = kind.hidden(d_prev) + dz @ w.w_hh
        d_prev = kind.with_hidden(d_prev, dh_prev)
        d_prev = _select(m, d_prev, d_carry)  # a skipped step passes the gradient on
        zero = jnp.zeros_like
        dgx, dh_total = _select(m, (dgx, dh_total), (tuple(map(zero, dgx)), zero(dh_total)))
        if not tied:
            dgh = _select(m, dgh, tuple(map(zero, dgh)))
        return d_prev, (dgx, () if tied else dgh, dh_total if w.w_hr is not None else ())

    # the residuals without u (read after the loop only): [time, batch, ...] per direction
    loop_residuals = tuple((carry, saved) for carry, saved, _ in residuals)
    plans = tuple(_gradient_plan(kind, w, saved, carry) for w, (carry, saved) in
                  zip(weights, loop_residuals, strict=True))
    d_carries, gradients = _backward_in_place(direction_step, weights, tuple(d_finals), loop_residuals, dys,
                                              mask, plans, batch_major)
    d_weights, dxs = [], []
    for w, x, (carries, _, us), (dgx, dgh, dh_totals) in zip(weights, xs, residuals, gradients, strict=True):
        d_weight, dx = _weight_gradients(w, x, _rows(kind.hidden(carries)), dgx, dgh or dgx)
        if w.w_hr is not None:
            d_weight = d_weight._replace(w_hr=_stacked_transposed((dh_totals,)) @ _rows(us))  # [proj, hidden]
        d_weights.append(d_weight)
        dxs.append(dx)
    return tuple(d_weights), tuple(dxs), d_carries, None


def _weight_gradients(w: Weights, x: jax.Array, h: jax.Array, dgx: tuple, dgh: tuple):
    """`(Weights, dx)`: the gradients of `w_ih`, `w_hh` and the biases in PyTorch's layout
    (`w_hr` None), each one product over all steps and the batch, and the input's `[time,
    batch, input]`, from the gate gradients `dgx`, `dgh` (per-gate `[time, batch, hidden]`
    parts, the same tuple where tied), the input `x` `[time, batch, input]` and the carries'
    `h` before each step, `[time * batch, proj or hidden]`.

    Up to `TRANSPOSED_COPY_BYTES` of gate gradients, they are copied once transposed and
    stacked (`_stacked_transposed`), the row-major left operand of XLA:CPU's fast matrix kernel.
    Above it the copy, memory-bound and page-faulted anew at each call, costs more than that
    kernel saves: the smaller operands are copied transposed instead, the input and `h` (`v^T`,
    `[n, time * batch]`, once each), and each part is the right operand as it is, `(v^T dz_k)^T`
    and `dz_k W_ih,k` (finding 38). Only products read the parts there, the bias's a product
    with ones: a reduction fuses the write of step 0's gradients (`_backward_in_place`) into
    itself, and XLA copies every part to write it twice (`docs/performance.md`, finding 35)."""
    xs = _rows(x)
    if len(dgx) * dgx[0].size * dgx[0].dtype.itemsize <= TRANSPOSED_COPY_BYTES:
        dzx = _stacked_transposed(dgx)  # [gates * hidden, time * batch]
        dzh = dzx if dgh is dgx else _stacked_transposed(dgh)
        d_weight = Weights(
            w_ih=dzx @ xs,  # [gates * hidden, input]
            w_hh=dzh @ h,  # [gates * hidden, proj or hidden]
            b_ih=None if w.b_ih is None else dzx.sum(axis=1),
            b_hh=None if w.b_hh is None else dzh.sum(axis=1),
            w_hr=None,
        )
        dx = dzx.T @ w.w_ih
    else:
        def stacked(parts, v):  # per part, the sum over time and batch of its outer products with v
            vt = jax.lax.optimization_barrier(v.T)  # [n, time * batch], copied once for every part
            # (v^T g_k)^T; the barrier keeps XLA from folding the transpose back into the product
            return jnp.concatenate([jax.lax.optimization_barrier(vt @ _rows(g)).T for g in parts], axis=0)

        def summed(parts):
            ones = jnp.ones(xs.shape[0], xs.dtype)
            return jnp.concatenate([ones @ _rows(g) for g in parts])

        d_weight = Weights(
            w_ih=stacked(dgx, xs), w_hh=stacked(dgh, h),
            b_ih=None if w.b_ih is None else summed(dgx), b_hh=None if w.b_hh is None else summed(dgh),
            w_hr=None,
        )
        w_parts = jnp.split(w.w_ih, len(dgx), axis=0)  # [hidden, input] per gate
        dx = sum(_rows(g) @ w_k for g, w_k in zip(dgx, w_parts, strict=True))
    return d_weight, dx.reshape(*x.shape[:-1], w.w_ih.shape[1])


def _gradient_plan(kind: CellKind, w: Weights, saved, carry):
    """Which saved residual's buffer each of the step's gate gradients takes over.

    `saved`: a direction's saved residuals, leaves `[time, batch, ...]`, read by the backward
    loop only; `carry`: its saved carries before each step, `[time, batch, ...]`. Returns
    `(plan, treedef)`: `plan` maps `(0, k)` (the `k`-th block of `dgx`) or `(1, k)` (of `dgh`)
    to the index of a saved leaf (`treedef`) of the same shape and dtype, each leaf taken once."""
    def spec(a):
        return jax.ShapeDtypeStruct(a.shape[1:], a.dtype)

    def gate_gradients(saved_t, carry_t):
        u = jnp.zeros((kind.hidden(carry_t).shape[0], w.w_hh.shape[0] // kind.gates), kind.hidden(carry_t).dtype)
        dgx, dgh, _ = kind.differentiable().backward(saved_t, carry_t, kind.with_hidden(carry_t, u))
        return dgx, dgh

    leaves, treedef = jax.tree.flatten(saved)
    dgx, dgh = jax.eval_shape(gate_gradients, jax.tree.map(spec, saved), jax.tree.map(spec, carry))
    blocks = [((0, k), g) for k, g in enumerate(dgx)] + [((1, k), g) for k, g in enumerate(dgh or ())]
    return _match_buffers(blocks, leaves), treedef


def _backward_in_place(direction_step, weights: tuple, d_finals: tuple, loop_residuals: tuple, dys: tuple, mask,
                       plans: tuple, batch_major: bool):
    """The backward loop, from the last step to the first, every direction together; each
    step's gate gradients are written over the saved residuals it has read (`_gradient_plan`):
    a residual of step t is read only at step t, so its buffer takes the gradient of the same
    shape, and XLA neither fills nor copies an output buffer for it. Returns `(d_carries,
    gradients)`, per direction `(dgx, dgh, dh_totals)`: `dgx`, `dgh` tuples of per-gate
    `[time, batch, hidden]` (`dgh` `()` where it is `dgx`), `dh_totals` `[time, batch, proj]`
    with a projection, else `()`. `dys`: the outputs' gradients, `[time, batch, size]`, or
    `[batch, time, size]` with `batch_major`, read at each step where they are.

    Step t's gradients are written at the start of step t - 1, before its reads (and after the
    loop, at step 0): XLA updates a buffer in place only where every read of it comes after the
    write or feeds it, and several of a step's gradients read the same saved gate. The first
    step writes the residuals it is about to read back over themselves."""
    time_steps = dys[0].shape[1 if batch_major else 0]
    last = time_steps - 1
    orders, buffers, read = [], [], []  # per direction: the leaves taken (buffers), the others read per step
    for (carries, saved), (plan, _) in zip(loop_residuals, plans, strict=True):
        leaves = jax.tree.leaves(saved)
        order = sorted(set(plan.values()))
        orders.append(order)
        buffers.append(tuple(leaves[j] for j in order))
        read.append((carries, tuple(None if j in order else a for j, a in enumerate(leaves))))
    pending = tuple(tuple(b[last] for b in bufs) for bufs in buffers)  # written back unchanged first

    def step(state, inputs):
        d_carry, buffers, pending, t = state
        read_t, dy, m = inputs
        if batch_major:
            dy = tuple(jax.lax.dynamic_index_in_dim(d, t, 1, keepdims=False) for d in dys)
        new_d, new_buffers, new_pending, outs = [], [], [], []
        for w, d_c, bufs, ready, (carry, kept), dy_d, (plan, treedef), order in zip(
                weights, d_carry, buffers, pending, read_t, dy, plans, orders, strict=True):
            bufs = tuple(jax.lax.dynamic_update_index_in_dim(b, g, jnp.minimum(t + 1, last), 0)
                         for b, g in zip(bufs, ready, strict=True))
            leaves = list(kept)
            for b, j in zip(bufs, order, strict=True):
                leaves[j] = jax.lax.dynamic_index_in_dim(b, t, 0, keepdims=False)
            d_prev, (dgx, dgh, dh_total) = direction_step(w, d_c, (carry, jax.tree.unflatten(treedef, leaves)),
                                                          dy_d, m)
            blocks = {(0, k): g for k, g in enumerate(dgx)} | {(1, k): g for k, g in enumerate(dgh)}
            by_leaf = {j: blocks[key] for key, j in plan.items()}
            new_d.append(d_prev)
            new_buffers.append(bufs)
            new_pending.append(tuple(by_leaf[j] for j in order))
            outs.append((tuple(None if (0, k) in plan else g for k, g in enumerate(dgx)),
                         tuple(None if (1, k) in plan else g for k, g in enumerate(dgh)), dh_total))
        return (tuple(new_d), tuple(new_buffers), tuple(new_pending), t - 1), tuple(outs)

    state = (d_finals, tuple(buffers), pending, jnp.asarray(last, jnp.int32))
    scanned_dys = None if batch_major else dys
    (d_carries, buffers, pending, _), outs = jax.lax.scan(step, state, (tuple(read), scanned_dys, mask),
                                                          reverse=True)
    gradients = []
    for (dgx, dgh, dh_totals), bufs, ready, (plan, _), order in zip(outs, buffers, pending, plans, orders,
                                                                  strict=True):
        # step 0's gradients, and each taken leaf's buffer by the key of the gradient it holds
        bufs = [jax.lax.dynamic_update_index_in_dim(b, g, 0, 0) for b, g in zip(bufs, ready, strict=True)]
        taken = {key: bufs[order.index(j)] for key, j in plan.items()}
        gradients.append((tuple(taken.get((0, k), g) for k, g in enumerate(dgx)),
                          tuple(taken.get((1, k), g) for k, g in enumerate(dgh)), dh_totals))
    return d_carries, tuple(gradients)


def _rows(v):
    """`[time, batch, n]` -> `[time * batch, n]`."""
    return v.reshape(-1, v.shape[-1])


def _stacked_transposed(parts: tuple):
    """Per-gate `[time, batch, hidden]` parts -> `[gates * hidden, time * batch]`: the gate
    gradients transposed and stacked in one copy, the left operand of the weight gradients
    (`dz^T v`, PyTorch's layout) and, transposed back, of the input's (`dz W_ih`).

    The barrier keeps the copy: XLA:CPU's fast matrix kernel needs a row-major left operand,
    and without it XLA folds the transpose into the product and takes a slower kernel
    (`docs/performance.md`, finding 17)."""
    return jax.lax.optimization_barrier(jnp.concatenate([_rows(p).T for p in parts], axis=0))


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def closed_recurrence(name: str, bind, batch_major: bool, weights: tuple, xs: tuple, carries: tuple, mask,
                      consts: tuple):
    """`recurrence` of the kind `bind(consts)` (`_closed_over`), whose step reads traced values
    from its closure: they come in as `consts`, so that JAX sees them, and the gradient refuses
    to differentiate with respect to them (the hand-written loop gradient has no rule for them),
    naming the kind; with respect to the rest, it is `recurrence`'s."""
    return recurrence.fun(bind(consts), batch_major, weights, xs, carries, mask)


def _closed_recurrence_fwd(name, bind, batch_major, weights, xs, carries, mask, consts):
    # symbolic zeros: each argument's leaves come as jax.custom_derivatives.CustomVJPPrimal
    if any(leaf.perturbed for leaf in jax.tree.leaves(consts)):
        raise TypeError(
            f"cell kind {name!r}: its step closes over a traced value that is being differentiated "
            "(an array of an outer jax.grad or jax.jvp, captured by the step or its gradient, through "
            "jax.jit too); "
            "the hand-written gradient of the time loop (custom_gradient=True) differentiates only "
            "through the step's arguments: values the step depends on must come in through its "
            "parameters (the cell's weights, inputs and states), or construct the layer with "
            "custom_gradient=False, and JAX differentiates the loop itself"
        )
    weights, xs, carries, mask, consts = jax.tree.map(
        lambda leaf: leaf.value, (weights, xs, carries, mask, consts))
    outputs, residuals = _recurrence_fwd(bind(consts), batch_major, weights, xs, carries, mask)
    return outputs, (consts, residuals)


def _closed_recurrence_bwd(name, bind, batch_major, residuals, cotangents):
    consts, residuals = residuals
    cotangents = jax.tree.map(  # symbolic zeros: a cotangent that is zero may come as a SymbolicZero
        lambda c: jnp.zeros(c.shape, c.dtype) if isinstance(c, jax.custom_derivatives.SymbolicZero) else c,
        cotangents, is_leaf=lambda c: isinstance(c, jax.custom_derivatives.SymbolicZero),
    )
    gradients = _recurrence_bwd(bind(consts), batch_major, residuals, cotangents)
    return (*gradients, jax.tree.map(jnp.zeros_like, consts))  # not perturbed (the forward half refuses)


closed_recurrence.defvjp(_closed_recurrence_fwd, _closed_recurrence_bwd, symbolic_zeros=True)
