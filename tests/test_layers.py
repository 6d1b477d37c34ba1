"""flaxseq's layers on their own: equivalences, jit, gradients, dropout, initialisation."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import flaxseq

LAYERS = {
    "RNN": lambda **kw: flaxseq.RNN(4, 5, **kw),
    "LSTM": lambda **kw: flaxseq.LSTM(4, 5, **kw),
    "LSTM_PROJ": lambda **kw: flaxseq.LSTM(4, 5, proj_size=3, **kw),
    "GRU": lambda **kw: flaxseq.GRU(4, 5, **kw),
}


def make(name, **kw):
    layer = LAYERS[name](num_layers=2, bidirectional=True, param_dtype=jnp.float64, **kw)
    x = np.random.default_rng(0).standard_normal((6, 3, 4))
    return layer, layer.init(jax.random.key(0), x), x


def zeros_hx(layer, batch):
    count = layer.num_layers * layer.num_directions
    h = jnp.zeros((count, batch, layer.output_size))
    return (h, jnp.zeros((count, batch, layer.hidden_size))) if isinstance(layer, flaxseq.LSTM) else h


def assert_trees_equal(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)


def test_the_one_layer_dropout_warning_points_at_the_users_line():
    """At the line that builds the layer, in linen and NNX alike (NNX's pointed into flax's
    construction machinery, linen's at its dataclass `<string>`), once: not again for the
    copies linen makes in `init` and `apply`, as PyTorch warns once, at construction."""
    import flax.linen
    import flax.nnx

    import flaxseq.nnx

    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers") as record:
        line = inspect.currentframe().f_lineno
        layer = flaxseq.GRU(4, 5, dropout=0.5)
        flaxseq.nnx.LSTM(4, 5, dropout=0.5, rngs=flax.nnx.Rngs(0))
        variables = layer.init(jax.random.key(0), np.ones((6, 3, 4), np.float32))
        layer.apply(variables, np.ones((6, 3, 4), np.float32))
    assert [(w.filename, w.lineno) for w in record] == [(__file__, line + 1), (__file__, line + 2)]

    line = inspect.currentframe().f_lineno  # a submodule is built again at every apply: it warns while initialising
    class Model(flax.linen.Module):  # noqa: E306
        @flax.linen.compact
        def __call__(self, x):
            return flaxseq.LSTM(4, 5, dropout=0.5)(x)[0]

    model, x = Model(), np.ones((6, 3, 4), np.float32)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers") as record:
        variables = model.init(jax.random.key(0), x)
        model.apply(variables, x)
        model.apply(variables, x)
    assert [(w.filename, w.lineno) for w in record] == [(__file__, line + 4)]


@pytest.mark.parametrize("name", LAYERS)
def test_zero_hx_equals_no_hx(name):
    layer, variables, x = make(name)
    assert_trees_equal(layer.apply(variables, x, zeros_hx(layer, 3)), layer.apply(variables, x))


@pytest.mark.parametrize("name", LAYERS)
def test_full_lengths_equal_no_lengths(name):
    layer, variables, x = make(name)
    full = layer.apply(variables, x, lengths=np.full(3, 6))
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=0, atol=1e-15), full, layer.apply(variables, x))


@pytest.mark.parametrize("name", LAYERS)
def test_traced_lengths_equal_concrete(name):
    layer, variables, x = make(name)
    lengths = np.array([2, 6, 1])
    concrete = layer.apply(variables, x, lengths=lengths)
    traced = jax.jit(lambda v, x, n: layer.apply(v, x, lengths=n))(variables, x, jnp.asarray(lengths))
    assert_trees_equal(concrete, traced)


@pytest.mark.parametrize("name", LAYERS)
def test_outputs_past_length_are_zero_and_states_ignore_padding(name):
    layer, variables, x = make(name)
    lengths = np.array([2, 6, 1])
    output, _ = layer.apply(variables, x, lengths=lengths)
    for b, n in enumerate(lengths):
        assert np.all(np.asarray(output[n:, b]) == 0)
        assert np.any(np.asarray(output[:n, b]) != 0)
    # changing the padding changes nothing
    noisy = x.copy()
    for b, n in enumerate(lengths):
        noisy[n:, b] = 100.0
    assert_trees_equal(layer.apply(variables, noisy, lengths=lengths), layer.apply(variables, x, lengths=lengths))


def test_traced_lengths_out_of_range_are_clipped():
    layer, variables, x = make("GRU")
    apply = jax.jit(lambda n: layer.apply(variables, x, lengths=n))
    assert_trees_equal(apply(jnp.array([9, 6, 0])), apply(jnp.array([6, 6, 0])))
    output, h_n = apply(jnp.array([6, 6, 0]))
    assert np.all(np.asarray(output[:, 2]) == 0) and np.all(np.asarray(h_n[:, 2]) == 0)


@pytest.mark.parametrize("name", LAYERS)
def test_gradients_match_finite_differences(name):
    layer, variables, x = make(name, bias=True)
    lengths = np.array([3, 6, 1])

    def loss(params, x):
        output, state = layer.apply({"params": params}, x, lengths=lengths)
        return jnp.sum(jnp.sin(output)) + sum(jnp.sum(s**2) for s in jax.tree.leaves(state))

    check_grads(loss, (variables["params"], jnp.asarray(x)), order=1, modes=["rev"], eps=1e-6)


@pytest.mark.parametrize("name", LAYERS)
def test_loop_is_not_unrolled(name):
    layer, variables, _ = make(name)

    def equations(jaxpr) -> int:  # counted through nested jaxprs (scan bodies, jit calls)
        count = len(jaxpr.eqns)
        for eqn in jaxpr.eqns:
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        count += equations(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        count += equations(sub)
        return count

    def size(time):
        x = jnp.zeros((time, 3, 4))
        return equations(jax.make_jaxpr(lambda v, n: layer.apply(v, x, lengths=n))(variables, jnp.full(3, time)).jaxpr)

    assert size(5) == size(50) > 20


def test_dropout_between_layers():
    layer = flaxseq.LSTM(4, 5, num_layers=3, dropout=0.5)
    x = np.random.default_rng(0).standard_normal((6, 3, 4)).astype(np.float32)
    variables = layer.init(jax.random.key(0), x)

    def run(key, deterministic=False):
        return layer.apply(variables, x, deterministic=deterministic, rngs={"dropout": jax.random.key(key)})[0]

    assert not np.allclose(run(1), run(2))
    np.testing.assert_array_equal(run(1), run(1))
    np.testing.assert_array_equal(run(1, True), run(2, True))
    np.testing.assert_array_equal(run(1, True), layer.apply(variables, x)[0])


def test_no_dropout_after_last_layer():
    """With one layer, dropout has nothing to act on (PyTorch warns, as flaxseq does)."""
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        layer = flaxseq.GRU(4, 5, dropout=0.5)
    x = np.ones((6, 3, 4), np.float32)
    variables = layer.init(jax.random.key(0), x)
    out = layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert_trees_equal(out, layer.apply(variables, x))


@pytest.mark.parametrize("name", LAYERS)
def test_initialisation_is_pytorch_uniform(name):
    layer = LAYERS[name]()
    variables = layer.init(jax.random.key(0), jnp.zeros((2, 1, 4)))
    bound = 1 / math.sqrt(5)
    for value in jax.tree.leaves(variables):
        assert value.dtype == jnp.float32
        assert np.abs(value).max() <= bound and np.abs(value).max() > 0.8 * bound


def test_param_dtype_and_computation_dtype():
    x = np.ones((6, 3, 4))
    layer = flaxseq.GRU(4, 5, param_dtype=jnp.float64)
    variables = layer.init(jax.random.key(0), x)
    assert all(v.dtype == jnp.float64 for v in jax.tree.leaves(variables))
    assert layer.apply(variables, x)[0].dtype == jnp.float64
    low = flaxseq.GRU(4, 5, param_dtype=jnp.float64, dtype=jnp.float32)
    assert low.apply(variables, x)[0].dtype == jnp.float32


def test_float64_params_need_x64():
    layer = flaxseq.LSTM(4, 5, param_dtype=jnp.float64)
    with jax.enable_x64(False), pytest.raises(ValueError, match="param_dtype=float64 needs JAX's x64 mode"):
        layer.init(jax.random.key(0), np.ones((2, 1, 4), np.float32))


def test_unbatched_equals_batch_of_one():
    layer, variables, x = make("LSTM_PROJ")
    out, (h, c) = layer.apply(variables, x[:, 0])
    out1, (h1, c1) = layer.apply(variables, x[:, :1])
    assert_trees_equal((out, h, c), (out1[:, 0], h1[:, 0], c1[:, 0]))


def test_batch_first_is_a_transpose():
    layer, variables, x = make("GRU")
    first = flaxseq.GRU(4, 5, num_layers=2, bidirectional=True, batch_first=True, param_dtype=jnp.float64)
    out, h = first.apply(variables, np.swapaxes(x, 0, 1), lengths=np.array([2, 6, 1]))
    ref_out, ref_h = layer.apply(variables, x, lengths=np.array([2, 6, 1]))
    assert_trees_equal((np.swapaxes(out, 0, 1), h), (ref_out, ref_h))


@pytest.mark.parametrize("cell", [flaxseq.RNNCell, flaxseq.LSTMCell, flaxseq.GRUCell])
def test_cell_equals_one_step_layer(cell):
    """A cell is one time step of the one-layer layer with the same weights."""
    layer_type = {flaxseq.RNNCell: flaxseq.RNN, flaxseq.LSTMCell: flaxseq.LSTM, flaxseq.GRUCell: flaxseq.GRU}[cell]
    layer = layer_type(4, 5, param_dtype=jnp.float64)
    x = np.random.default_rng(1).standard_normal((1, 3, 4))
    variables = layer.init(jax.random.key(0), x)
    cell_params = {k.removesuffix("_l0"): v for k, v in variables["params"].items()}
    _, state = layer.apply(variables, x)
    cell_state = cell(4, 5, param_dtype=jnp.float64).apply({"params": cell_params}, x[0])
    # two different XLA programs: equal up to the last bit or two of float64
    jax.tree.map(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-14, atol=1e-16),
        jax.tree.map(lambda s: s[0], state), cell_state,
    )


@pytest.mark.parametrize("module, x, expected", [
    (flaxseq.LSTM(3, 4, 2, bidirectional=True), np.ones((5, 2, 3), np.float32),
     ["weight_ih_l1_reverse: float32[16,8]", "weight_hh_l0: float32[16,4]", "float32[5,2,8]"]),
    (flaxseq.LSTM(3, 4, proj_size=2), np.ones((5, 2, 3), np.float32), ["weight_hr_l0: float32[2,4]"]),
    (flaxseq.GRU(3, 4), np.ones((5, 2, 3), np.float32), ["weight_ih_l0: float32[12,3]"]),
    (flaxseq.RNNCell(3, 4, nonlinearity="relu"), np.ones((2, 3), np.float32), ["weight_hh: float32[4,4]"]),
    (flaxseq.LSTMCell(3, 4), np.ones((2, 3), np.float32), ["weight_ih: float32[16,3]"]),
], ids=["LSTM", "LSTM_PROJ", "GRU", "RNNCell", "LSTMCell"])
def test_tabulate_lists_pytorchs_parameters(module, x, expected):
    """flax's `Module.tabulate` runs on the layers and cells (a method called while the module is
    built must not be wrapped: `nn.nowrap`) and lists PyTorch's names and shapes."""
    table = module.tabulate(jax.random.key(0), x, console_kwargs={"force_terminal": False, "width": 200})
    for text in expected:
        assert text in table
