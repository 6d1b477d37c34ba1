"""`flaxseq.nnx`: torch-like NNX modules over the same core as linen's (the parity sweep in
`test_layer_parity.py` covers their values and gradients against PyTorch)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import flaxseq
import flaxseq.nnx
import parity
import torch_ref


def test_parameters_are_pytorchs():
    lstm = flaxseq.nnx.LSTM(10, 20, num_layers=2, bidirectional=True, batch_first=True, proj_size=5, rngs=nnx.Rngs(0))
    torch_lstm = torch.nn.LSTM(10, 20, num_layers=2, bidirectional=True, batch_first=True, proj_size=5)
    ours = {k: v.shape for k, v in parity.to_state_dict(lstm).items()}
    assert ours == {k: tuple(v.shape) for k, v in torch_lstm.state_dict().items()}
    assert isinstance(lstm.weight_hr_l1_reverse, nnx.Param)
    bound = 1 / np.sqrt(20)  # PyTorch's U(-1/sqrt(hidden), 1/sqrt(hidden))
    values = np.concatenate([np.ravel(v) for v in parity.to_state_dict(lstm).values()])
    assert values.min() >= -bound and values.max() <= bound and values.std() > bound / 2
    gru = flaxseq.nnx.GRU(3, 4, bias=False, rngs=nnx.Rngs(0))
    assert not hasattr(gru, "bias_ih_l0") and set(parity.to_state_dict(gru)) == {"weight_ih_l0", "weight_hh_l0"}
    linear = flaxseq.nnx.Linear(8, 5, rngs=nnx.Rngs(0))
    assert linear.weight[...].shape == (5, 8) and linear.bias[...].shape == (5,)
    embedding = flaxseq.nnx.Embedding(7, 3, padding_idx=-1, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(embedding.weight[...][6], 0)


def test_same_results_as_linen():
    """The NNX layer and the linen layer, given the same weights, compute the same."""
    nnx_gru = flaxseq.nnx.GRU(3, 4, 2, bidirectional=True, rngs=nnx.Rngs(1))
    linen_gru = flaxseq.GRU(3, 4, 2, bidirectional=True)
    variables = {"params": {k: jnp.asarray(v) for k, v in parity.to_state_dict(nnx_gru).items()}}
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 2, 3)), jnp.float32)
    lengths = jnp.asarray([5, 2])
    for a, b in zip(jax.tree.leaves(nnx_gru(x, lengths=lengths)),
                    jax.tree.leaves(linen_gru.apply(variables, x, lengths=lengths)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_mode_switches_dropout_between_layers():
    lstm = flaxseq.nnx.LSTM(3, 4, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
    x = jnp.ones((5, 2, 3))
    assert lstm.deterministic is False  # a new module trains, as in PyTorch
    first, _ = lstm(x)
    second, _ = lstm(x)
    assert not np.allclose(first, second)  # fresh masks at every call
    lstm.eval()
    evaluated, _ = lstm(x)
    np.testing.assert_array_equal(evaluated, lstm(x)[0])
    no_dropout = flaxseq.nnx.LSTM(3, 4, num_layers=2, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(evaluated, no_dropout(x)[0])  # same draws of the weights
    lstm.train()
    assert not np.allclose(lstm(x)[0], evaluated)


def test_cells_take_pytorchs_hx():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    h, c = (rng.standard_normal((3, 5)).astype(np.float32) for _ in range(2))
    cell = flaxseq.nnx.LSTMCell(4, 5, rngs=nnx.Rngs(0))
    torch_cell = parity.to_torch(cell)
    got = cell(x, (h, c))
    want = torch_cell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=2e-6, atol=2e-6)
    unbatched = cell(x[0])
    np.testing.assert_allclose(unbatched[0], cell(x[:1])[0][0], rtol=1e-6)


def test_training_with_nnx_transforms_and_optimizer():
    """nnx.jit, nnx.value_and_grad and nnx.Optimizer through a whole model; a step lowers the loss."""
    model = flaxseq.nnx.TextClassifier(50, 8, 16, 2, 3, dropout=0.1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    rng = np.random.default_rng(0)
    ids, labels = jnp.asarray(rng.integers(1, 50, (8, 6))), jnp.asarray(rng.integers(0, 3, 8))

    @nnx.jit
    def step(model, optimizer, ids, labels):
        def loss(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(ids), labels).mean()

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    losses = [float(step(model, optimizer, ids, labels)) for _ in range(10)]
    assert losses[-1] < losses[0] * 0.8
    grads = nnx.jit(nnx.grad(lambda m: m(ids).sum()))(model)  # jitted: op by op it takes seconds
    assert np.abs(np.asarray(grads["lstm"]["weight_ih_l1_reverse"][...])).sum() > 0


def test_orbax_round_trip(tmp_path):
    import orbax.checkpoint as ocp

    model = flaxseq.nnx.LSTM(3, 4, 2, bidirectional=True, proj_size=2, rngs=nnx.Rngs(0))
    _, state = nnx.split(model)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", state)
    abstract = nnx.eval_shape(lambda: flaxseq.nnx.LSTM(3, 4, 2, bidirectional=True, proj_size=2, rngs=nnx.Rngs(1)))
    graphdef, abstract_state = nnx.split(abstract)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = nnx.merge(graphdef, checkpointer.restore(tmp_path / "state", abstract_state))
    x = jnp.ones((5, 2, 3))
    for a, b in zip(jax.tree.leaves(model(x)), jax.tree.leaves(restored(x)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_text_classifier_conversion_both_ways():
    with jax.enable_x64(True):
        torch.manual_seed(0)
        torch_model = torch_ref.TextClassifier(50, 8, 16, 2, 3).double()
        model = parity.from_torch(torch_model, api="nnx")
        assert model.dropout.deterministic is False and model.lstm.deterministic is False  # torch trains
        ids = np.random.default_rng(1).integers(1, 50, (4, 7))
        report = parity.compare(torch_model, model, None, (ids,), {"lengths": np.array([7, 1, 3, 5])})
        assert report.passed, report.failures()
        assert report.worst_output.rel < 1e-12 and report.worst_gradient.rel < 1e-12
        assert model.dropout.deterministic is False  # compare used a copy in evaluation mode
        model.eval()
        back = parity.to_torch(model)
        assert not back.training
        for key, value in torch_model.state_dict().items():
            np.testing.assert_array_equal(back.state_dict()[key].numpy(), value.numpy())
        filled = parity.from_state_dict(flaxseq.nnx.TextClassifier(50, 8, 16, 2, 3, rngs=nnx.Rngs(5),
                                                                   param_dtype=jnp.float64),
                                        torch_model.state_dict())
        np.testing.assert_array_equal(filled.fc.weight[...], torch_model.fc.weight.detach().numpy())


def test_from_state_dict_is_strict():
    gru = flaxseq.nnx.GRU(3, 4, rngs=nnx.Rngs(0))
    state_dict = {k: v.copy() for k, v in parity.to_state_dict(gru).items()}
    state_dict["weight_hh_l0"] = np.zeros((12, 5), np.float32)
    state_dict["bias_ih_l0"] = np.zeros(12, np.int64)
    del state_dict["bias_hh_l0"]
    state_dict["extra"] = np.zeros(1, np.float32)
    before = parity.to_state_dict(gru)
    with pytest.raises(ValueError) as error:
        parity.from_state_dict(gru, state_dict)
    message = str(error.value)
    for part in ("missing keys: bias_hh_l0", "unexpected keys: extra",
                 "weight_hh_l0: expected shape (12, 4), got (12, 5)",
                 "bias_ih_l0: expected floating-point weights, got dtype int64"):
        assert part in message
    for key, value in parity.to_state_dict(gru).items():  # nothing was written
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: flaxseq.nnx.LSTM(4, 5), TypeError,
         "LSTM: rngs is required (keyword-only), e.g. rngs=flax.nnx.Rngs(0)"),
        (lambda: flaxseq.nnx.GRUCell(4, 5, rngs=0), TypeError, "rngs must be a flax.nnx.Rngs, got int"),
        (lambda: flaxseq.nnx.LSTM(4, 0, rngs=nnx.Rngs(0)), ValueError, "hidden_size must be greater than zero, got 0"),
        (lambda: flaxseq.nnx.RNN(4, 5, nonlinearity="gelu", rngs=nnx.Rngs(0)), ValueError,
         "Unknown nonlinearity 'gelu'"),
        (lambda: flaxseq.nnx.LSTM(4, 5, proj_size=5, rngs=nnx.Rngs(0)), ValueError,
         "proj_size has to be smaller than hidden_size, got proj_size=5 and hidden_size=5"),
        (lambda: flaxseq.nnx.GRU(4, 5, rngs=nnx.Rngs(0))(np.zeros((6, 3, 7), np.float32)), ValueError,
         "GRU: input.size(-1) must be equal to input_size. Expected 4, got 7"),
        (lambda: flaxseq.nnx.GRU(4, 5, rngs=nnx.Rngs(0))(np.zeros((6, 3, 4), np.float32), (1, 2)), TypeError,
         "hx must be an array for GRU, got tuple"),
        (lambda: flaxseq.nnx.LSTM(4, 5, rngs=nnx.Rngs(0))(np.zeros((6, 3, 4), np.float32), np.zeros((1, 3, 5))),
         TypeError, "hx must be a tuple (h_0, c_0) for LSTM, got ndarray"),
        (lambda: flaxseq.nnx.GRU(4, 5, rngs=nnx.Rngs(0))(np.zeros((6, 3, 4), np.float32), lengths=np.array([3, 0, 2])),
         ValueError, "lengths must be at least 1, got 0 in [3, 0, 2]"),
    ],
)
def test_bad_input_same_messages_as_linen(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_layer_norm_takes_rngs_as_the_other_modules_do():
    """`rngs=` as for every other module and flax's `nnx.LayerNorm` (it was a TypeError); it
    draws nothing, so the module is the one built without it."""
    x = jax.random.normal(jax.random.key(0), (3, 5))
    with_rngs = flaxseq.nnx.LayerNorm(5, rngs=nnx.Rngs(7))
    plain = flaxseq.nnx.LayerNorm(5)
    assert np.array_equal(with_rngs.weight[...], np.ones(5)) and np.array_equal(with_rngs.bias[...], np.zeros(5))
    np.testing.assert_array_equal(with_rngs(x), plain(x))


def test_nnx_view_deterministic_turns_dropout_between_layers_off():
    """`nnx.view(model, deterministic=True)` is `eval()` for the recurrent layers too, as for
    flax's own Dropout beside them (the layer kept dropping; a bare layer raised 'Unused keys');
    the model it was taken from stays in training mode."""
    class Model(nnx.Module):
        def __init__(self):
            self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
            self.lstm = flaxseq.nnx.LSTM(4, 8, num_layers=2, dropout=0.5, rngs=nnx.Rngs(1))

    model, x = Model(), jax.random.normal(jax.random.key(0), (3, 2, 4))
    view = nnx.view(model, deterministic=True)
    assert view.drop.deterministic and view.lstm.deterministic and not model.lstm.deterministic
    first, again = view.lstm(x)[0], view.lstm(x)[0]
    model.eval()
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, model.lstm(x)[0])
    model.train()
    assert not np.array_equal(model.lstm(x)[0], first)  # training mode drops between the layers
    assert nnx.view(flaxseq.nnx.GRU(4, 8, 2, dropout=0.5, rngs=nnx.Rngs(0)), deterministic=True).deterministic


def test_a_parameter_of_the_wrong_shape_is_named():
    """A weight set by hand in the wrong layout is named with both shapes (it was XLA's
    dot_general error)."""
    lstm = flaxseq.nnx.LSTM(3, 4, num_layers=2, rngs=nnx.Rngs(0))
    lstm.weight_ih_l0 = nnx.Param(jnp.zeros((16, 5)))
    with pytest.raises(ValueError, match=re.escape("LSTM parameters of the wrong shape: weight_ih_l0: expected "
                                                   "shape (16, 3), got (16, 5)")):
        lstm(jnp.ones((5, 2, 3)))
    cell = flaxseq.nnx.GRUCell(3, 4, rngs=nnx.Rngs(0))
    cell.weight_hh = nnx.Param(jnp.zeros((4, 12)))  # transposed
    with pytest.raises(ValueError, match=re.escape("GRUCell parameters of the wrong shape: weight_hh: expected "
                                                   "shape (12, 4), got (4, 12)")):
        cell(jnp.ones((2, 3)))


def test_lengths_as_a_torch_tensor():
    """PyTorch's lengths are a tensor: taken as the array it is (it raised "Cannot interpret
    'torch.int64' as a data type", naming no argument); a float one is named as lengths."""
    lstm = flaxseq.nnx.LSTM(4, 5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (6, 3, 4))
    np.testing.assert_array_equal(lstm(x, lengths=torch.tensor([6, 3, 2]))[0], lstm(x, lengths=jnp.array([6, 3, 2]))[0])
    with pytest.raises(TypeError, match="lengths must be an integer array of shape \\[batch\\], got dtype float32"):
        lstm(x, lengths=torch.tensor([6.0, 3.0, 2.0]))


def test_linear_names_the_feature_size_as_linen_does():
    """`Expected 4, got 5` as the linen Linear and the layers say (it printed `got (5,)`)."""
    message = "Linear: input.size(-1) must be equal to in_features. Expected 4, got 5"
    with pytest.raises(ValueError, match=re.escape(message)):
        flaxseq.nnx.Linear(4, 3, rngs=nnx.Rngs(0))(jnp.ones((2, 5)))
