"""The fast paths: the recurrence's hand-written gradient and the cuDNN LSTM.

The gradient is checked against JAX's own differentiation of the same loop (float64, every mode,
lengths and directions); the cuDNN path's weight packing against `jax.experimental.rnn.lstm_ref`
on any machine, and the path itself against PyTorch where a GPU exists.
"""

import re

import flax.nnx
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import flaxseq
import flaxseq.nnx
import flaxseq.recurrence as recurrence
import parity
from flaxseq import cudnn
from flaxseq.weights import Weights
from parity.cases import LayerCase
from parity.compare import compare
from parity.layers import torch_forward

GPU = jax.default_backend() == "gpu"


@pytest.mark.parametrize("mode", ["RNN_TANH", "RNN_RELU", "LSTM", "LSTM_PROJ", "GRU"])
@pytest.mark.parametrize("lengths", [False, True])
def test_custom_gradient_equals_autodiff(mode, lengths):
    bias = not lengths  # both settings of each, in fewer compilations
    kind, _, act = mode.partition("_")
    extra = {"nonlinearity": act.lower()} if kind == "RNN" else {"proj_size": 3} if act == "PROJ" else {}
    module = getattr(flaxseq, kind)(4, 5, 2, bidirectional=True, bias=bias, param_dtype=jnp.float64, **extra)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((6, 3, 4)))
    kwargs = {"lengths": jnp.asarray([6, 1, 4])} if lengths else {}
    variables = module.init(jax.random.key(0), x)
    weights = [jnp.asarray(rng.standard_normal(o.shape)) for o in jax.tree.leaves(module.apply(variables, x))]

    def gradient(m):
        def loss(params, x):
            outputs = jax.tree.leaves(m.apply({"params": params}, x, **kwargs))
            return sum(jnp.sum(w * o) for w, o in zip(weights, outputs, strict=True))

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x)

    custom = gradient(module)
    reference = gradient(module.clone(custom_gradient=False))  # JAX's own differentiation of the loop
    for a, b in zip(jax.tree.leaves(custom), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_forward_mode_without_custom_gradient(kind):
    """`custom_gradient=False` allows `jax.jvp`: its directional derivative equals the hand-written
    gradient's dot product with the tangent (float64); the default refuses forward mode, naming
    the way out (it gave JAX's custom_vjp message alone). Under `jax.jit` JAX raises its own
    message when it differentiates the compiled function, past any flaxseq frame (the
    docstrings of `custom_gradient` say so)."""
    module = getattr(flaxseq, kind)(4, 5, 2, bidirectional=True, batch_first=True, param_dtype=jnp.float64)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((3, 6, 4)))
    lengths = jnp.asarray([6, 2, 4])
    params = module.init(jax.random.key(0), x)["params"]
    tangent = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape)), params)

    def loss(m):
        return lambda p: jnp.sum(jnp.sin(m.apply({"params": p}, x, lengths=lengths)[0]))

    _, directional = jax.jvp(loss(module.clone(custom_gradient=False)), (params,), (tangent,))
    grad = jax.grad(loss(module))(params)
    expected = sum(jnp.vdot(g, t) for g, t in zip(jax.tree.leaves(grad), jax.tree.leaves(tangent), strict=True))
    np.testing.assert_allclose(directional, expected, rtol=1e-12)
    refusal = (f"cell kind '{kind}': forward-mode differentiation (jax.jvp, jax.jacfwd) is not defined for the "
               "hand-written gradient of the time loop (custom_gradient=True, reverse mode only); construct the "
               "layer with custom_gradient=False")
    with pytest.raises(TypeError, match=re.escape(refusal)):
        jax.jvp(loss(module), (params,), (tangent,))
    scan = flaxseq.nnx.CellScan(getattr(flaxseq.nnx, kind + "Cell")(4, 5, rngs=flax.nnx.Rngs(0)))
    with pytest.raises(TypeError, match=re.escape(refusal)):
        jax.jacfwd(lambda x: scan(x)[1])(x[0])
    with pytest.raises(TypeError, match="forward-mode autodiff"):  # JAX's, past flaxseq's frames
        jax.jvp(jax.jit(loss(module)), (params,), (tangent,))


@pytest.mark.parametrize("mode", ["RNN_RELU", "LSTM", "LSTM_PROJ", "GRU"])
def test_projection_inside_the_loop_matches(mode, monkeypatch):
    """Above `PROJECTION_BUFFER_BYTES` inference projects step by step: same outputs (float64)."""
    kind, _, act = mode.partition("_")
    extra = {"nonlinearity": act.lower()} if kind == "RNN" else {"proj_size": 3} if act == "PROJ" else {}
    module = getattr(flaxseq, kind)(4, 5, 2, bidirectional=True, param_dtype=jnp.float64, **extra)
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((7, 3, 4)))
    lengths = jnp.asarray([7, 2, 5])
    variables = module.init(jax.random.key(0), x)
    apply = jax.jit(lambda v, x: module.apply(v, x, lengths=lengths))
    whole = apply(variables, x)
    monkeypatch.setattr(recurrence, "PROJECTION_BUFFER_BYTES", 0)
    stepwise = jax.jit(lambda v, x: module.apply(v, x, lengths=lengths))(variables, x)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(stepwise), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)
    # and it did take the other path: two products per step and direction (x_t and h) instead
    # of one; each layer's loop steps both directions
    assert _products_per_step(lambda v: module.apply(v, x, lengths=lengths), variables) == {2 * 2}
    monkeypatch.undo()
    assert _products_per_step(lambda v: module.apply(v, x, lengths=lengths), variables) == {1 * 2}


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "LSTM_PROJ", "GRU"])
def test_projection_before_the_loop_is_one_product_per_gate(mode):
    """Before the loop, each direction's input projection is `gates` products `[time, batch,
    hidden]`, not one `[time, batch, gates * hidden]` product split after it (finding 25), in
    the forward pass and in the training step. (One gate, the RNN's, has nothing to split: its case
    checks the count alone. The parity tests check the values.)"""
    kind, _, act = mode.partition("_")
    extra = {"nonlinearity": act.lower()} if kind == "RNN" else {"proj_size": 3} if act == "PROJ" else {}
    module = getattr(flaxseq, kind)(4, 5, 2, bidirectional=True, param_dtype=jnp.float64, **extra)
    x = jnp.asarray(np.random.default_rng(5).standard_normal((7, 2, 4)))  # [time, batch, input]
    variables = module.init(jax.random.key(0), x)
    gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[kind]

    def projections(fn, *args):
        return sum(
            e.primitive.name == "dot_general" and e.outvars[0].aval.shape[-1] == 5 and e.outvars[0].aval.ndim == 3
            for e in _eqns_outside_loops(jax.make_jaxpr(fn)(*args).jaxpr)
        )

    def loss(params):
        return (module.apply({"params": params}, x)[0] ** 2).sum()

    assert projections(lambda v: module.apply(v, x), variables) == gates * 2 * 2  # 2 directions, 2 layers
    assert projections(jax.grad(loss), variables["params"]) == gates * 2 * 2


@pytest.mark.parametrize("mode, taken, given", [("RNN_TANH", 1, 1), ("LSTM", 4, 4), ("LSTM_PROJ", 4, 4), ("GRU", 3, 4)])
def test_saved_residuals_take_the_projection_buffers(mode, taken, given):
    """Saving for the gradient, the forward loop writes each step's saved residuals over the
    per-gate projection parts it has just read: per direction, `taken` of its `[time, batch,
    hidden]` arrays are loop carries updated in place (all the LSTM's gates, three of the GRU's
    four saved arrays), not stacked outputs that XLA fills with zeros and copies first (finding
    32). The backward loop in turn writes the step's gate gradients over the saved residuals it
    has read: `given` of them per direction (all four of the GRU's saved arrays take four of its
    six gate gradients; finding 33). The values are the gradient tests' and the parity tests'."""
    kind, _, act = mode.partition("_")
    extra = {"nonlinearity": act.lower()} if kind == "RNN" else {"proj_size": 3} if act == "PROJ" else {}
    module = getattr(flaxseq, kind)(4, 5, 2, bidirectional=True, param_dtype=jnp.float64, **extra)
    x = jnp.asarray(np.random.default_rng(5).standard_normal((7, 2, 4)))  # [time, batch, input]
    params = module.init(jax.random.key(0), x)["params"]

    def loss(params):
        return (module.apply({"params": params}, x)[0] ** 2).sum()

    carried = []
    for eqn in _all_eqns(jax.make_jaxpr(jax.grad(loss))(params).jaxpr):
        if eqn.primitive.name == "scan":
            start = eqn.params["num_consts"]
            carries = eqn.invars[start:start + eqn.params["num_carry"]]
            carried.append((eqn.params["reverse"], sum(v.aval.shape == (7, 2, 5) for v in carries)))
    # two forward loops (one a layer, both directions in each) and their two backward loops
    assert sorted(carried) == [(False, taken * 2)] * 2 + [(True, given * 2)] * 2


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM_PROJ", "GRU"])
def test_weight_gradients_from_the_parts_match(mode, monkeypatch):
    """Above `TRANSPOSED_COPY_BYTES` the weight and input gradients come from the per-gate parts
    as they are, without their transposed copy: the input and `h` are copied transposed instead
    (an `optimization_barrier` each) and each part's product is kept from folding that transpose
    back (one each); the same gradients (float64), tied (RNN, LSTM) and untied (GRU), with
    lengths, biases and a projection."""
    kind, _, act = mode.partition("_")
    extra = {"nonlinearity": act.lower()} if kind == "RNN" else {"proj_size": 3} if act == "PROJ" else {}
    module = getattr(flaxseq, kind)(4, 5, 2, bidirectional=True, param_dtype=jnp.float64, **extra)
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal((7, 3, 4)))  # [time, batch, input]
    lengths = jnp.asarray([7, 2, 5])
    params = module.init(jax.random.key(0), x)["params"]

    def loss(params, x):
        output, final = module.apply({"params": params}, x, lengths=lengths)
        return jnp.sum(jnp.sin(output)) + sum(jnp.sum(f ** 3) for f in jax.tree.leaves(final))

    def barriers():
        jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, x).jaxpr
        return sum(e.primitive.name == "optimization_barrier" for e in _eqns_outside_loops(jaxpr))

    copied = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    copies = barriers()
    monkeypatch.setattr(recurrence, "TRANSPOSED_COPY_BYTES", 0)
    from_parts = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(copied), jax.tree.leaves(from_parts), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    projection = 2 * 2 if act == "PROJ" else 0  # `W_hr`'s own copy: 2 layers, 2 directions
    untied = 2 if kind == "GRU" else 1  # `dgh` transposed too where it is not `dgx`
    assert copies == 2 * 2 * untied + projection
    gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[kind]
    assert barriers() == 2 * 2 * (2 + 2 * gates) + projection  # v^T of x and h, (v^T dz_k) for W_ih and W_hh


@pytest.mark.parametrize("kind, lengths", [("LSTM", True), ("GRU", False)])
def test_batch_first_outputs_are_written_by_the_loop(kind, lengths):
    """With `batch_first`, the last layer's loop writes its outputs `[batch, time, size]` step
    by step (a loop carry of that shape, forward and backward, no transpose of the output
    outside the loops; finding 40), and the output and gradients equal the time-major layer's on
    the same data (float64), by the hand-written gradient and by JAX's alike."""
    batch_first = getattr(flaxseq, kind)(4, 5, 2, bidirectional=True, batch_first=True, param_dtype=jnp.float64)
    time_major = batch_first.clone(batch_first=False)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((3, 6, 4)))  # [batch, time, input]
    kwargs = {"lengths": jnp.asarray([6, 2, 4])} if lengths else {}
    params = batch_first.init(jax.random.key(0), x)["params"]
    weight = jnp.asarray(rng.standard_normal((3, 6, 10)))

    def loss(module, params, x, first):
        output = module.apply({"params": params}, x if first else jnp.swapaxes(x, 0, 1), **kwargs)[0]
        return jnp.sum(weight * (output if first else jnp.swapaxes(output, 0, 1))), output

    def value_and_grad(m, first):
        return jax.jit(jax.value_and_grad(lambda p, x: loss(m, p, x, first), (0, 1), has_aux=True))(params, x)

    autodiff = batch_first.clone(custom_gradient=False)
    results = [value_and_grad(m, first) for m, first in ((batch_first, True), (time_major, False), (autodiff, True))]
    (_, output), _ = results[0]
    np.testing.assert_allclose(output, jnp.swapaxes(results[1][0][1], 0, 1), rtol=1e-13, atol=1e-13)
    for other in results[1:]:
        for a, b in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(other[1]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)

    jaxpr = jax.make_jaxpr(jax.grad(lambda p: loss(batch_first, p, x, True)[0]))(params).jaxpr
    carried = []
    for eqn in _all_eqns(jaxpr):
        if eqn.primitive.name == "scan":
            start = eqn.params["num_consts"]
            carries = eqn.invars[start:start + eqn.params["num_carry"]]
            carried.append(sum(v.aval.shape == (3, 6, 5) for v in carries))
    assert sorted(carried) == [0, 0, 0, 2]  # of four loops, the last layer's forward one: one a direction
    assert not any(e.primitive.name == "transpose" and e.invars[0].aval.shape == (6, 3, 10)
                   for e in _eqns_outside_loops(jaxpr))


def test_a_loss_over_the_batch_first_output_is_a_plain_reduction():
    """XLA:CPU rewrites a sum over an array it holds transposed into a slow tree of 32-wide
    windows (finding 18, again in finding 40); the batch-first output is written batch first, so
    the compiled step of `(output ** 2).mean()` and its gradient holds no `reduce-window`."""
    module = flaxseq.LSTM(4, 64, batch_first=True)
    x = jnp.ones((16, 40, 4))  # [batch, time, input]; more than 32 steps, where the rewrite starts
    params = module.init(jax.random.key(0), x)["params"]

    def loss(params):
        return (module.apply({"params": params}, x)[0] ** 2).mean()

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile().as_text()
    assert "reduce-window" not in compiled


def _eqns_outside_loops(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        if eqn.primitive.name != "scan":
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from _eqns_outside_loops(sub)


def _products_per_step(fn, *args) -> set[int]:
    """The number of matrix products (projection excluded) in each time loop's step, except
    `W_hr` ones; a set over the loops of `fn`."""
    counts = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                body = eqn.params["jaxpr"].jaxpr
                dots = [e for e in _all_eqns(body) if e.primitive.name == "dot_general"]
                counts.add(sum(e.outvars[0].aval.shape[-1] != 3 for e in dots))  # 3: proj_size
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return counts


def _all_eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _all_eqns(sub)


def test_forward_only_matches_under_jit_and_grad():
    """The primal (no residuals) and the forward of the differentiated loop agree."""
    module = flaxseq.LSTM(4, 5, bidirectional=True, param_dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((6, 3, 4)))
    variables = module.init(jax.random.key(0), x)
    out = module.apply(variables, x)[0]
    out_vjp, _ = jax.vjp(lambda v: module.apply(v, x)[0], variables)
    np.testing.assert_array_equal(out, out_vjp)


# ---------------------------------------------------------------------------------------------
# cuDNN path


def _lstm_weights(module, variables) -> list[Weights]:
    params = variables["params"]
    names = [f"_l{k}" + s for k in range(module.num_layers) for s in ("", "_reverse")[: module.num_directions]]
    return [
        Weights(params[f"weight_ih{n}"], params[f"weight_hh{n}"], params.get(f"bias_ih{n}"),
                params.get(f"bias_hh{n}"), None)
        for n in names
    ]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_cudnn_packing_against_lstm_ref(bidirectional, bias):
    """cuDNN's layout, checked with JAX's pure reference of it: same outputs and final states."""
    from jax.experimental import rnn

    module = flaxseq.LSTM(4, 5, 2, bias=bias, batch_first=True, bidirectional=bidirectional, param_dtype=jnp.float64)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 6, 4)))
    count = 2 * module.num_directions
    h0, c0 = (jnp.asarray(rng.standard_normal((count, 3, 5))) for _ in range(2))
    lengths = jnp.asarray([6, 2, 4], jnp.int32)
    variables = module.init(jax.random.key(0), x)
    packed = cudnn.pack_weights(_lstm_weights(module, variables))
    assert packed.shape == (rnn.get_num_params_in_lstm(4, 5, 2, bidirectional),)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(packed, 4, 5, 2, bidirectional)
    y, h_n, c_n = rnn.lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, 4, 5, 2, 0.0, bidirectional)
    out, (h, c) = module.apply(variables, x, (h0, c0), lengths=lengths)
    for a, b in ((out, y), (h, h_n), (c, c_n)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_cudnn_errors():
    with pytest.raises(ValueError, match="does not support proj_size > 0, got proj_size=2"):
        flaxseq.LSTM(3, 4, proj_size=2, use_cudnn=True)
    kind_refusal = "use_cudnn=True runs cuDNN's LSTM: the kind must be flaxseq.kinds.LSTM, got GRU"
    with pytest.raises(ValueError, match=kind_refusal):  # the NNX base took any kind: cuDNN's LSTM on a GRU's weights
        flaxseq.nnx.RNNBase(flaxseq.kinds.GRU, 3, 4, use_cudnn=True, rngs=flax.nnx.Rngs(0))

    class GRUKindLSTM(flaxseq.LSTM):
        def cell_kind(self):
            return flaxseq.kinds.GRU

    with pytest.raises(ValueError, match=kind_refusal):
        GRUKindLSTM(3, 4, use_cudnn=True)
    x = jnp.zeros((2, 5, 3), jnp.float32)
    if not GPU:
        with pytest.raises(ValueError, match="needs JAX's CUDA backend"):
            flaxseq.LSTM(3, 4, use_cudnn=True).init(jax.random.key(0), x)
    module = flaxseq.LSTM(3, 4, 2, dropout=0.5, use_cudnn=True)
    with pytest.raises(ValueError, match="does not apply dropout between layers; got dropout=0.5"):
        module.init(jax.random.key(0), x, deterministic=False)
    with pytest.raises(ValueError, match="float32 only, got dtype float64"):
        flaxseq.LSTM(3, 4, use_cudnn=True, param_dtype=jnp.float64).init(jax.random.key(0), x.astype(jnp.float64))


@pytest.mark.skipif(not GPU, reason="the cuDNN path needs a CUDA GPU")
@pytest.mark.parametrize("case", [
    LayerCase("LSTM", num_layers=2, bidirectional=True, batch_first=True, hx=True, lengths=True, dtype="float32"),
    LayerCase("LSTM", num_layers=1, batch_first=False, hx=False, dtype="float32", bias=False),
    LayerCase("LSTM", num_layers=3, bidirectional=True, lengths=True, dtype="float32", batch=16, time=20,
              input_size=32, hidden_size=64),
], ids=lambda c: c.label())
def test_cudnn_parity(case):
    """`use_cudnn=True` against PyTorch (on the CPU, float32, TF32 off for JAX): outputs and gradients."""
    torch.manual_seed(3)
    torch_module = case.torch_module()
    flax_module, variables = parity.from_torch(torch_module)
    args, kwargs, input_names = case.inputs(np.random.default_rng(3))
    with jax.default_matmul_precision("highest"):
        report = compare(
            torch_module, flax_module.clone(use_cudnn=True), variables, args, kwargs, torch_call=torch_forward,
            output_names=case.output_names(), input_names=input_names, seed=3,
        )
    assert report.passed, "\n".join(report.failures())
