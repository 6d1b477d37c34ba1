"""Training-mode comparison (`parity.compare(train=True)`, `parity.lockstep.lockstep`): the same
dropout masks on both sides, flaxseq's dropout between recurrent layers checked against
PyTorch's layer-by-layer equivalent, and comparisons that must fail."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import flaxseq
import flaxseq.nnx
import flaxseq.stack
import parity
from flaxseq.basic import Embedding, Linear
from parity.convert import torch_name
from parity.lockstep import LockstepCase, lockstep

VOCAB, EMBED, HIDDEN, TIME, BATCH = 11, 5, 4, 6, 3


class TorchLM(torch.nn.Module):
    """Embedding, dropout, a two-layer recurrent stack with dropout, the same dropout, a decoder."""

    def __init__(self, kind="LSTM", bidirectional=False, proj_size=0, dropout=0.3, rnn_dropout=0.4):
        super().__init__()
        extra = {"proj_size": proj_size} if proj_size else {}
        self.embedding = torch.nn.Embedding(VOCAB, EMBED)
        self.drop = torch.nn.Dropout(dropout)
        self.rnn = getattr(torch.nn, kind)(
            EMBED, HIDDEN, 2, batch_first=True, dropout=rnn_dropout, bidirectional=bidirectional, **extra
        )
        self.decoder = torch.nn.Linear((1 + bidirectional) * (proj_size or HIDDEN), VOCAB)

    def forward(self, ids, lengths=None):
        x = self.drop(self.embedding(ids))  # [batch, time, embed]
        if lengths is None:
            out, state = self.rnn(x)
        else:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, state = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return self.decoder(self.drop(out)), state


class LinenLM(nn.Module):
    """`TorchLM`'s linen twin; `forget` leaves the second dropout call deterministic."""

    kind: str = "LSTM"
    bidirectional: bool = False
    proj_size: int = 0
    dropout: float = 0.3
    rnn_dropout: float = 0.4
    forget: bool = False
    param_dtype: type = jnp.float64

    @nn.compact
    def __call__(self, ids, lengths=None, *, deterministic=True):
        extra = {"proj_size": self.proj_size} if self.proj_size else {}
        drop = nn.Dropout(self.dropout, name="drop")
        x = drop(Embedding(VOCAB, EMBED, param_dtype=self.param_dtype, name="embedding")(ids), deterministic)
        out, state = getattr(flaxseq, self.kind)(
            EMBED, HIDDEN, 2, batch_first=True, dropout=self.rnn_dropout, bidirectional=self.bidirectional,
            param_dtype=self.param_dtype, name="rnn", **extra,
        )(x, lengths=lengths, deterministic=deterministic)
        out = drop(out, deterministic or self.forget)
        return Linear(VOCAB, param_dtype=self.param_dtype, name="decoder")(out), state


class NNXLM(nnx.Module):
    """`TorchLM`'s NNX twin."""

    def __init__(self, kind="LSTM", bidirectional=False, proj_size=0, dropout=0.3, rnn_dropout=0.4, *,
                 param_dtype=jnp.float64):
        rngs = nnx.Rngs(0)
        extra = {"proj_size": proj_size} if proj_size else {}
        self.embedding = flaxseq.nnx.Embedding(VOCAB, EMBED, rngs=rngs, param_dtype=param_dtype)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.rnn = getattr(flaxseq.nnx, kind)(
            EMBED, HIDDEN, 2, batch_first=True, dropout=rnn_dropout, bidirectional=bidirectional, rngs=rngs,
            param_dtype=param_dtype, **extra,
        )
        self.decoder = flaxseq.nnx.Linear(
            (1 + bidirectional) * (proj_size or HIDDEN), VOCAB, rngs=rngs, param_dtype=param_dtype
        )

    def __call__(self, ids, lengths=None):
        out, state = self.rnn(self.drop(self.embedding(ids)), lengths=lengths)
        return self.decoder(self.drop(out)), state


def linen_variables(module: nn.Module, torch_module: torch.nn.Module) -> dict:
    """`torch_module`'s weights in `module`'s tree, by the converter's leaf rules."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, TIME), jnp.int32)))
    state = {k: v.detach().numpy() for k, v in torch_module.state_dict().items()}
    params = {}
    for path in flatten_dict(shapes["params"]):
        name, transposed = torch_name(path)
        params[path] = jnp.asarray(state[name].T if transposed else state[name])
    return {"params": unflatten_dict(params)}


def twins(api, dtype=torch.float64, **config):
    torch.manual_seed(0)
    torch_module = TorchLM(**config).to(dtype)
    if api == "nnx":
        flax_module = NNXLM(**config, param_dtype=jnp.dtype(str(dtype).removeprefix("torch.")))
        return torch_module, parity.from_state_dict(flax_module, torch_module.state_dict()), None
    flax_module = LinenLM(**config, param_dtype=jnp.dtype(str(dtype).removeprefix("torch.")))
    return torch_module, flax_module, linen_variables(flax_module, torch_module)


def inputs(with_lengths):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, VOCAB, (BATCH, TIME))
    kwargs = {"lengths": np.array([TIME, 2, 4])} if with_lengths else {}
    return (ids,), kwargs


def compare(api, with_lengths=False, dtype=torch.float64, seed=0, **config):
    torch_module, flax_module, variables = twins(api, dtype, **config)
    args, kwargs = inputs(with_lengths)
    names = ("logits", "h_n", "c_n") if config.get("kind", "LSTM") == "LSTM" else ("logits", "h_n")
    return parity.compare(torch_module, flax_module, variables, args, kwargs, train=True, seed=seed,
                          output_names=names)


CASES = [
    ("linen", "LSTM", dict(bidirectional=True), True),
    ("nnx", "LSTM", dict(proj_size=3), True),
    ("linen", "GRU", dict(bidirectional=True), False),
    ("nnx", "RNN", {}, True),
]


@pytest.mark.parametrize(("api", "kind", "config", "with_lengths"), CASES,
                         ids=[f"{a}-{k}-{'-'.join(c) or 'uni'}-{'lengths' if w else 'full'}" for a, k, c, w in CASES])
def test_train_compare_passes(api, kind, config, with_lengths):
    report = compare(api, with_lengths, kind=kind, **config)
    assert report.passed, report.failures()
    assert report.train and report.mode == "training (dropout: drop: 2 calls; rnn: 1 call, between layers)"
    assert report.dropout_sites == ["drop: 2 calls", "rnn: 1 call, between layers"]
    assert max(d.rel for d in report.outputs + report.gradients) <= 1e-12
    # every parameter is compared, the recurrent ones included
    assert {d.name for d in report.gradients} >= {"drnn.weight_ih_l1", "dembedding.weight", "ddecoder.weight"}


def test_train_compare_float32():
    report = compare("linen", True, dtype=torch.float32, bidirectional=True)
    assert report.passed, report.failures()
    assert report.dtype == np.float32


def test_bare_layer_with_input_and_state_gradients():
    """A flaxseq layer alone (the site is the root, ''): input and initial-state gradients too."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 4, 3, dropout=0.5, bidirectional=True).double()
    flax_gru, variables = parity.from_torch(gru)
    rng = np.random.default_rng(0)
    x, h0 = rng.standard_normal((5, 2, 3)), rng.standard_normal((6, 2, 4))
    report = parity.compare(gru, flax_gru, variables, (x, h0), {"lengths": np.array([5, 3])}, train=True,
                            torch_call=parity.layers.torch_forward, input_names=("input", "h_0"))
    assert report.passed, report.failures()
    assert {"dinput", "dh_0"} <= {d.name for d in report.gradients}
    assert report.dropout_sites == ["the module: 1 call, between layers"]


# --- comparisons that must fail -----------------------------------------------------------


def test_forgotten_dropout_fails():
    """The twin's second dropout call never drops: the logits differ, and the call is named."""
    torch_module, _, _ = twins("linen")
    flax_module = LinenLM(forget=True)
    variables = linen_variables(flax_module, torch_module)
    args, kwargs = inputs(True)
    report = parity.compare(torch_module, flax_module, variables, args, kwargs, train=True,
                            output_names=("logits", "h_n", "c_n"))
    assert not report.passed and report.mode.startswith("training")
    assert parity.Report(np.dtype("float64")).mode == "evaluation"
    failures = report.failures()
    assert any(f.startswith("logits:") for f in failures)
    assert not any(f.startswith(("h_n:", "c_n:")) for f in failures)  # the stack itself agrees
    assert "dropout site 'drop' call 1: drops in PyTorch only (flaxseq rate 0.3, PyTorch p 0.3)" in failures


def test_forgotten_layer_dropout_fails():
    """flaxseq's stack built without dropout between layers: the stack's outputs differ."""
    torch_module, _, _ = twins("nnx")
    flax_module = parity.from_state_dict(NNXLM(rnn_dropout=0.0), torch_module.state_dict())
    args, kwargs = inputs(False)
    report = parity.compare(torch_module, flax_module, None, args, kwargs, train=True,
                            output_names=("logits", "h_n", "c_n"))
    failures = report.failures()
    assert any(f.startswith("h_n:") for f in failures) and any(f.startswith("drnn.weight_ih_l0:") for f in failures)
    assert "recurrent layer 'rnn' call 0: drops in PyTorch only (flaxseq rate 0.0, PyTorch p 0.4)" in failures


def _bad_scale(x, rate, key):
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x, 0)  # forgets 1 / (1 - rate)


def _drop_after_last(run):
    def patched(config, weights, input, hx=None, *, dropout_keys=None, **kwargs):
        output, state = run(config, weights, input, hx, dropout_keys=dropout_keys, **kwargs)
        if dropout_keys is not None:  # one more dropout, on the last layer's output
            output = flaxseq.stack.dropout(output, config.dropout, jax.random.fold_in(dropout_keys[-1], 1))
        return output, state
    return patched


@pytest.mark.parametrize(("api", "broken"), [("linen", "scale"), ("nnx", "after last layer")])
def test_wrong_layer_dropout_fails(monkeypatch, api, broken):
    if broken == "scale":
        monkeypatch.setattr(flaxseq.stack, "dropout", _bad_scale)
    else:
        monkeypatch.setattr(flaxseq.stack, "run", _drop_after_last(flaxseq.stack.run))
    report = compare(api, with_lengths=True)
    failures = report.failures()
    assert any(f.startswith("logits:") for f in failures)
    assert any(f.startswith("drnn.weight_ih_l0:") for f in failures)
    if broken == "scale":  # the last layer's states see the badly scaled input
        assert any(f.startswith("h_n:") for f in failures)
    else:  # dropping after the last layer changes no final state
        assert not any(f.startswith(("h_n:", "c_n:")) for f in failures)
    assert not report.problems  # the sites agree: only the values tell


def test_site_mismatch_is_an_error():
    """A dropout module on PyTorch's side only, and one of flaxseq's under another name."""

    class Torch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)
            self.drop = torch.nn.Dropout(0.5)
            self.extra = torch.nn.Dropout(0.2)

        def forward(self, x):
            return self.extra(self.fc(self.drop(x)))

    class Twin(nn.Module):
        @nn.compact
        def __call__(self, x, deterministic=True):
            x = nn.Dropout(0.5)(x, deterministic)
            return Linear(2, param_dtype=jnp.float64, name="fc")(x)

    torch_module = Torch().double()
    variables = {"params": {"fc": {"kernel": jnp.asarray(torch_module.fc.weight.detach().numpy().T),
                                   "bias": jnp.asarray(torch_module.fc.bias.detach().numpy())}}}
    x = np.ones((4, 3))
    with pytest.raises(ValueError) as error:
        parity.compare(torch_module, Twin(), variables, (x,), train=True)
    message = str(error.value)
    assert ("dropout site 'Dropout_0' only in flaxseq (the other side has: drop, extra) (a functional "
            "torch.nn.functional.dropout is not seen: use an nn.Dropout module)") in message
    assert "dropout site 'drop' only in PyTorch (the other side has: Dropout_0)" in message
    assert "dropout site 'extra' only in PyTorch" in message
    # renaming flaxseq's site leaves only the missing one
    with pytest.raises(ValueError, match=r"sites differ:\n  dropout site 'extra' only in PyTorch[^\n]*$"):
        parity.compare(torch_module, Twin(), variables, (x,), train=True, rename={"Dropout_0": "drop"})


class _TinyTorch(torch.nn.Module):
    def __init__(self, drop, calls=1):
        super().__init__()
        self.fc, self.drop, self.calls = torch.nn.Linear(3, 3), drop, calls

    def forward(self, x):
        for _ in range(self.calls):
            x = self.drop(x)
        return self.fc(x)


class _TinyTwin(nn.Module):
    calls: int = 1
    broadcast_dims: tuple = ()

    @nn.compact
    def __call__(self, x, deterministic=True):
        drop = nn.Dropout(0.5, broadcast_dims=self.broadcast_dims, name="drop")
        for _ in range(self.calls):
            x = drop(x, deterministic)
        return Linear(3, param_dtype=jnp.float64, name="fc")(x)


@pytest.mark.parametrize(("torch_module", "twin", "message"), [
    (_TinyTorch(torch.nn.Dropout(0.5), calls=2), _TinyTwin(),
     "dropout site 'drop': PyTorch calls it 2 times, flaxseq 1"),
    (_TinyTorch(torch.nn.Dropout2d(0.5)), _TinyTwin(),
     "'drop': Dropout2d has no flaxseq twin in a training comparison"),
    (_TinyTorch(torch.nn.Dropout(0.5)), _TinyTwin(broadcast_dims=(0,)),
     "dropout site 'drop': broadcast_dims (0,) has no PyTorch twin"),
], ids=["calls", "Dropout2d", "broadcast_dims"])
def test_unmatched_dropout_messages(torch_module, twin, message):
    torch_module = torch_module.double()
    variables = {"params": {"fc": {"kernel": jnp.asarray(torch_module.fc.weight.detach().numpy().T),
                                   "bias": jnp.asarray(torch_module.fc.bias.detach().numpy())}}}
    with pytest.raises(ValueError, match=re.escape(message)):
        parity.compare(torch_module, twin, variables, (np.ones((2, 3)),), train=True)


# --- lockstep training with dropout ------------------------------------------------------


def _torch_lm_loss(outputs, targets):
    return torch.nn.functional.cross_entropy(outputs[0].reshape(-1, VOCAB), targets.reshape(-1))


def _flax_lm_loss(outputs, targets):
    logits = outputs[0].reshape(-1, VOCAB)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets.reshape(-1, 1), axis=1))


@pytest.mark.parametrize(("api", "optimizer"), [("nnx", "sgd")])  # linen and Adam: the TextClassifier's
def test_lockstep_with_dropout(api, optimizer):
    """A word-level language model trained a few steps by both, new masks at every step."""
    torch_module, flax_module, variables = twins(api)
    rng = np.random.default_rng(2)
    batches = [((rng.integers(0, VOCAB, (BATCH, TIME)),), rng.integers(0, VOCAB, (BATCH, TIME))) for _ in range(3)]
    torch_module.eval()
    report = lockstep(
        torch_module, flax_module, variables, batches, torch_loss=_torch_lm_loss, flax_loss=_flax_lm_loss,
        lr=0.5 if optimizer == "sgd" else 0.01, optimizer=optimizer, max_grad_norm=0.25, seed=3,
    )
    # trained in training mode, and left in the mode it was given, without the last step's gradients
    assert not any(m.training for m in torch_module.modules())
    assert all(p.grad is None for p in torch_module.parameters())
    assert report.passed, report.failures()
    assert report.train and report.dropout_sites == ["drop: 2 calls", "rnn: 1 call, between layers"]
    assert max(d.rel for d in report.outputs + report.gradients) <= 1e-10
    assert len({d.name for d in report.gradients}) == len(list(torch_module.parameters()))
    # the weights moved: the comparison is of training, not of the starting point
    start = dict(twins(api)[0].named_parameters())
    with torch.no_grad():
        moved = max(float((p - start[n]).abs().max()) for n, p in torch_module.named_parameters())
    assert moved > 1e-3


def test_text_classifier_lockstep_with_dropout():
    """The tutorial's classifier in training mode: its one dropout module called twice (flaxseq's
    `Dropout_0` is PyTorch's `dropout`), the bidirectional LSTM's dropout between layers."""
    case = LockstepCase("float64", steps=4, dropout=0.5)
    report = case.run(seed=1)
    assert report.passed, report.failures()
    assert report.dropout_sites == ["dropout: 2 calls", "lstm: 1 call, between layers"]
    assert "dropout 0.5" in case.label()
