"""Every bad argument to a layer or cell raises a clear error naming it, before JAX fails."""

import re

import flax.nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxseq
import flaxseq.nnx


def init_apply(module, *args, **kwargs):
    """Initialise on a valid input, then apply to the arguments under test."""
    layer = hasattr(module, "num_layers")
    sample = jnp.zeros((2, 1, module.input_size) if layer else (1, module.input_size))
    variables = module.init(jax.random.key(0), sample)
    return module.apply(variables, *args, **kwargs)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: flaxseq.LSTM(4, 0), ValueError, "hidden_size must be greater than zero, got 0"),
        (lambda: flaxseq.GRU(4, 5, num_layers=0), ValueError, "num_layers must be greater than zero, got 0"),
        (lambda: flaxseq.RNN(0, 5), ValueError, "input_size must be greater than zero, got 0"),
        (lambda: flaxseq.RNN(4, 5.0), TypeError, "hidden_size should be of type int, got: float"),
        (lambda: flaxseq.RNN(4, 5, num_layers=True), TypeError, "num_layers should be of type int, got: bool"),
        (lambda: flaxseq.GRU(4, 5, dropout=1.5), ValueError, "dropout should be a number in range [0, 1]"),
        (lambda: flaxseq.GRU(4, 5, dropout=-0.1), ValueError, "got -0.1"),
        (lambda: flaxseq.RNN(4, 5, nonlinearity="sigmoid"), ValueError, "Unknown nonlinearity 'sigmoid'"),
        (lambda: flaxseq.RNNCell(4, 5, nonlinearity="gelu"), ValueError, "Unknown nonlinearity 'gelu'"),
        (lambda: flaxseq.LSTM(4, 5, proj_size=-1), ValueError, "proj_size must be at least 0, got -1"),
        (lambda: flaxseq.LSTM(4, 5, proj_size=5), ValueError,
         "proj_size has to be smaller than hidden_size, got proj_size=5 and hidden_size=5"),
        (lambda: flaxseq.LSTMCell(4, 0), ValueError, "hidden_size must be greater than zero, got 0"),
    ],
)
def test_bad_configuration(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


LSTM = flaxseq.LSTM(4, 5, num_layers=2, bidirectional=True, proj_size=3)
GRU = flaxseq.GRU(4, 5, num_layers=2)
X = np.zeros((6, 3, 4), np.float32)


@pytest.mark.parametrize(
    "module, args, kwargs, error, message",
    [
        (GRU, (np.zeros((2, 3, 4, 1), np.float32),), {}, ValueError,
         "GRU: Expected input to be 2D (unbatched) or 3D (batched), got 4D array of shape (2, 3, 4, 1)"),
        (GRU, (np.zeros(4, np.float32),), {}, ValueError, "got 1D array"),
        (GRU, (np.zeros((6, 3, 7), np.float32),), {}, ValueError,
         "GRU: input.size(-1) must be equal to input_size. Expected 4, got 7"),
        (GRU, (np.zeros((6, 3, 4), np.int32),), {}, TypeError, "input must be a floating-point array, got dtype int32"),
        (GRU, (X, np.zeros((1, 3, 5), np.float32)), {}, ValueError, "Expected hx size (2, 3, 5), got (1, 3, 5)"),
        (GRU, (X, np.zeros((2, 5), np.float32)), {}, ValueError,
         "For batched 3-D input, hx should also be 3-D but got 2-D array"),
        (GRU, (X[:, 0], np.zeros((2, 3, 5), np.float32)), {}, ValueError,
         "For unbatched 2-D input, hx should also be 2-D but got 3-D array"),
        (GRU, (X, (np.zeros((2, 3, 5)), np.zeros((2, 3, 5)))), {}, TypeError,
         "hx must be an array for GRU, got tuple"),
        (LSTM, (X, np.zeros((4, 3, 3), np.float32)), {}, TypeError,
         "hx must be a tuple (h_0, c_0) for LSTM, got ndarray"),
        (LSTM, (X, (np.zeros((4, 3, 3), np.float32),)), {}, TypeError,
         "hx must be a tuple (h_0, c_0) for LSTM, got a tuple of 1"),
        (LSTM, (X, (np.zeros((4, 3, 5)), np.zeros((4, 3, 5)))), {}, ValueError,
         "Expected hx[0] size (4, 3, 3), got (4, 3, 5)"),
        (LSTM, (X, (np.zeros((4, 3, 3)), np.zeros((4, 3, 3)))), {}, ValueError,
         "Expected hx[1] size (4, 3, 5), got (4, 3, 3)"),
        (GRU, (X[:, 0],), {"lengths": np.array([3])}, ValueError, "lengths needs batched 3-D input, got unbatched 2-D"),
        (GRU, (X,), {"lengths": np.array([3, 3])}, ValueError,
         "lengths must have shape [batch] = (3,), got shape (2,)"),
        (GRU, (X,), {"lengths": np.array([3, 0, 2])}, ValueError, "lengths must be at least 1, got 0 in [3, 0, 2]"),
        (GRU, (X,), {"lengths": np.array([3, 7, 2])}, ValueError,
         "lengths must be at most the input's time length 6, got 7 in [3, 7, 2]"),
        (GRU, (X,), {"lengths": np.array([3.0, 2.0, 1.0])}, TypeError,
         "lengths must be an integer array of shape [batch], got dtype float64"),
        (GRU, (X,), {"lengths": "3"}, TypeError, "lengths must be an integer array of shape [batch], got str"),
    ],
)
def test_bad_call(module, args, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        init_apply(module, *args, **kwargs)


def test_lengths_checks_do_not_break_jit():
    variables = GRU.init(jax.random.key(0), X)
    out = jax.jit(lambda n: GRU.apply(variables, X, lengths=n))(jnp.array([3, 6, 1]))
    assert out[0].shape == (6, 3, 5)
    with pytest.raises(ValueError, match=re.escape("lengths must have shape [batch] = (3,), got shape (2,)")):
        jax.jit(lambda n: GRU.apply(variables, X, lengths=n))(jnp.array([3, 6]))


@pytest.mark.parametrize(
    "cell, args, error, message",
    [
        (flaxseq.GRUCell(4, 5), (np.zeros((2, 3, 4), np.float32),), ValueError,
         "GRUCell: Expected input to be 1D or 2D, got 3D array instead"),
        (flaxseq.RNNCell(4, 5), (np.zeros((2, 6), np.float32),), ValueError,
         "RNNCell: input.size(-1) must be equal to input_size. Expected 4, got 6"),
        (flaxseq.RNNCell(4, 5), (np.zeros((2, 4), np.float32), np.zeros((3, 5), np.float32)), ValueError,
         "Expected hx size (2, 5), got (3, 5)"),
        (flaxseq.LSTMCell(4, 5), (np.zeros((2, 4), np.float32), np.zeros((2, 5), np.float32)), TypeError,
         "hx must be a tuple (h_0, c_0) for LSTMCell, got ndarray"),
        (flaxseq.LSTMCell(4, 5), (np.zeros((2, 4), np.float32), [np.zeros((2, 5), np.float32)] * 3), TypeError,
         "hx must be a tuple (h_0, c_0) for LSTMCell, got a list of 3"),
        (flaxseq.LSTMCell(4, 5), (np.zeros((2, 4)), (np.zeros((2, 5)), np.zeros((2, 4)))), ValueError,
         "Expected hx[1] size (2, 5), got (2, 4)"),
        (flaxseq.GRUCell(4, 5), (np.zeros(4), np.zeros((1, 5))), ValueError, "Expected hx size (5,), got (1, 5)"),
    ],
)
def test_bad_cell_call(cell, args, error, message):
    with pytest.raises(error, match=re.escape(message)):
        init_apply(cell, *args)


def test_errors_name_a_nested_module_by_its_path():
    """In a model with several layers, a layer's error says which one: its class and its path."""
    import flax.linen as nn

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            y, _ = flaxseq.LSTM(4, 8, name="encoder")(x)
            y, _ = flaxseq.GRU(8, 6)(y)
            return flaxseq.basic.Linear(3, in_features=5)(y)

    with pytest.raises(ValueError, match=re.escape(
            "LSTM 'encoder': input.size(-1) must be equal to input_size. Expected 4, got 7")):
        Model().init(jax.random.key(0), jnp.zeros((5, 2, 7)))
    with pytest.raises(ValueError, match=re.escape(
            "Linear 'Linear_0': input.size(-1) must be equal to in_features. Expected 5, got 6")):
        Model().init(jax.random.key(0), jnp.zeros((5, 2, 4)))
    with pytest.raises(ValueError, match=re.escape("LSTM 'encoder': Expected input to be 2D (unbatched) or 3D")):
        Model().init(jax.random.key(0), jnp.zeros((5, 2, 4, 1)))


@pytest.mark.parametrize("build", [
    lambda: init_apply(flaxseq.GRU(4, 5, dtype=jnp.int32), jnp.zeros((2, 1, 4))),
    lambda: init_apply(flaxseq.LSTMCell(4, 5, dtype="int8"), jnp.zeros((1, 4))),
    lambda: flaxseq.nnx.GRU(4, 5, dtype=jnp.int32, rngs=flax.nnx.Rngs(0)),
    lambda: flaxseq.nnx.LSTMCell(4, 5, dtype="int8", rngs=flax.nnx.Rngs(0)),
])
def test_an_integer_computation_dtype_is_refused(build):
    """`dtype=` is the computation dtype: an integer one is named as such (it failed inside the
    built-in kind's step, as if a user's cell were broken)."""
    with pytest.raises(TypeError, match=r"dtype \(the computation dtype\) must be None or a floating-point dtype, "
                                        r"got int(32|8)"):
        build()


def test_narrow_integer_lengths_are_not_wrapped():
    """uint8 lengths over a 300-step input give what int32 lengths give (the clip wrapped 300 to 44)."""
    gru = flaxseq.GRU(2, 4)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(300, 1, 2)), jnp.float32)
    variables = gru.init(jax.random.key(0), x)
    y8, h8 = gru.apply(variables, x, lengths=np.array([100], np.uint8))
    y32, h32 = gru.apply(variables, x, lengths=np.array([100], np.int32))
    np.testing.assert_array_equal(np.asarray(y8), np.asarray(y32))
    np.testing.assert_array_equal(np.asarray(h8), np.asarray(h32))
