"""The open cell contract: a cell kind written here, outside the package, gets the whole stack.

The kind is a minimal gated unit in the reset-after form, two gates:
f = σ(W_f x + b_f + U_f h + c_f), n = tanh(W_n x + b_n + f ⊙ (U_n h + c_n)), h' = (1 − f) ⊙ n + f ⊙ h.
Its outputs, final states and gradients (every parameter, the input, the initial state) through
`flaxseq.RNNBase` are compared with a plain Python loop over the same equations, one sequence
at a time, differentiated by JAX, in float64.
"""

import dataclasses
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxseq
import flaxseq.nnx


def mgu_step(gx, gh, h):
    f = jax.nn.sigmoid(gx[0] + gh[0])
    n = jnp.tanh(gx[1] + f * gh[1])
    return (1 - f) * n + f * h


MGU = flaxseq.CellKind("MGU", 2, mgu_step)

INPUT, HIDDEN, TIME, BATCH = 3, 4, 5, 3


def reference(params, x, h0, lengths, num_layers, bidirectional):
    """The stack by hand: `x [time, batch, input]`, `h0 [layers * directions, batch, hidden]`."""
    directions = ("", "_reverse") if bidirectional else ("",)
    outputs, finals = [], []
    for b in range(x.shape[1]):
        length = int(lengths[b])
        layer_input = [x[t, b] for t in range(length)]
        sequence_finals = []
        for layer in range(num_layers):
            per_direction = []
            for d, suffix in enumerate(directions):
                name = f"_l{layer}{suffix}"
                w_ih, w_hh = params["weight_ih" + name], params["weight_hh" + name]
                b_ih, b_hh = params["bias_ih" + name], params["bias_hh" + name]
                h = h0[layer * len(directions) + d, b]
                order = range(length - 1, -1, -1) if d else range(length)
                ys = [None] * length
                for t in order:
                    gx, gh = w_ih @ layer_input[t] + b_ih, w_hh @ h + b_hh
                    f = jax.nn.sigmoid(gx[:HIDDEN] + gh[:HIDDEN])
                    n = jnp.tanh(gx[HIDDEN:] + f * gh[HIDDEN:])
                    h = (1 - f) * n + f * h
                    ys[t] = h
                per_direction.append(ys)
                sequence_finals.append(h)
            layer_input = [jnp.concatenate([ys[t] for ys in per_direction]) for t in range(length)]
        padding = [jnp.zeros(len(directions) * HIDDEN, x.dtype)] * (x.shape[0] - length)
        outputs.append(jnp.stack(layer_input + padding))
        finals.append(jnp.stack(sequence_finals))
    return jnp.stack(outputs, axis=1), jnp.stack(finals, axis=1)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_user_cell_matches_a_plain_loop(lengths, bidirectional):
    layer = flaxseq.RNNBase(MGU, INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional, param_dtype=jnp.float64)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((TIME, BATCH, INPUT)))
    h0 = jnp.asarray(rng.standard_normal((2 * layer.num_directions, BATCH, HIDDEN)))
    lens = jnp.asarray([TIME, 1, 3]) if lengths else jnp.full((BATCH,), TIME)
    params = layer.init(jax.random.key(0), x)["params"]
    assert params["weight_ih_l0"].shape == (2 * HIDDEN, INPUT)
    assert params["weight_hh_l1"].shape == (2 * HIDDEN, HIDDEN)
    w_out = jnp.asarray(rng.standard_normal((TIME, BATCH, layer.num_directions * HIDDEN)))
    w_h = jnp.asarray(rng.standard_normal(h0.shape))

    def loss(run):
        def value(params, x, h0):
            output, h_n = run(params, x, h0)
            return jnp.sum(w_out * output) + jnp.sum(w_h * h_n), (output, h_n)

        return jax.value_and_grad(value, argnums=(0, 1, 2), has_aux=True)

    def flax_run(params, x, h0):
        return layer.apply({"params": params}, x, h0, lengths=lens if lengths else None)

    def plain_run(params, x, h0):
        return reference(params, x, h0, lens, 2, bidirectional)

    (_, got), got_grads = jax.jit(loss(flax_run))(params, x, h0)
    (_, want), want_grads = loss(plain_run)(params, x, h0)
    for a, b in zip(jax.tree.leaves((got, got_grads)), jax.tree.leaves((want, want_grads)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # and JAX's own differentiation of the loop agrees with the hand-written loop gradient
    (_, _), plain_grads = jax.jit(loss(
        lambda p, x, h: layer.clone(custom_gradient=False).apply({"params": p}, x, h, lengths=lens)
    ))(params, x, h0)
    for a, b in zip(jax.tree.leaves(plain_grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_user_cell_gets_the_rest_of_the_stack():
    """batch_first, unbatched input and dropout between layers, through the user's kind."""
    layer = flaxseq.RNNBase(MGU, INPUT, HIDDEN, num_layers=2, batch_first=True, dropout=0.5, param_dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((BATCH, TIME, INPUT)))
    variables = layer.init(jax.random.key(0), x)
    output, h_n = layer.apply(variables, x)
    time_major, h_tm = layer.clone(batch_first=False).apply(variables, jnp.swapaxes(x, 0, 1))
    np.testing.assert_array_equal(output, jnp.swapaxes(time_major, 0, 1))
    one, h_one = layer.apply(variables, x[1])  # unbatched [time, input]
    np.testing.assert_allclose(one, output[1], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(h_one, h_n[:, 1], rtol=1e-14, atol=1e-14)
    dropped, _ = layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(dropped, output)  # the mask between the layers changed the result


def test_user_cell_as_a_single_step():
    cell = flaxseq.RNNCellBase(MGU, INPUT, HIDDEN, param_dtype=jnp.float64)
    rng = np.random.default_rng(2)
    x, h = jnp.asarray(rng.standard_normal((BATCH, INPUT))), jnp.asarray(rng.standard_normal((BATCH, HIDDEN)))
    params = cell.init(jax.random.key(0), x)["params"]
    got = cell.apply({"params": params}, x, h)
    gx = x @ params["weight_ih"].T + params["bias_ih"]
    gh = h @ params["weight_hh"].T + params["bias_hh"]
    f = jax.nn.sigmoid(gx[:, :HIDDEN] + gh[:, :HIDDEN])
    want = (1 - f) * jnp.tanh(gx[:, HIDDEN:] + f * gh[:, HIDDEN:]) + f * h
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_hand_written_gradient_is_used():
    """A `StepGradient` replaces JAX's differentiation of the step: a deliberately scaled one
    shows in the weight gradients."""

    def forward(gx, gh, h):
        return mgu_step(gx, gh, h), (gx, gh, h)

    def backward(residuals, h, dh):
        gx, gh, h = residuals
        _, vjp = jax.vjp(mgu_step, gx, gh, h)
        dgx, dgh, d_h = vjp(dh)
        return tuple(2 * g for g in dgx), tuple(2 * g for g in dgh), d_h

    doubled = flaxseq.CellKind("MGU2", 2, mgu_step, gradient=flaxseq.StepGradient(forward, backward))
    x = jnp.asarray(np.random.default_rng(3).standard_normal((1, 2, INPUT)))  # one step: no feedback
    grads = []
    for kind in (MGU, doubled):
        layer = flaxseq.RNNBase(kind, INPUT, HIDDEN, param_dtype=jnp.float64)
        params = layer.init(jax.random.key(0), x)["params"]
        grads.append(jax.grad(lambda p, layer=layer: layer.apply({"params": p}, x)[0].sum())(params))
    np.testing.assert_allclose(grads[1]["weight_ih_l0"], 2 * grads[0]["weight_ih_l0"], rtol=1e-13)


def scaled_kind(a, hand_written: bool) -> flaxseq.CellKind:
    """MGU with its input gates scaled by `a`, read from the closure (by the gradient's halves too)."""

    def step(gx, gh, h):
        return mgu_step(tuple(a * g for g in gx), gh, h)

    if not hand_written:
        return flaxseq.CellKind("SCALED", 2, step)

    def forward(gx, gh, h):
        return step(gx, gh, h), (gx, gh, h)

    def backward(residuals, h, dh):
        return jax.vjp(step, *residuals)[1](dh)

    return flaxseq.CellKind("SCALED", 2, step, gradient=flaxseq.StepGradient(forward, backward))


CLOSURE = ("cell kind 'SCALED': its step closes over a traced value that is being differentiated", "must come in "
           "through its parameters", "or construct the layer with custom_gradient=False")


@pytest.mark.parametrize("hand_written", [False, True])
@pytest.mark.parametrize("jit", [False, True])
def test_a_step_closing_over_a_differentiated_value_is_refused(jit, hand_written):
    """`jax.grad` with respect to a value the step captures: the loop's hand-written gradient
    has no rule for it; refused naming the kind and the two ways out (it was JAX's
    UnexpectedTracerError, or its custom_vjp closure error under `jax.jit`). With
    custom_gradient=False JAX differentiates it."""
    x = jnp.asarray(np.random.default_rng(5).standard_normal((TIME, BATCH, INPUT)))
    params = flaxseq.RNNBase(MGU, INPUT, HIDDEN, param_dtype=jnp.float64).init(jax.random.key(0), x)

    def loss(a, custom_gradient):
        layer = flaxseq.RNNBase(scaled_kind(a, hand_written), INPUT, HIDDEN, custom_gradient=custom_gradient)
        run = (jax.jit if jit else (lambda f: f))(lambda p: layer.apply(p, x)[0].sum())
        return run(params)

    with pytest.raises(TypeError) as error:
        jax.grad(loss)(1.5, True)
    assert all(part in str(error.value) for part in CLOSURE), str(error.value)
    step = 1e-6
    want = (loss(1.5 + step, False) - loss(1.5 - step, False)) / (2 * step)
    np.testing.assert_allclose(jax.grad(loss)(1.5, False), want, rtol=1e-7)


@pytest.mark.parametrize("hand_written", [False, True])
def test_a_step_closing_over_a_traced_value_not_differentiated(hand_written):
    """Under `jax.jit` a captured argument is traced but not differentiated: the gradient with
    respect to the parameters, the input and the state is the hand-written loop's, equal to JAX's."""
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal((TIME, BATCH, INPUT)))
    h0 = jnp.asarray(rng.standard_normal((1, BATCH, HIDDEN)))
    params = flaxseq.RNNBase(MGU, INPUT, HIDDEN, param_dtype=jnp.float64).init(jax.random.key(0), x)["params"]

    def grads(custom_gradient):
        @jax.jit
        def run(params, x, h0, a):
            layer = flaxseq.RNNBase(scaled_kind(a, hand_written), INPUT, HIDDEN, custom_gradient=custom_gradient)

            def loss(params, x, h0):
                output, h_n = layer.apply({"params": params}, x, h0, lengths=jnp.asarray([TIME, 2, 4]))
                return jnp.sum(output * output) + jnp.sum(h_n)

            return jax.value_and_grad(loss, argnums=(0, 1, 2))(params, x, h0)

        return run(params, x, h0, 1.5)

    got, want = grads(True), grads(False)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "step, message",
    [
        (lambda gx, gh, h: (h, h), "cell kind 'BAD': step must return the carry float64[3, 4], got (float64[3, 4], "),
        (lambda gx, gh, h: h[:, :2], "cell kind 'BAD': step must return the carry float64[3, 4], got float64[3, 2]"),
        (lambda gx, gh, h: h.astype(jnp.float32), "got float32[3, 4]"),
        (lambda gx, gh, h: gx[2], "cell kind 'BAD': step(gx, gh, carry) failed"),
    ],
)
def test_bad_step_is_refused_at_trace_time(step, message):
    layer = flaxseq.RNNBase(flaxseq.CellKind("BAD", 2, step), INPUT, HIDDEN, param_dtype=jnp.float64)
    x = jnp.zeros((TIME, BATCH, INPUT))
    with pytest.raises(TypeError, match=re.escape(message)):
        layer.init(jax.random.key(0), x)


def _mgu_forward(gx, gh, h):
    return mgu_step(gx, gh, h), (gx, gh, h)


def _mgu_backward(residuals, h, dh):
    gx, gh, h = residuals
    return jax.vjp(mgu_step, gx, gh, h)[1](dh)


@pytest.mark.parametrize(
    "forward, backward, message",
    [
        (_mgu_forward, lambda r, h, d: (*_mgu_backward(r, h, d)[:2], d[:, :2]),
         "cell kind 'BAD': gradient.backward must return d_carry float64[3, 4], got float64[3, 2]"),
        (_mgu_forward, lambda r, h, d: ((_mgu_backward(r, h, d)[0][0], d[:, :1]), None, d),
         "cell kind 'BAD': gradient.backward must return dgx[1] float64[3, 4], got float64[3, 1]"),
        (_mgu_forward, lambda r, h, d: (_mgu_backward(r, h, d)[0][:1], None, d),
         "gradient.backward must return dgx a tuple of 2 arrays float64[3, 4], got (float64[3, 4])"),
        (_mgu_forward, lambda r, h, d: (_mgu_backward(r, h, d)[0], tuple(g.astype(jnp.float32) for g in
                                                                        _mgu_backward(r, h, d)[1]), d),
         "cell kind 'BAD': gradient.backward must return dgh[0] float64[3, 4], got float32[3, 4]"),
        (_mgu_forward, lambda r, h, d: _mgu_backward(r, h, d)[:2],
         "gradient.backward must return a triple (dgx, dgh, d_carry), got ("),
        (lambda gx, gh, h: (h[:, :1], ()), _mgu_backward,
         "cell kind 'BAD': gradient.forward must return the carry' float64[3, 4], got float64[3, 1]"),
        (_mgu_forward, lambda r, h, d: r[5], "cell kind 'BAD': gradient.backward failed on well-formed inputs"),
    ],
)
def test_bad_step_gradient_is_refused_at_trace_time(forward, backward, message):
    """A `StepGradient` returning the wrong shapes is named before the backward loop runs (it
    failed inside it, in a broadcast of XLA's)."""
    kind = flaxseq.CellKind("BAD", 2, mgu_step, gradient=flaxseq.StepGradient(forward, backward))
    layer = flaxseq.RNNBase(kind, INPUT, HIDDEN, param_dtype=jnp.float64)
    x = jnp.zeros((TIME, BATCH, INPUT))
    params = layer.clone(custom_gradient=False).init(jax.random.key(0), x)  # JAX's gradient: halves unread
    with pytest.raises(TypeError, match=re.escape(message)):
        jax.grad(lambda p: layer.apply(p, x)[0].sum())(params)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: flaxseq.CellKind("", 2, mgu_step), TypeError, "CellKind name must be a non-empty str"),
        (lambda: flaxseq.CellKind("X", 0, mgu_step), ValueError,
         "CellKind 'X': gates must be an int of at least 1, got 0"),
        (lambda: flaxseq.CellKind("X", 2, None), TypeError, "CellKind 'X': step must be callable, got NoneType"),
        (lambda: flaxseq.CellKind("X", 2, mgu_step, gradient=mgu_step), TypeError,
         "gradient must be a flaxseq.StepGradient or None, got function"),
        (lambda: flaxseq.RNNBase("LSTM", 3, 4), TypeError, "kind must be a flaxseq.CellKind, got str"),
        (lambda: flaxseq.RNNCellBase("GRU", 3, 4), TypeError, "kind must be a flaxseq.CellKind, got str"),
    ],
)
def test_bad_kind(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_cell_state_kind_takes_and_returns_pairs():
    """A kind with `cell_state=True` (the LSTM's) through `RNNBase` is `flaxseq.LSTM`."""
    x = jnp.asarray(np.random.default_rng(4).standard_normal((TIME, BATCH, INPUT)))
    lstm = flaxseq.LSTM(INPUT, HIDDEN, 2, param_dtype=jnp.float64)
    base = flaxseq.RNNBase(flaxseq.kinds.LSTM, INPUT, HIDDEN, 2, param_dtype=jnp.float64)
    variables = lstm.init(jax.random.key(0), x)
    assert jax.tree.structure(variables) == jax.tree.structure(base.init(jax.random.key(0), x))
    for a, b in zip(jax.tree.leaves(lstm.apply(variables, x)), jax.tree.leaves(base.apply(variables, x)), strict=True):
        np.testing.assert_array_equal(a, b)


class MyLSTM(flaxseq.LSTM):
    pass


class MyGRU(flaxseq.GRU):
    pass


class MyRNN(flaxseq.RNN):
    pass


class MyRNNCell(flaxseq.RNNCell):
    pass


class MyLSTMCell(flaxseq.LSTMCell):
    pass


class MyGRUCell(flaxseq.GRUCell):
    pass


@pytest.mark.parametrize(
    "sub, base, kwargs, cell",
    [
        (MyLSTM, flaxseq.LSTM, {"num_layers": 2, "proj_size": 2}, False),
        (MyGRU, flaxseq.GRU, {"bidirectional": True}, False),
        (MyRNN, flaxseq.RNN, {"nonlinearity": "relu"}, False),
        (MyRNNCell, flaxseq.RNNCell, {"nonlinearity": "relu"}, True),
        (MyLSTMCell, flaxseq.LSTMCell, {}, True),
        (MyGRUCell, flaxseq.GRUCell, {}, True),
    ],
)
def test_subclasses_behave_as_their_bases(sub, base, kwargs, cell):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((BATCH, INPUT) if cell else (TIME, BATCH, INPUT)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        variables = base(INPUT, HIDDEN, **kwargs).init(jax.random.key(0), x)
        variables = jax.tree.map(lambda a: a * 3.0, variables)  # large enough that relu and tanh differ
        got = sub(INPUT, HIDDEN, **kwargs).apply(variables, x)
        want = base(INPUT, HIDDEN, **kwargs).apply(variables, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_relu_subclass_is_not_tanh():
    """The bug a class-name check gave: a subclass of `RNNCell` computed tanh for 'relu'."""
    x = jnp.asarray(np.random.default_rng(6).standard_normal((BATCH, INPUT))) * 5
    variables = flaxseq.RNNCell(INPUT, HIDDEN).init(jax.random.key(0), x)
    h = MyRNNCell(INPUT, HIDDEN, nonlinearity="relu").apply(variables, x)
    assert float(h.min()) == 0.0 and float(h.max()) > 1.0  # relu's range, not tanh's


class ReluRNN(flaxseq.RNN):
    def cell_kind(self):  # no nn.nowrap: the base keeps it out of linen's wrapping
        return flaxseq.kinds.RNN_RELU


class ReluRNNCell(flaxseq.RNNCell):
    def cell_kind(self):
        return flaxseq.kinds.RNN_RELU


@pytest.mark.parametrize("sub, base, cell", [(ReluRNN, flaxseq.RNN, False), (ReluRNNCell, flaxseq.RNNCell, True)])
def test_a_subclass_overriding_cell_kind_computes_that_kind(sub, base, cell):
    """A plain override of `cell_kind()` is what the layer computes, in `apply` and `tabulate`
    alike: relu where the base's fields say tanh."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((BATCH, INPUT) if cell else (TIME, BATCH, INPUT))) * 5
    variables = base(INPUT, HIDDEN).init(jax.random.key(0), x)
    got = sub(INPUT, HIDDEN).apply(variables, x)
    want = base(INPUT, HIDDEN, nonlinearity="relu").apply(variables, x)
    tanh = base(INPUT, HIDDEN).apply(variables, x)
    for a, b, c in zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(tanh), strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    assert sub.__name__ in sub(INPUT, HIDDEN).tabulate(jax.random.key(0), x)


class NNXMguGRU(flaxseq.nnx.GRU):
    def cell_kind(self):
        return MGU


class NNXMguGRUCell(flaxseq.nnx.GRUCell):
    def cell_kind(self):
        return MGU


@pytest.mark.parametrize("sub, linen, cell", [(NNXMguGRU, flaxseq.RNNBase, False),
                                              (NNXMguGRUCell, flaxseq.RNNCellBase, True)])
def test_an_nnx_subclass_overriding_cell_kind_computes_that_kind(sub, linen, cell):
    """NNX as linen: the override's kind sizes the parameters (two gates, not the GRU's three)
    and is what the layer steps, equal to linen's layer of that kind with the same weights (the
    override was ignored: a GRU)."""
    from flax import nnx

    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.standard_normal((BATCH, INPUT) if cell else (TIME, BATCH, INPUT)))
    module = sub(INPUT, HIDDEN, rngs=nnx.Rngs(0))
    assert module.cell_kind() is MGU and (module.weight_ih if cell else module.weight_ih_l0)[...].shape == (
        2 * HIDDEN, INPUT)
    params = {path[-1]: value for path, value in nnx.to_flat_state(nnx.state(module, nnx.Param))}
    twin = linen(MGU, INPUT, HIDDEN)
    want = twin.apply({"params": {k: v[...] for k, v in params.items()}}, x)
    for a, b in zip(jax.tree.leaves(module(x)), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    if cell:
        # one step of the loop: the same arithmetic in another order (float64 rounding)
        np.testing.assert_allclose(flaxseq.nnx.CellScan(module)(x[None])[0][0], want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", [flaxseq.kinds.GRU, flaxseq.kinds.RNN_TANH, MGU])
def test_proj_size_needs_a_cell_state(kind):
    """PyTorch's refusal for GRU and RNN, at construction (it failed in XLA at the first call)."""
    from flax import nnx

    with pytest.raises(ValueError, match=f"proj_size argument is only supported for a kind with a cell state "
                                         f"\\(LSTM\\), not {kind.name} \\(got proj_size=2\\)"):
        flaxseq.nnx.RNNBase(kind, INPUT, HIDDEN, proj_size=2, rngs=nnx.Rngs(0))


class Scale:
    """A learnable scale of the input gates, held outside the cell (the wrong place)."""

    def __init__(self):
        from flax import nnx

        self.a = nnx.Param(jnp.asarray(1.5))


SCALE = Scale()


def globally_scaled_step(gx, gh, h):
    return mgu_step(tuple(SCALE.a[...] * g for g in gx), gh, h)


def param_closure_kind():
    from flax import nnx

    a = nnx.Param(jnp.asarray(1.5))
    return flaxseq.CellKind("SCALED", 2, lambda gx, gh, h: mgu_step(tuple(a[...] * g for g in gx), gh, h))


def param_in_gradient_kind():
    from flax import nnx

    a = nnx.Param(jnp.asarray(2.0))

    def backward(residuals, h, dh):
        dgx, dgh, d_h = _mgu_backward(residuals, h, dh)
        return tuple(a[...] * g for g in dgx), dgh, d_h

    return flaxseq.CellKind("SCALED", 2, mgu_step, gradient=flaxseq.StepGradient(_mgu_forward, backward))


@dataclasses.dataclass(frozen=True)
class ScaledKind(flaxseq.CellKind):
    scale: object = None


def nnx_scaled_cell(read_param: bool):
    """An NNX cell whose kind's step is its own bound method, reading `self.scale` (an
    `nnx.Param`, refused) or `self.alpha` (a float, a constant: accepted)."""
    from flax import nnx

    class ScaledCell(flaxseq.nnx.RNNCellBase):
        def __init__(self, *args, **kwargs):
            self.scale, self.alpha = nnx.Param(jnp.asarray(1.5)), 1.5
            super().__init__(MGU, *args, **kwargs)

        def cell_kind(self):
            return flaxseq.CellKind("SCALED", 2, self.step_by_param if read_param else self.step_by_alpha)

        def step_by_param(self, gx, gh, h):
            return mgu_step(tuple(self.scale[...] * g for g in gx), gh, h)

        def step_by_alpha(self, gx, gh, h):
            return mgu_step(tuple(self.alpha * g for g in gx), gh, h)

    return ScaledCell(INPUT, HIDDEN, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "make, variable",
    [
        (lambda: flaxseq.CellKind("SCALED", 2, globally_scaled_step), "SCALE.a"),
        (param_closure_kind, "a"),
        (param_in_gradient_kind, "a"),
        (lambda: ScaledKind("SCALED", 2, mgu_step, scale=SCALE), "kind.scale.a"),
    ],
)
@pytest.mark.parametrize("cell", [False, True])
def test_an_nnx_kind_reading_an_nnx_variable_is_refused(make, variable, cell):
    """NNX holds a kind as static data: a `nnx.Param` its step reads got zero gradient from
    `nnx.grad` and kept its first value under `nnx.jit`, silently. Refused at construction,
    naming the module, the kind, the variable and where learnable parameters live."""
    from flax import nnx

    module = flaxseq.nnx.RNNCellBase if cell else flaxseq.nnx.RNNBase
    message = (f"{module.__name__}: cell kind 'SCALED' reads the NNX variable {variable} from outside its step's "
               "arguments; NNX holds a kind as static data, so nnx.grad would give that variable no gradient")
    with pytest.raises(TypeError, match=re.escape(message)) as error:
        module(make(), INPUT, HIDDEN, rngs=nnx.Rngs(0))
    assert "A kind's learnable parameters are the cell's parameters (weight_ih, weight_hh" in str(error.value)


def test_an_nnx_kind_bound_to_its_cell_reads_constants_only():
    """A kind whose step is a method of its cell: reading a plain attribute is a constant and
    allowed; reading the cell's own `nnx.Param` is refused, as any NNX variable is."""
    with pytest.raises(TypeError, match=re.escape("ScaledCell: cell kind 'SCALED' reads the NNX variable "
                                                  "self.scale from outside its step's arguments")):
        nnx_scaled_cell(read_param=True)
    cell = nnx_scaled_cell(read_param=False)
    x = jnp.asarray(np.random.default_rng(7).standard_normal((BATCH, INPUT)))
    want = flaxseq.RNNCellBase(scaled_kind(1.5, False), INPUT, HIDDEN).apply(
        {"params": {name: getattr(cell, name)[...] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}}, x)
    np.testing.assert_array_equal(cell(x), want)


def test_rnn_base_takes_proj_size_as_lstm_does():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((TIME, BATCH, INPUT)))
    lstm = flaxseq.LSTM(INPUT, HIDDEN, 2, bidirectional=True, proj_size=2, param_dtype=jnp.float64)
    base = flaxseq.RNNBase(flaxseq.kinds.LSTM, INPUT, HIDDEN, 2, bidirectional=True, proj_size=2,
                           param_dtype=jnp.float64)
    params = lstm.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, base.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, params)
    output, (h_n, c_n) = base.apply(params, x)
    expected = lstm.apply(params, x)
    assert output.shape == (TIME, BATCH, 4) and h_n.shape == (4, BATCH, 2) and c_n.shape == (4, BATCH, HIDDEN)
    jax.tree.map(np.testing.assert_array_equal, (output, (h_n, c_n)), expected)
    with pytest.raises(ValueError, match="proj_size argument is only supported for a kind with a cell state"):
        flaxseq.RNNBase(flaxseq.kinds.GRU, INPUT, HIDDEN, proj_size=2)
