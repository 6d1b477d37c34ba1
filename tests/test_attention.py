"""Attention, AttnDecoder and Seq2SeqAttention against PyTorch: outputs, gradients, masks,
conversion both ways, teacher forcing, greedy generation and argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from test_seq2seq import check_generate, check_round_trips, check_teacher_forcing, inputs, torch_model

import parity
from parity.attention import attention_cases
from parity.conditioning import ConditionedReport
from parity.seq2seq import BATCH, HIDDEN, SRC_LEN, TRG_LEN, VOCAB


@pytest.mark.parametrize("case", attention_cases(), ids=lambda c: f"{c.label()} {c.dtype}")
def test_parity(case):
    report = case.run(seed=1)
    assert report.passed, f"{case.label()} {case.dtype}:\n" + "\n".join(report.failures())
    assert report.output_dtypes and all(dt == np.dtype(case.dtype) for dt in report.output_dtypes)
    expected = {f"d{name}" for name, _ in torch_model(case.model).named_parameters()}
    assert expected <= {d.name for d in report.gradients}
    if case.model != "Seq2SeqAttention":
        assert "dencoder_outputs" in {d.name for d in report.gradients}
    if isinstance(report, ConditionedReport):
        # float32: the tensors beyond 1e-5 of PyTorch's float32 are the attention's gradients
        # at near-uniform attention, where PyTorch's float32 misses its own float64 as much
        beyond = {d.name for d in report.gradients + report.outputs if d.rel > 1e-5}
        assert all(name.startswith("ddecoder.attention.") for name in beyond), beyond
        for name in beyond:
            torch_error, flax_error = report.float64_errors[name]
            assert torch_error > 1e-6 and flax_error <= 10 * torch_error


# float32 round trips of the parts; the whole model's in float64
ROUND_TRIPS = [
    (name, dtype)
    for name in ("Attention", "AttnDecoder", "Seq2SeqAttention")
    for dtype in (torch.float64, torch.float32)
]


@pytest.mark.parametrize("name, dtype", [c for c in ROUND_TRIPS if c != ("Seq2SeqAttention", torch.float32)])
def test_round_trips(name, dtype):
    check_round_trips(name, dtype)


# ---- masks ----


def test_fully_masked_row_is_uniform():
    """A row with no real source position gets uniform weights, without NaN, in both frameworks."""
    model = torch_model("Attention")
    flax_module, variables = parity.from_torch(model)
    rng = np.random.default_rng(0)
    hidden, encoder_outputs = rng.standard_normal((BATCH, HIDDEN)), rng.standard_normal((BATCH, SRC_LEN, HIDDEN))
    mask = np.ones((BATCH, SRC_LEN), bool)
    mask[0] = False
    mask[2, 3:] = False
    flax_weights = np.asarray(flax_module.apply(variables, hidden, encoder_outputs, mask))
    with torch.no_grad():
        torch_weights = model(*map(torch.from_numpy, (hidden, encoder_outputs, mask))).numpy()
    for weights in (flax_weights, torch_weights):
        assert np.isfinite(weights).all()
        np.testing.assert_array_equal(weights[0], np.full(SRC_LEN, 1 / SRC_LEN))
        assert (weights[2, 3:] == 0).all() and weights[2, :3].min() > 0
        np.testing.assert_allclose(weights.sum(axis=1), 1, rtol=1e-15)
    np.testing.assert_allclose(flax_weights, torch_weights, rtol=1e-14, atol=1e-16)
    # the whole model with a fully masked row: `test_parity[Seq2SeqAttention ... src_mask]`


def test_src_lengths_default_mask():
    """With src_lengths and no src_mask, attention skips the positions past each length."""
    model = torch_model("Seq2SeqAttention")
    flax_module, variables = parity.from_torch(model)
    src, trg = inputs()
    lengths = np.array([SRC_LEN, 2, 4])
    mask = np.arange(SRC_LEN)[None, :] < lengths[:, None]
    default = flax_module.apply(variables, src, trg, 1.0, src_lengths=lengths)
    explicit = flax_module.apply(variables, src, trg, 1.0, mask, src_lengths=lengths)
    unmasked = flax_module.apply(variables, src, trg, 1.0, np.ones_like(mask), src_lengths=lengths)
    np.testing.assert_array_equal(default, explicit)
    assert not np.allclose(default, unmasked)
    with torch.no_grad():
        torch_default = model(torch.from_numpy(src), torch.from_numpy(trg), 1.0, src_lengths=torch.from_numpy(lengths))
    np.testing.assert_allclose(torch_default.numpy(), default, rtol=1e-12, atol=1e-13)


# ---- teacher forcing and generation ----


def test_teacher_forcing():
    check_teacher_forcing("Seq2SeqAttention", extra={"src_lengths": np.array([SRC_LEN, 2, 4])})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_generate(dtype):
    mask = np.ones((BATCH, SRC_LEN), bool)
    mask[1, 1:] = False
    extra = {"src_mask": mask, "src_lengths": np.array([SRC_LEN, 2, 4])}
    check_generate("Seq2SeqAttention", dtype, seed=9, extra=extra)


# ---- bad input ----


def test_bad_src_mask():
    module, variables = parity.from_torch(torch_model("Seq2SeqAttention"))
    src, trg = inputs()
    with pytest.raises(ValueError, match=r"src_mask must have shape \[batch, src_len\] = \(3, 7\), got shape \(3, 6\)"):
        module.apply(variables, src, trg, 1.0, np.ones((BATCH, SRC_LEN - 1), bool))
    with pytest.raises(TypeError, match=r"src_mask must be a boolean array \[batch, src_len\], got dtype float"):
        module.apply(variables, src, trg, 1.0, np.ones((BATCH, SRC_LEN)))
    with pytest.raises(ValueError, match=r"src_mask must have shape"):
        module.apply(variables, src, 4, 1, 2, np.ones((BATCH + 1, SRC_LEN), bool), method="generate")
    with pytest.raises(ValueError, match=r"teacher_forcing must have shape \[trg_len - 1\] = \(4,\), got shape \(2,\)"):
        module.apply(variables, src, trg, teacher_forcing=np.ones(2, bool))
    with pytest.raises(ValueError, match="src and trg must have the same batch size"):
        module.apply(variables, src, trg[:2], 1.0)
    with pytest.raises(ValueError, match=r"src must lie in \[0, vocab_size\)"):
        module.apply(variables, src + VOCAB, trg, 1.0)


def test_bad_attention_inputs():
    attention, variables = parity.from_torch(torch_model("Attention"))
    hidden, encoder_outputs = np.zeros((BATCH, HIDDEN)), np.zeros((BATCH, SRC_LEN, HIDDEN))
    with pytest.raises(ValueError, match=r"hidden must be \[batch, hidden_size\] = \(3, 5\), got shape \(3, 4\)"):
        attention.apply(variables, hidden[:, :4], encoder_outputs)
    with pytest.raises(ValueError, match=r"encoder_outputs must be \[batch, src_len, hidden_size\] with hidden_size=5"):
        attention.apply(variables, hidden, encoder_outputs[0])
    with pytest.raises(ValueError, match=r"mask must have shape \[batch, src_len\] = \(3, 7\), got shape \(7,\)"):
        attention.apply(variables, hidden, encoder_outputs, np.ones(SRC_LEN, bool))
    decoder, variables = parity.from_torch(torch_model("AttnDecoder"))
    state = np.zeros((2, BATCH, HIDDEN))
    with pytest.raises(ValueError, match=r"x must hold one step of token ids \[batch, 1\], got shape \(3, 2\)"):
        decoder.apply(variables, np.zeros((BATCH, 2), int), state, state, encoder_outputs)
    with pytest.raises(ValueError, match=r"hidden must be \[num_layers, batch, hidden_size\], got shape \(3, 5\)"):
        decoder.apply(variables, np.zeros((BATCH, 1), int), state[0], state, encoder_outputs)


def test_precomputed_keys_give_the_same_weights_and_predictions():
    """The decoding loops pass the keys computed once per source; a step given them gives exactly
    what the step computing them gives, and PyTorch's `attn` over the concatenation agrees."""
    rng = np.random.default_rng(0)
    hidden, encoder_outputs = rng.normal(size=(BATCH, HIDDEN)), rng.normal(size=(BATCH, SRC_LEN, HIDDEN))
    torch_attention = torch_model("Attention")
    attention, variables = parity.from_torch(torch_attention)
    keys = attention.apply(variables, encoder_outputs, method="source_keys")
    weights = attention.apply(variables, hidden, encoder_outputs)
    np.testing.assert_array_equal(attention.apply(variables, hidden, encoder_outputs, None, keys), weights)
    expected = torch_attention(torch.tensor(hidden), torch.tensor(encoder_outputs)).detach().numpy()
    np.testing.assert_allclose(weights, expected, rtol=1e-13, atol=1e-15)
    message = r"keys must have the shape of encoder_outputs \(3, 7, 5\), got shape \(3, 6, 5\)"
    with pytest.raises(ValueError, match=message):
        attention.apply(variables, hidden, encoder_outputs, None, keys[:, 1:])

    decoder, variables = parity.from_torch(torch_model("AttnDecoder"))
    x, state = np.ones((BATCH, 1), int), rng.normal(size=(2, BATCH, HIDDEN))
    keys = decoder.apply(variables, encoder_outputs, method="source_keys")
    given = decoder.apply(variables, x, state, state, encoder_outputs, keys=keys)
    for a, b in zip(given, decoder.apply(variables, x, state, state, encoder_outputs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_jit():
    """The whole model, its draw and its generation compile under jax.jit."""
    module, variables = parity.from_torch(torch_model("Seq2SeqAttention"))
    src, trg = inputs()
    run = jax.jit(lambda v, s, t, key: module.apply(v, s, t, 0.5, rngs={"teacher": key}))
    outputs = run(variables, src, trg, jax.random.key(0))
    assert outputs.shape == (BATCH, TRG_LEN, VOCAB) and jnp.isfinite(outputs).all()
    generate = jax.jit(module.apply, static_argnums=(2, 3, 4), static_argnames="method")
    tokens, lengths = generate(variables, src, 6, 1, 2, method="generate")
    assert tokens.shape == (BATCH, 6) and lengths.shape == (BATCH,)
