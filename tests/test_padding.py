"""Padding is never read: with `lengths`, values past each sequence's end, NaN and infinity
included, change no output, state or gradient, as PyTorch's packed sequences never see them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxseq

LAYERS = {
    "RNN_RELU": lambda: flaxseq.RNN(3, 4, 2, nonlinearity="relu", bidirectional=True),
    "LSTM_PROJ": lambda: flaxseq.LSTM(3, 4, 2, bidirectional=True, proj_size=2, batch_first=True),
    "GRU": lambda: flaxseq.GRU(3, 4, 2, bidirectional=True),
    "MGU": lambda: flaxseq.RNNBase(
        flaxseq.CellKind("MGU", 2, lambda gx, gh, h: (1 - (f := jax.nn.sigmoid(gx[0] + gh[0])))
                         * jnp.tanh(gx[1] + f * gh[1]) + f * h), 3, 4, 2, bidirectional=True),
}


@pytest.mark.parametrize("custom_gradient", [True, False])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_nan_in_the_padding_changes_nothing(name, custom_gradient):
    layer = LAYERS[name]().clone(custom_gradient=custom_gradient)
    time, batch = 6, 3
    lengths = jnp.asarray([6, 2, 4])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, time, 3) if layer.batch_first else (time, batch, 3)).astype(np.float32)
    padded = x.copy()
    for b, length in enumerate(np.asarray(lengths)):
        where = (b, slice(length, None)) if layer.batch_first else (slice(length, None), b)
        padded[where] = np.nan
        padded[where][..., 0] = np.inf
    clean = x.copy()
    for b, length in enumerate(np.asarray(lengths)):
        clean[(b, slice(length, None)) if layer.batch_first else (slice(length, None), b)] = 0.0
    params = layer.init(jax.random.key(0), x)["params"]

    @jax.jit
    def run(params, x):
        def loss(params, x):
            outputs = layer.apply({"params": params}, x, lengths=lengths)
            return sum(jnp.sum(jnp.sin(o)) for o in jax.tree.leaves(outputs)), outputs

        return jax.grad(loss, argnums=(0, 1), has_aux=True)(params, x)

    got, want = run(params, jnp.asarray(padded)), run(params, jnp.asarray(clean))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
