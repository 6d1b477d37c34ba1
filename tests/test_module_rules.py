"""torch.nn's common modules converted both ways in both front ends, `from_state_dict` for a
user's own twin, tied parameters, initialisers."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flaxseq.nnx as fnnx
import parity
from flaxseq import basic

RNG = np.random.default_rng(0)


def _float_input(shape):
    return RNG.standard_normal(shape)


MODULES = {  # name -> (torch module maker, example input)
    "linear": (lambda: torch.nn.Linear(6, 5), _float_input((3, 4, 6))),
    "linear-no-bias": (lambda: torch.nn.Linear(6, 5, bias=False), _float_input((3, 6))),
    "embedding": (lambda: torch.nn.Embedding(9, 4, padding_idx=2), RNG.integers(0, 9, (3, 5))),
    "layer-norm": (lambda: torch.nn.LayerNorm(6, eps=1e-3), _float_input((3, 4, 6))),
    "layer-norm-2d": (lambda: torch.nn.LayerNorm((4, 6), bias=False), _float_input((3, 4, 6))),
    "layer-norm-plain": (lambda: torch.nn.LayerNorm(6, elementwise_affine=False), _float_input((3, 6))),
    "dropout": (lambda: torch.nn.Dropout(0.3), _float_input((3, 6))),
    "identity": (lambda: torch.nn.Identity(), _float_input((3, 6))),
    "tanh": (lambda: torch.nn.Tanh(), _float_input((3, 6))),
    "relu": (lambda: torch.nn.ReLU(), _float_input((3, 6))),
    "sigmoid": (lambda: torch.nn.Sigmoid(), _float_input((3, 6))),
    "gelu": (lambda: torch.nn.GELU(), _float_input((3, 6))),
    "gelu-tanh": (lambda: torch.nn.GELU(approximate="tanh"), _float_input((3, 6))),
    "sequential": (
        lambda: torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Dropout(0.1),
                                    torch.nn.LayerNorm(8), torch.nn.Linear(8, 3)),
        _float_input((2, 5, 6)),
    ),
    "sequential-embedding": (
        lambda: torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)),
        RNG.integers(0, 7, (3, 5)),
    ),
}


def _torch_module(name):
    torch.manual_seed(0)
    module = MODULES[name][0]().double()
    with torch.no_grad():  # parameters away from their initial values (LayerNorm starts at ones and zeros)
        for p in module.parameters():
            p.add_(torch.rand_like(p))
    return module.eval()


def _outputs(torch_module, x):
    return torch_module(torch.from_numpy(x)).detach().numpy()


@pytest.mark.parametrize("name", MODULES)
def test_linen_both_ways(name):
    torch_module = _torch_module(name)
    x = MODULES[name][1]
    flax_module, variables = parity.from_torch(torch_module)
    evaluation = {"deterministic": True} if isinstance(flax_module, (nn.Dropout, basic.Sequential)) else {}
    np.testing.assert_allclose(flax_module.apply(variables, x, **evaluation), _outputs(torch_module, x),
                               rtol=1e-13, atol=1e-14)
    back = parity.to_torch(flax_module, variables)
    assert type(back) is type(torch_module)
    assert back.state_dict().keys() == torch_module.state_dict().keys()
    for key, value in torch_module.state_dict().items():
        assert back.state_dict()[key].dtype == value.dtype and torch.equal(back.state_dict()[key], value), key
    np.testing.assert_array_equal(_outputs(back.eval(), x), _outputs(torch_module, x))


@pytest.mark.parametrize("name", MODULES)
def test_nnx_both_ways(name):
    torch_module = _torch_module(name)
    x = MODULES[name][1]
    module = parity.from_torch(torch_module, api="nnx")
    np.testing.assert_allclose(module(x), _outputs(torch_module, x), rtol=1e-13, atol=1e-14)
    back = parity.to_torch(module)
    assert type(back) is type(torch_module) and not back.training
    for key, value in torch_module.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_sequential_children_keep_torch_names():
    torch_module = _torch_module("sequential")
    _, variables = parity.from_torch(torch_module)
    assert sorted(variables["params"]) == ["0", "3", "4"]
    assert set(variables["params"]["3"]) == {"scale", "bias"}
    module = parity.from_torch(torch_module, api="nnx")
    assert set(parity.to_state_dict(module)) == set(torch_module.state_dict())


def test_float32_linear_from_torch_matches_float64_truth():
    torch.manual_seed(1)
    torch_module = torch.nn.Linear(64, 32)
    x = RNG.standard_normal((16, 64)).astype(np.float32)
    flax_module, variables = parity.from_torch(torch_module)
    assert variables["params"]["kernel"].dtype == jnp.float32
    truth = torch_module.double()(torch.from_numpy(x).double()).detach().numpy()
    ours = np.asarray(flax_module.apply(variables, x), np.float64)
    theirs = torch_module.float()(torch.from_numpy(x)).detach().numpy().astype(np.float64)
    assert np.abs(ours - truth).max() <= 4 * max(np.abs(theirs - truth).max(), np.finfo(np.float32).eps)


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="max_norm has no flaxseq twin"):
        parity.from_torch(torch.nn.Embedding(4, 3, max_norm=1.0))
    named = torch.nn.Sequential()
    named.add_module("fc", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"children must be named 0, 1, .* got \['fc'\]"):
        parity.from_torch(named)
    with pytest.raises(TypeError, match="in_features is None"):
        parity.to_torch(basic.Linear(3), {"params": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)}})
    with pytest.raises(TypeError, match="is a function, not a module"):
        parity.to_torch(basic.Sequential((jnp.tanh,)), {"params": {}})


# a user's own twin: no rule, names agree


class TorchModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Embedding(11, 6)
        self.norm = torch.nn.LayerNorm(6)
        self.rnn = torch.nn.GRU(6, 5, 2)
        self.decoder = torch.nn.Linear(5, 11)

    def forward(self, ids):
        output, _ = self.rnn(self.norm(self.encoder(ids)))
        return self.decoder(output)


class FlaxDenseTwin(nn.Module):  # flax's own modules inside a user's twin
    @nn.compact
    def __call__(self, ids):
        x = nn.Embed(11, 6, name="encoder")(ids)
        x = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name="norm")(x)
        import flaxseq
        output, _ = flaxseq.GRU(6, 5, 2, name="rnn", param_dtype=jnp.float64)(x)
        return nn.Dense(11, name="decoder", param_dtype=jnp.float64)(output)


class NNXTwin(nnx.Module):
    def __init__(self, rngs):
        self.encoder = fnnx.Embedding(11, 6, rngs=rngs, param_dtype=jnp.float64)
        self.norm = fnnx.LayerNorm(6, param_dtype=jnp.float64)
        self.rnn = fnnx.GRU(6, 5, 2, rngs=rngs, param_dtype=jnp.float64)
        self.decoder = fnnx.Linear(5, 11, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, ids):
        output, _ = self.rnn(self.norm(self.encoder(ids)))
        return self.decoder(output)


def _model():
    torch.manual_seed(0)
    model = TorchModel().double().eval()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.5, 0.5)
    return model


def test_from_state_dict_for_a_user_twin_with_flax_modules(tmp_path):
    model = _model()
    ids = RNG.integers(0, 11, (7, 3))
    twin = FlaxDenseTwin()
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    for source in (model.state_dict(), path, str(path)):
        variables = parity.from_state_dict(twin, source, example_args=(ids,))
        np.testing.assert_allclose(twin.apply(variables, ids), model(torch.from_numpy(ids)).detach().numpy(),
                                   rtol=1e-12, atol=1e-13)
    assert set(parity.to_state_dict(twin, variables)) == set(model.state_dict())


def test_from_state_dict_nnx_twin_from_a_path(tmp_path):
    model = _model()
    ids = RNG.integers(0, 11, (7, 3))
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    twin = parity.from_state_dict(NNXTwin(nnx.Rngs(0)), path)
    np.testing.assert_allclose(twin(ids), model(torch.from_numpy(ids)).detach().numpy(), rtol=1e-12, atol=1e-13)
    report = parity.compare(model, twin, None, (ids,))
    assert report.passed, report.failures()


def test_from_state_dict_needs_example_args_without_a_rule():
    with pytest.raises(TypeError, match=r"^FlaxDenseTwin: pass example_args=.*or register a rule \(no conversion "
                                        r"rule for .*FlaxDenseTwin"):
        parity.from_state_dict(FlaxDenseTwin(), _model().state_dict())


def test_twin_whose_names_match_nothing():
    class Other(nn.Module):
        @nn.compact
        def __call__(self, ids):
            return nn.Dense(3, name="head")(nn.Embed(11, 6, name="table")(ids))

    with pytest.raises(ValueError) as error:
        parity.from_state_dict(Other(), _model().state_dict(), example_args=(np.zeros((1,), np.int32),))
    message = str(error.value)
    assert "missing keys: head.bias, head.weight, table.weight" in message
    assert "unexpected keys: decoder.bias, decoder.weight, encoder.weight" in message


def test_copy_rule_fields_as_a_mapping():
    class TorchHead(torch.nn.Module):
        def __init__(self, ninp, nout):
            super().__init__()
            self.fc = torch.nn.Linear(ninp, nout)

    class FlaxHead(nn.Module):
        ninp: int
        nout: int
        param_dtype: jnp.dtype = jnp.float32

        @nn.compact
        def __call__(self, x):
            return basic.Linear(self.nout, param_dtype=self.param_dtype, name="fc")(x)

    fields = {"ninp": lambda m: m.fc.in_features, "nout": lambda m: m.fc.out_features}
    rule = parity.copy_rule(TorchHead, FlaxHead, fields, lambda m: (jnp.zeros((1, m.ninp), m.param_dtype),))
    try:
        torch.manual_seed(0)
        original = TorchHead(4, 3)
        flax_module, variables = parity.from_torch(original)
        assert (flax_module.ninp, flax_module.nout) == (4, 3)
        back = parity.to_torch(flax_module, variables)
        assert torch.equal(back.fc.weight, original.fc.weight)
    finally:
        parity.convert._RULES.remove(rule)
    assert parity.torch_dtype(np.float64) is torch.float64
    assert parity.module_dtype(torch.nn.Linear(2, 2).double()) == np.float64


def test_initialisers():
    key = jax.random.key(0)
    linear = basic.Linear(5, kernel_init=nn.initializers.constant(0.25), bias_init=nn.initializers.constant(-1.0))
    params = linear.init(key, jnp.zeros((1, 3)))["params"]
    np.testing.assert_array_equal(params["kernel"], np.full((3, 5), 0.25, np.float32))
    np.testing.assert_array_equal(params["bias"], np.full(5, -1.0, np.float32))
    embed = basic.Embedding(10, 4, embedding_init=nn.initializers.uniform(0.1))
    table = embed.init(key, jnp.zeros((1,), jnp.int32))["params"]["embedding"]
    assert table.shape == (10, 4) and 0 <= float(table.min()) and float(table.max()) < 0.1
    seen = []

    def weight_init(key, shape, dtype):
        seen.append(shape)
        return jax.random.uniform(key, shape, dtype, -0.1, 0.1)

    nnx_linear = fnnx.Linear(3, 5, rngs=nnx.Rngs(0), weight_init=weight_init, bias_init=nnx.initializers.zeros)
    assert seen == [(5, 3)] and float(jnp.abs(nnx_linear.weight[...]).max()) <= 0.1
    np.testing.assert_array_equal(nnx_linear.bias[...], np.zeros(5, np.float32))
    nnx_embed = fnnx.Embedding(10, 4, rngs=nnx.Rngs(0), weight_init=weight_init)
    assert seen[-1] == (10, 4) and float(jnp.abs(nnx_embed.weight[...]).max()) <= 0.1


# tied parameters


class TiedTorch(torch.nn.Module):  # keeps none of its arguments, as many models
    def __init__(self, ntoken=11, ninp=6):
        super().__init__()
        self.encoder = torch.nn.Embedding(ntoken, ninp)
        self.decoder = torch.nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight

    def forward(self, ids):
        return self.decoder(torch.tanh(self.encoder(ids)))


class TiedLinen(nn.Module):
    ntoken: int = 11
    ninp: int = 6
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, ids):
        encoder = basic.Embedding(self.ntoken, self.ninp, param_dtype=self.param_dtype, name="encoder")
        return basic.TiedLinear(encoder, name="decoder")(jnp.tanh(encoder(ids)))


class TiedNNX(nnx.Module):
    def __init__(self, ntoken=11, ninp=6, *, rngs, param_dtype=jnp.float32):
        self.ntoken, self.ninp = ntoken, ninp
        self.encoder = fnnx.Embedding(ntoken, ninp, rngs=rngs, param_dtype=param_dtype)
        self.decoder = fnnx.Linear(ninp, ntoken, rngs=rngs, param_dtype=param_dtype)
        self.decoder.weight = self.encoder.weight  # as in PyTorch: one parameter in two places

    def __call__(self, ids):
        return self.decoder(jnp.tanh(self.encoder(ids)))


TIE = {"decoder.weight": "encoder.weight"}


@pytest.fixture
def tied_rules():
    fields = {"ntoken": lambda m: m.encoder.num_embeddings, "ninp": lambda m: m.encoder.embedding_dim}
    linen = parity.copy_rule(TiedTorch, TiedLinen, fields, lambda m: (jnp.zeros((1,), jnp.int32),))
    nnx_rule = parity.nnx.nnx_copy_rule(TiedTorch, TiedNNX, fields)
    yield
    parity.convert._RULES.remove(linen)
    parity.nnx._RULES.remove(nnx_rule)


def _tied_torch():
    torch.manual_seed(0)
    return TiedTorch().double()


def _tied_gradient(model, ids, weights):
    model.zero_grad()
    (model(torch.from_numpy(ids)) * torch.from_numpy(weights)).sum().backward()
    return model.encoder.weight.grad.numpy(), model.decoder.bias.grad.numpy()


def test_tied_linen_from_torch_detects_the_tie_and_to_torch_reties(tied_rules):
    model = _tied_torch()
    ids = RNG.integers(0, 11, (4, 5))
    flax_module, variables = parity.from_torch(model)  # no ties given: found from the shared storage
    assert set(variables["params"]) == {"encoder", "decoder"} and set(variables["params"]["decoder"]) == {"bias"}
    out = model(torch.from_numpy(ids)).detach().numpy()
    np.testing.assert_allclose(flax_module.apply(variables, ids), out, rtol=1e-13, atol=1e-14)
    weights = RNG.standard_normal(out.shape)
    grads = jax.grad(lambda p: jnp.sum(weights * flax_module.apply({"params": p}, ids)))(variables["params"])
    torch_table_grad, torch_bias_grad = _tied_gradient(model, ids, weights)
    np.testing.assert_allclose(grads["encoder"]["embedding"], torch_table_grad, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grads["decoder"]["bias"], torch_bias_grad, rtol=1e-12, atol=1e-13)
    state_dict = parity.to_state_dict(flax_module, variables, ties=TIE)
    assert set(state_dict) == set(model.state_dict())
    np.testing.assert_array_equal(state_dict["decoder.weight"], state_dict["encoder.weight"])
    back = parity.to_torch(flax_module, variables, ties=TIE)
    assert back.decoder.weight is back.encoder.weight
    again = parity.from_state_dict(flax_module, back.state_dict(), ties=TIE)
    jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_tied_nnx_shares_one_param(tied_rules):
    model = _tied_torch()
    ids = RNG.integers(0, 11, (4, 5))
    twin = parity.from_torch(model, api="nnx")
    assert twin.decoder.weight is twin.encoder.weight
    out = model(torch.from_numpy(ids)).detach().numpy()
    np.testing.assert_allclose(twin(ids), out, rtol=1e-13, atol=1e-14)
    weights = RNG.standard_normal(out.shape)
    grads = nnx.grad(lambda m: jnp.sum(weights * m(ids)))(twin)
    torch_table_grad, torch_bias_grad = _tied_gradient(model, ids, weights)
    state = nnx.to_flat_state(grads)
    assert [".".join(map(str, p)) for p, _ in state] == ["decoder.bias", "decoder.weight"]  # one entry for the tie
    np.testing.assert_allclose(state[1][1][...], torch_table_grad, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(state[0][1][...], torch_bias_grad, rtol=1e-12, atol=1e-13)
    assert set(parity.to_state_dict(twin)) == set(model.state_dict())
    back = parity.to_torch(twin)
    assert back.decoder.weight is back.encoder.weight
    np.testing.assert_array_equal(back(torch.from_numpy(ids)).detach().numpy(), out)


def test_tie_refusals():
    model = _tied_torch()
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    twin = TiedLinen(param_dtype=jnp.float64)
    args = (np.zeros((1,), np.int32),)
    state_dict["decoder.weight"] = torch.zeros(11, 7, dtype=torch.float64)
    shapes = r"ties: decoder.weight has shape \(11, 7\), but encoder.weight, to which it is tied, \(11, 6\)"
    with pytest.raises(ValueError, match=shapes):
        parity.from_state_dict(twin, state_dict, args, ties=TIE)
    state_dict["decoder.weight"] = torch.zeros(11, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="ties: decoder.weight differs from encoder.weight, to which it is tied"):
        parity.from_state_dict(twin, state_dict, args, ties=TIE)
    with pytest.raises(ValueError, match="ties: decoder.weight is tied to table.weight, which is not a parameter"):
        parity.from_state_dict(twin, model.state_dict(), args, ties={"decoder.weight": "table.weight"})
    with pytest.raises(ValueError, match="unexpected keys: decoder.weight"):
        parity.from_state_dict(twin, model.state_dict(), args)


class UntiedLinen(nn.Module):  # the tied model's twin with a decoder weight of its own
    @nn.compact
    def __call__(self, ids):
        encoder = basic.Embedding(11, 6, param_dtype=jnp.float64, name="encoder")
        return basic.Linear(11, param_dtype=jnp.float64, name="decoder")(jnp.tanh(encoder(ids)))


class UntiedNNX(nnx.Module):
    def __init__(self, *, rngs):
        self.encoder = fnnx.Embedding(11, 6, rngs=rngs, param_dtype=jnp.float64)
        self.decoder = fnnx.Linear(6, 11, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, ids):
        return self.decoder(jnp.tanh(self.encoder(ids)))


def test_an_untied_twin_refuses_a_tied_state_dict(tmp_path):
    """A weight tied in PyTorch is one tensor under two names; a twin holding two parameters
    would train them apart: refused, naming both and the tie to declare (it loaded silently),
    from memory and from a file, in linen and NNX. The same values, not tied, still load."""
    model = _tied_torch()
    torch.save(model.state_dict(), tmp_path / "tied.pt")
    message = re.escape("ties: encoder.weight, decoder.weight are one tensor in the state_dict (tied in PyTorch), "
                        "but the twin holds them as 2 parameters") + r".*ties=\{'decoder.weight': 'encoder.weight'\}"
    args = (np.zeros((1,), np.int32),)
    for source in (model.state_dict(), tmp_path / "tied.pt"):
        with pytest.raises(ValueError, match=message):
            parity.from_state_dict(UntiedLinen(), source, args)
        with pytest.raises(ValueError, match=message):
            parity.from_state_dict(UntiedNNX(rngs=nnx.Rngs(0)), source)
    copies = {k: v.clone() for k, v in model.state_dict().items()}  # equal values, two tensors: a user's choice
    variables = parity.from_state_dict(UntiedLinen(), copies, args)
    np.testing.assert_array_equal(variables["params"]["decoder"]["kernel"], copies["decoder.weight"].numpy().T)


def test_a_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(_tied_torch(), path)
    with pytest.raises(ValueError, match=r"model\.pt.*state_dict\(\)"):
        parity.from_state_dict(TiedLinen(), path, (np.zeros((1,), np.int32),))
    with pytest.raises(TypeError, match="state_dict must be a mapping of names to arrays or the path"):
        parity.from_state_dict(TiedLinen(), [1, 2], (np.zeros((1,), np.int32),))


def test_flax_nnx_modules_inside_an_nnx_twin():
    class FlaxNNXTwin(nnx.Module):  # flax's own NNX modules: kernel [in, out], embedding, scale
        def __init__(self, rngs):
            common = dict(rngs=rngs, param_dtype=jnp.float64, dtype=jnp.float64)
            self.encoder = nnx.Embed(11, 6, **common)
            self.norm = nnx.LayerNorm(6, epsilon=1e-5, use_fast_variance=False, **common)
            self.rnn = fnnx.GRU(6, 5, 2, rngs=rngs, param_dtype=jnp.float64)
            self.decoder = nnx.Linear(5, 11, **common)

        def __call__(self, ids):
            output, _ = self.rnn(self.norm(self.encoder(ids)))
            return self.decoder(output)

    model = _model()
    ids = RNG.integers(0, 11, (7, 3))
    twin = parity.from_state_dict(FlaxNNXTwin(nnx.Rngs(0)), model.state_dict())
    np.testing.assert_allclose(twin(ids), model(torch.from_numpy(ids)).detach().numpy(), rtol=1e-12, atol=1e-13)
    state_dict = parity.to_state_dict(twin)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(state_dict[key], value.numpy())
