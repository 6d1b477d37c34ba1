"""`parity.compare` leaves the user's modules as it found them, and does not compare the
gradient of a parameter frozen in PyTorch."""

import numpy as np
import pytest
import torch
from flax import nnx

import parity
import torch_ref

VOCAB = 20


def twins(api):
    torch.manual_seed(0)
    torch_model = torch_ref.TextClassifier(VOCAB, 4, 3, 2, 2).double()
    if api == "nnx":
        return torch_model, parity.from_torch(torch_model, api="nnx"), None
    return torch_model, *parity.from_torch(torch_model)


def run(torch_model, flax_model, variables, train, **options):
    ids = np.random.default_rng(1).integers(1, VOCAB, (3, 5))
    rename = {"Dropout_0": "dropout"} if train and variables is not None else None
    return parity.compare(torch_model, flax_model, variables, (ids,), train=train, rename=rename, **options)


def torch_state(module):
    """Each submodule's mode, each parameter's `.grad` (the object and a copy of its values) and `requires_grad`."""
    modes = [(name, sub.training) for name, sub in module.named_modules()]
    grads = [
        (name, p.grad, None if p.grad is None else p.grad.clone(), p.requires_grad)
        for name, p in module.named_parameters()
    ]
    return modes, grads


def assert_unchanged(module, before):
    modes, grads = torch_state(module)
    assert modes == before[0]
    for (name, grad, values, requires), (_, grad_now, _, requires_now) in zip(before[1], grads, strict=True):
        assert grad_now is grad, name  # None stays None; the user's own tensor stays in place
        if grad is not None:
            torch.testing.assert_close(grad_now, values, rtol=0, atol=0)
        assert requires_now == requires, name


def mixed(torch_model):
    """Training at the top, the recurrent layer in evaluation; one parameter with a gradient of its own."""
    torch_model.train()
    torch_model.lstm.eval()
    torch_model.fc.weight.grad = torch.full_like(torch_model.fc.weight, 7.0)
    return torch_state(torch_model)


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("train", [False, True])
def test_compare_leaves_the_torch_module_as_it_found_it(api, train):
    torch_model, flax_model, variables = twins(api)
    before = mixed(torch_model)
    report = run(torch_model, flax_model, variables, train)
    assert report.passed, report.failures()
    assert_unchanged(torch_model, before)
    torch_model.eval()  # all of it, the other way
    torch_model.fc.weight.grad = None
    before = torch_state(torch_model)
    run(torch_model, flax_model, variables, train)
    assert_unchanged(torch_model, before)


@pytest.mark.parametrize("train", [False, True])
def test_compare_leaves_the_nnx_module_in_its_mode(train):
    torch_model, model, _ = twins("nnx")
    for mode in (model.eval, model.train):
        mode()
        deterministic = [getattr(sub, "deterministic", None) for _, sub in nnx.iter_modules(model)]
        run(torch_model, model, None, train)
        assert [getattr(sub, "deterministic", None) for _, sub in nnx.iter_modules(model)] == deterministic


def test_compare_restores_the_torch_module_when_it_raises():
    torch_model, flax_model, variables = twins("linen")
    before = mixed(torch_model)
    with pytest.raises(ValueError, match="returns 1 outputs"):  # the call ran, then the outputs do not pair up
        run(torch_model, flax_model, variables, False, torch_call=lambda m, ids: (m(ids), m(ids)))
    assert_unchanged(torch_model, before)



@pytest.mark.parametrize("train", [False, True])
def test_a_parameter_frozen_in_torch_is_not_compared_and_the_report_says_so(train):
    torch_model, flax_model, variables = twins("linen")
    torch_model.embedding.weight.requires_grad_(False)  # a pretrained embedding, say
    report = run(torch_model, flax_model, variables, train)
    assert report.passed, report.failures()
    names = {d.name for d in report.gradients}
    assert "dembedding.weight" not in names
    assert {"dfc.weight", "dlstm.weight_ih_l0", "dlstm.bias_hh_l1"} <= names  # the others still are
    assert report.frozen == ["embedding.weight"]
    assert report.notes() == [
        "gradients not compared: parameters frozen in PyTorch (requires_grad=False): embedding.weight"
    ]
    assert torch_model.embedding.weight.grad is None and not torch_model.embedding.weight.requires_grad

    # its value still counts, through the outputs
    params = dict(variables["params"])
    params["embedding"] = {"embedding": params["embedding"]["embedding"] + 0.1}
    wrong = run(torch_model, flax_model, {**variables, "params": params}, train)
    assert any(f.startswith("out[0]") for f in wrong.failures()), wrong.failures()


def test_a_torch_module_frozen_throughout_compares_its_outputs():
    torch_model, flax_model, variables = twins("linen")
    torch_model.requires_grad_(False)  # and the only input is integer: nothing to differentiate in PyTorch
    report = run(torch_model, flax_model, variables, False)
    assert report.passed, report.failures()
    assert report.gradients == [] and report.worst_gradient is None
    assert len(report.frozen) == len(list(torch_model.parameters()))



def test_the_float64_rule_report_keeps_the_frozen_note():
    from parity.conditioning import ConditionedReport

    report = ConditionedReport(dtype=np.dtype("float32"), frozen=["embedding.weight"])
    assert report.notes() == [
        "gradients not compared: parameters frozen in PyTorch (requires_grad=False): embedding.weight"
    ]
