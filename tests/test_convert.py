"""The converter: round trips, strictness, dtypes and its errors."""

import re

import flax.linen
import flax.nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import flaxseq
import parity
from parity.layers import LAYER_FIELDS

TORCH_MODULES = [
    lambda: torch.nn.RNN(4, 5, 2, nonlinearity="relu", bias=False, batch_first=True, dropout=0.25, bidirectional=True),
    lambda: torch.nn.LSTM(4, 5, 3, batch_first=True, bidirectional=True, proj_size=2),
    lambda: torch.nn.LSTM(4, 5, dtype=torch.float64),
    lambda: torch.nn.GRU(4, 5, 2, dropout=0.5, dtype=torch.float64),
    lambda: torch.nn.RNNCell(4, 5, nonlinearity="relu"),
    lambda: torch.nn.LSTMCell(4, 5, bias=False),
    lambda: torch.nn.GRUCell(4, 5, dtype=torch.float64),
]
def config(module):
    return {name: getattr(module, name) for name in LAYER_FIELDS[type(module).__name__]}


@pytest.mark.parametrize("make", TORCH_MODULES)
def test_torch_flax_torch_round_trip(make):
    torch.manual_seed(0)
    original = make()
    flax_module, variables = parity.from_torch(original)
    assert config(flax_module) == config(original)
    back = parity.to_torch(flax_module, variables)
    assert type(back) is type(original) and config(back) == config(original)
    original_state, back_state = original.state_dict(), back.state_dict()
    assert list(back_state) == list(original_state)
    for name, value in original_state.items():
        assert back_state[name].dtype == value.dtype
        assert torch.equal(back_state[name], value), name


@pytest.mark.parametrize(
    "module",
    [
        flaxseq.LSTM(4, 5, 2, bidirectional=True, proj_size=3, param_dtype=jnp.float64),
        flaxseq.GRU(4, 5, bias=False, batch_first=True),
        flaxseq.RNN(4, 5, 3, nonlinearity="relu", dropout=0.5),
        flaxseq.GRUCell(4, 5, param_dtype=jnp.float64),
    ],
)
def test_flax_torch_flax_round_trip(module):
    example = jnp.zeros((2, 1, 4) if hasattr(module, "num_layers") else (1, 4), module.param_dtype)
    variables = module.init(jax.random.key(3), example)
    torch_module = parity.to_torch(module, variables)
    again, again_variables = parity.from_torch(torch_module)
    assert again == module
    jax.tree.map(
        lambda a, b: (np.testing.assert_array_equal(a, b), a.dtype == b.dtype or pytest.fail("dtype changed")),
        variables, again_variables,
    )


def test_state_dict_names_and_layout():
    module = flaxseq.LSTM(4, 5, 2, bidirectional=True, proj_size=3)
    variables = module.init(jax.random.key(0), jnp.zeros((2, 1, 4)))
    state_dict = parity.to_state_dict(module, variables)
    assert state_dict.keys() == torch.nn.LSTM(4, 5, 2, bidirectional=True, proj_size=3).state_dict().keys()
    np.testing.assert_array_equal(state_dict["weight_hr_l1_reverse"], variables["params"]["weight_hr_l1_reverse"])


def test_from_state_dict_collects_every_problem():
    module = flaxseq.GRU(4, 5, num_layers=2)
    state_dict = torch.nn.GRU(4, 5, num_layers=2).state_dict()
    del state_dict["bias_hh_l1"], state_dict["weight_ih_l0"]
    state_dict["weight_hh_l0"] = torch.zeros(15, 4)
    state_dict["weight_hr_l0"] = torch.zeros(2, 5)
    with pytest.raises(ValueError) as error:
        parity.from_state_dict(module, state_dict)
    message = str(error.value)
    assert "state_dict does not match GRU" in message
    assert "missing keys: bias_hh_l1, weight_ih_l0" in message
    assert "unexpected keys: weight_hr_l0" in message
    assert "weight_hh_l0: expected shape (15, 5), got (15, 4)" in message


def test_from_state_dict_keeps_dtype_and_refuses_float64_without_x64():
    module = flaxseq.LSTM(4, 5)
    state_dict = {k: v.numpy() for k, v in torch.nn.LSTM(4, 5, dtype=torch.float64).state_dict().items()}
    variables = parity.from_state_dict(module, state_dict)
    assert all(v.dtype == jnp.float64 for v in jax.tree.leaves(variables))
    with jax.enable_x64(False), pytest.raises(ValueError) as refused:
        parity.from_state_dict(module, state_dict)
    assert str(refused.value).splitlines()[1:] == [  # one line for the four keys
        "  bias_hh_l0 and 3 more keys: float64 needs JAX's x64 mode, which is off "
        "(jax.config.update('jax_enable_x64', True)); JAX would give float32. Or convert a float32 model "
        "(model.float())"]


def test_nnx_from_state_dict_keeps_the_dtype_as_linen_does():
    """Nothing is cast: a float64 state_dict into a float32-built NNX twin was cast down to
    float32 (values lost, with only a JAX FutureWarning), where linen keeps float64."""
    torch.manual_seed(0)
    for torch_dtype, twin_dtype in ((torch.float64, jnp.float32), (torch.float32, jnp.float64)):
        state_dict = {k: v.numpy() for k, v in torch.nn.LSTM(4, 5, dtype=torch_dtype).state_dict().items()}
        twin = parity.from_state_dict(flaxseq.nnx.LSTM(4, 5, rngs=flax.nnx.Rngs(0), param_dtype=twin_dtype),
                                      state_dict)
        for key, value in state_dict.items():
            np.testing.assert_array_equal(np.asarray(getattr(twin, key)[...]), value, strict=True)


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_hooks_and_parametrizations_are_refused_naming_the_submodule(api):
    """A hook changes what a module computes and no twin runs it: it converted silently, and the
    twin's output differed from the module's."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh())
    handle = model[0].register_forward_hook(lambda module, inputs, output: 2 * output)
    with pytest.raises(TypeError, match=r"submodule 0 \(Linear\) has a forward hook \(<lambda>\), which may change "
                                        r"what it computes and which its twin does not run; remove it"):
        parity.from_torch(model, api=api)
    handle.remove()
    parity.from_torch(model, api=api)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda module, inputs: inputs)
    try:
        with pytest.raises(TypeError, match="a global module forward pre-hook is registered"):
            parity.from_torch(model, api=api)
    finally:
        handle.remove()
    lstm = torch.nn.LSTM(3, 4)
    lstm.register_full_backward_hook(lambda module, grad_input, grad_output: grad_input)
    with pytest.raises(TypeError, match=r"LSTM has a backward hook"):
        parity.from_torch(lstm, api=api)
    normed = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match=r"weight parametrized .*remove_parametrizations\(module, 'weight'\)"):
        parity.from_torch(normed, api=api)


def test_unexpected_keys_get_hints_for_a_wrapper_prefix_a_tie_and_buffers():
    lstm = torch.nn.LSTM(3, 4)
    prefixed = {"module." + key: value for key, value in lstm.state_dict().items()}
    with pytest.raises(ValueError, match=r"hint: every unexpected key starts with 'module\.', the prefix of a "
                                         r"wrapper .*strip the prefix"):
        parity.from_state_dict(flaxseq.LSTM(3, 4), prefixed)
    extra = {**lstm.state_dict(), "copy.weight": lstm.weight_ih_l0.detach().clone(), "bn.running_mean": torch.zeros(3)}
    with pytest.raises(ValueError) as refused:
        parity.from_state_dict(flaxseq.LSTM(3, 4), extra)
    assert str(refused.value).splitlines()[1:] == [
        "  unexpected keys: bn.running_mean, copy.weight",
        "  hint: copy.weight holds the same array as weight_ih_l0; if the two are tied, pass "
        "ties={'copy.weight': 'weight_ih_l0'}",
        "  hint: bn.running_mean are buffers (batch norm's statistics), which are not converted: a twin holds "
        "parameters only",
    ]


def test_a_wrapper_is_refused_naming_the_model_to_convert():
    with pytest.raises(TypeError, match=r"DataParallel wraps the model \(module\); convert the model itself: "
                                        r"parity\.from_torch\(model\.module\)"):
        parity.from_torch(torch.nn.DataParallel(torch.nn.LSTM(3, 4)))


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_a_refused_submodule_is_named_by_its_path(api):
    nested = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Flatten()))
    with pytest.raises(TypeError, match=r"^at 1\.1: no conversion rule for torch\.nn\.modules\.flatten\.Flatten"):
        parity.from_torch(nested, api=api)


def test_unknown_module_type():
    with pytest.raises(TypeError, match="no conversion rule for torch.nn.modules.conv.Conv1d; register one"):
        parity.from_torch(torch.nn.Conv1d(2, 3, 1))


def test_subclass_uses_base_rule():
    class Wrapped(torch.nn.GRU):
        pass

    flax_module, _ = parity.from_torch(Wrapped(4, 5))
    assert isinstance(flax_module, flaxseq.GRU)


def test_a_subclass_with_its_own_call_is_refused_not_converted_as_its_base():
    """Its base's twin would compute the base's call: refused both ways, naming the class (a
    subclass of `nn.LSTM` doubling its output converted silently as a plain LSTM)."""
    class Scaled(torch.nn.LSTM):
        def forward(self, x, hx=None):
            output, state = super().forward(x, hx)
            return 2 * output, state

    class Shifted(flaxseq.GRU):
        def __call__(self, x, *args, **kwargs):
            output, state = super().__call__(x, *args, **kwargs)
            return output + 1, state

    with pytest.raises(TypeError, match=r"Scaled subclasses torch\.nn\.modules\.rnn\.LSTM and defines its own "
                                        r"forward: the twin of LSTM would compute LSTM's"):
        parity.from_torch(Scaled(4, 5))
    shifted = Shifted(4, 5)
    variables = shifted.init(jax.random.key(0), jnp.zeros((2, 1, 4)))
    with pytest.raises(TypeError, match=r"Shifted subclasses flaxseq\.layers\.GRU and defines its own __call__"):
        parity.to_torch(shifted, variables)


class TorchHead(torch.nn.Module):
    def __init__(self, size):
        super().__init__()
        self.size = size
        self.gru = torch.nn.GRU(size, size)
        self.fc = torch.nn.Linear(size, 2)

    def forward(self, x):
        return self.fc(self.gru(x)[0])


class FlaxHead(flax.linen.Module):
    size: int
    param_dtype: object = jnp.float32

    @flax.linen.compact
    def __call__(self, x):
        out, _ = flaxseq.GRU(self.size, self.size, param_dtype=self.param_dtype, name="gru")(x)
        return flaxseq.basic.Linear(2, param_dtype=self.param_dtype, name="fc")(out)


def test_user_rule_registration():
    rule = parity.copy_rule(TorchHead, FlaxHead, ("size",), lambda m: (jnp.zeros((1, 1, m.size), m.param_dtype),))
    try:
        torch.manual_seed(0)
        torch_module = TorchHead(3).double()
        flax_module, variables = parity.from_torch(torch_module)
        assert flax_module == FlaxHead(3, param_dtype=jnp.float64)
        x = np.random.default_rng(0).standard_normal((4, 2, 3))
        report = parity.compare(torch_module, flax_module, variables, (x,))
        assert report.passed, report.failures()
        back = parity.to_torch(flax_module, variables)
        assert all(torch.equal(back.state_dict()[k], v) for k, v in torch_module.state_dict().items())
    finally:
        parity.convert._RULES.remove(rule)


def test_a_rule_for_a_subclass_leaves_the_other_conversions_as_they_were():
    """A rule pointing a subclass of `nn.LSTM` at `flaxseq.LSTM` converts the subclass; plain
    `nn.LSTM` still converts, and `to_torch` still builds `nn.LSTM` (the rule used to delete
    the built-in one, and `to_torch` then built the user's subclass), in linen and NNX."""
    class LoggedLSTM(torch.nn.LSTM):
        def forward(self, x, hx=None):
            return super().forward(x, hx)

    fields = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
              "proj_size")
    linen = parity.copy_rule(LoggedLSTM, flaxseq.LSTM, fields, lambda m: (jnp.zeros((1, 1, m.input_size)),))
    nnx_rule = parity.nnx.nnx_copy_rule(LoggedLSTM, flaxseq.nnx.LSTM, fields)
    try:
        for api, twin_type in (("linen", flaxseq.LSTM), ("nnx", flaxseq.nnx.LSTM)):
            for torch_type in (LoggedLSTM, torch.nn.LSTM):
                converted = parity.from_torch(torch_type(3, 4), api=api)
                assert isinstance(converted[0] if api == "linen" else converted, twin_type)
        twin, variables = parity.from_torch(LoggedLSTM(3, 4))
        assert type(parity.to_torch(twin, variables)) is torch.nn.LSTM
        assert type(parity.to_torch(parity.from_torch(LoggedLSTM(3, 4), api="nnx"))) is torch.nn.LSTM
    finally:
        parity.convert._RULES.remove(linen)
        parity.nnx._RULES.remove(nnx_rule)


def test_a_rule_registered_for_a_torch_class_takes_over_its_conversion():
    rule = parity.copy_rule(torch.nn.GRU, FlaxHead, {"size": "hidden_size"},
                            lambda m: (jnp.zeros((1, 1, m.size), m.param_dtype),))
    try:
        assert parity.convert.find_rule(torch.nn.GRU(3, 3)).flax_type is FlaxHead
        assert parity.convert.find_rule(flaxseq.GRU(3, 3)).torch_type is torch.nn.GRU  # the built-in rule, kept
        assert parity.convert.find_rule(flaxseq.GRU(3, 3)) is not rule
    finally:
        parity.convert._RULES.remove(rule)
    assert parity.convert.find_rule(torch.nn.GRU(3, 3)).flax_type is flaxseq.GRU


def test_compare_names_outputs_that_do_not_pair_up():
    """`torch_call` returning fewer outputs, or one of another shape, is named before either
    side's loss is formed (it was zip's or torch's broadcasting error)."""
    lstm = torch.nn.LSTM(5, 7)
    twin, variables = parity.from_torch(lstm)
    x = np.random.default_rng(0).standard_normal((4, 2, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=re.escape("flaxseq returns 3 outputs [(4, 2, 7), (1, 2, 7), (1, 2, 7)], "
                                                   "PyTorch 1 [(4, 2, 7)]")):
        parity.compare(lstm, twin, variables, (x,), torch_call=lambda m, x: m(x)[0])
    with pytest.raises(ValueError, match=re.escape("out[0]: flaxseq gives shape (4, 2, 7), PyTorch (3, 2, 7)")):
        parity.compare(lstm, twin, variables, (x,), torch_call=lambda m, x: (m(x)[0][:-1], m(x)[1]))


@pytest.mark.parametrize("front_end", ["linen", "nnx"])
def test_bfloat16_modules_convert_both_ways_bit_for_bit(front_end):
    """numpy has no bfloat16: a bfloat16 module converts from memory, and back, through an
    integer view (it was torch's `TypeError: Got unsupported ScalarType BFloat16`)."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, 2, bidirectional=True).to(torch.bfloat16)
    if front_end == "linen":
        twin, variables = parity.from_torch(lstm)
        assert twin.param_dtype == jnp.bfloat16
        values = parity.to_state_dict(twin, variables)
        back = parity.to_torch(twin, variables)
    else:
        twin = parity.from_torch(lstm, api="nnx")
        values = parity.to_state_dict(twin)
        back = parity.to_torch(twin)
    for name, tensor in lstm.state_dict().items():
        assert values[name].dtype == jnp.bfloat16
        assert np.array_equal(np.asarray(values[name]).view(np.int16), tensor.view(torch.int16).numpy()), name
        assert back.state_dict()[name].dtype == torch.bfloat16 and torch.equal(back.state_dict()[name], tensor), name
    mapping_twin = flaxseq.LSTM(3, 4, 2, bidirectional=True, param_dtype=jnp.bfloat16)
    mapping_variables = parity.from_state_dict(mapping_twin, lstm.state_dict())  # a mapping of bfloat16 tensors
    for name, tensor in parity.to_torch(mapping_twin, mapping_variables).state_dict().items():
        assert torch.equal(tensor, lstm.state_dict()[name]), name


def test_a_linen_list_of_layers_gets_a_hint_and_pytorch_names_convert():
    """A ModuleList's `layers.0` against a linen list attribute's `layers_0`: the refusal says
    so, and the twin with PyTorch's names (the hint's way) loads and matches."""
    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.GRU(4, 4) for _ in range(2)])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)[0]
            return x

    class ListTwin(flax.linen.Module):
        def setup(self):
            self.layers = [flaxseq.GRU(4, 4) for _ in range(2)]

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)[0]
            return x

    class NamedTwin(flax.linen.Module):
        @flax.linen.compact
        def __call__(self, x):
            for i in range(2):
                x = flaxseq.GRU(4, 4, name=f"layers.{i}")(x)[0]
            return x

    torch.manual_seed(0)
    stack = Stack()
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=re.escape("hint: 8 missing keys differ from unexpected ones by '_i' for "
                                                   "'.i' (the twin's layers_0.bias_hh_l0 for PyTorch's "
                                                   "layers.0.bias_hh_l0)")):
        parity.from_state_dict(ListTwin(), stack.state_dict(), example_args=(x,))
    variables = parity.from_state_dict(NamedTwin(), stack.state_dict(), example_args=(x,))
    report = parity.compare(stack, NamedTwin(), variables, (x,))
    assert report.passed, report.failures()
