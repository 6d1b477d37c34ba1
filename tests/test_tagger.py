"""`GRUTagger` against the PyTorch reference: parity (with and without lengths), scores past each
length, conversion, initialisation, jit and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from model_checks import check_init_like_torch, check_jit, check_report, check_round_trips

import flaxseq
import parity
import torch_ref
from parity.classifiers import random_lengths, random_tokens
from parity.tagger import TaggerCase, model_cases

VOCAB, EMBED, HIDDEN, LAYERS, TAGS, BATCH, TIME = 20, 6, 5, 2, 4, 3, 6


def reference_model(dtype=torch.float64):
    torch.manual_seed(0)
    return torch_ref.GRUTagger(VOCAB, EMBED, HIDDEN, LAYERS, TAGS).to(dtype)


def tokens_and_lengths(seed=0):
    rng = np.random.default_rng(seed)
    lengths = random_lengths(rng, BATCH, TIME)
    return random_tokens(rng, VOCAB, lengths, TIME), lengths


@pytest.mark.parametrize("case", model_cases(), ids=lambda c: f"{c.label()} {c.dtype}")
def test_parity(case):
    check_report(case)


def test_scores_past_each_length_are_the_bias():
    """With lengths, the GRU outputs past each length are zero in both frameworks, so the scores
    there are exactly `fc.bias`; within the lengths, the padding tokens do not matter."""
    reference = reference_model()
    model, variables = parity.from_torch(reference)
    apply = jax.jit(model.apply)
    ids, lengths = tokens_and_lengths()
    scores = np.asarray(apply(variables, ids, lengths))
    reference.eval()
    torch_scores = reference(torch.from_numpy(ids), lengths).detach().numpy()
    past = np.arange(TIME)[None, :] >= lengths[:, None]  # [batch, time]
    bias = reference.fc.bias.detach().numpy()
    assert past.any()
    np.testing.assert_array_equal(scores[past], np.broadcast_to(bias, scores[past].shape))
    np.testing.assert_array_equal(torch_scores[past], np.broadcast_to(bias, scores[past].shape))
    np.testing.assert_allclose(scores, torch_scores, rtol=1e-12, atol=1e-14)

    other = np.where(past, (ids + 7) % VOCAB, ids)
    np.testing.assert_array_equal(apply(variables, other, lengths), scores)
    padded = np.asarray(apply(variables, ids))  # without lengths the backward direction starts on padding
    short = lengths < TIME
    assert not np.allclose(padded[short][~past[short]], scores[short][~past[short]])
    np.testing.assert_allclose(apply(variables, ids, np.full(BATCH, TIME)), padded, rtol=1e-14)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trips(dtype):
    model = flaxseq.GRUTagger(VOCAB, EMBED, HIDDEN, LAYERS, TAGS, param_dtype=jnp.dtype(dtype))
    check_round_trips(reference_model(getattr(torch, dtype)), model)


def test_init_like_torch():
    torch.manual_seed(0)
    reference = torch_ref.GRUTagger(100, 30, 30, 2, 30)
    model = flaxseq.GRUTagger(100, 30, 30, 2, 30)
    check_init_like_torch(reference, model, model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))


@pytest.mark.parametrize("lengths", [False, True])
def test_jit(lengths):
    case = TaggerCase(lengths=lengths)
    torch.manual_seed(0)
    model, variables = parity.from_torch(case.torch_module().double())
    args, kwargs = case.inputs(np.random.default_rng(0))
    check_jit(model, variables, *args, **kwargs)


def test_out_of_range_ids_under_jit_give_nan():
    """Under jit ids cannot be checked: an out-of-range id's embedding row is NaN, so the scores
    of that sequence within its length are NaN; the other sequences are untouched."""
    model, variables = parity.from_torch(reference_model())
    ids, lengths = tokens_and_lengths()
    bad = ids.copy()
    bad[1, 0] = VOCAB
    apply = jax.jit(model.apply)
    out, expected = np.asarray(apply(variables, bad, lengths)), np.asarray(apply(variables, ids, lengths))
    assert np.isnan(out[1, : lengths[1]]).all()
    np.testing.assert_allclose(np.delete(out, 1, axis=0), np.delete(expected, 1, axis=0), rtol=1e-13)


@pytest.mark.parametrize(
    "ids, lengths, error, match",
    [
        (np.zeros(TIME, int), None, ValueError, r"x must be token ids of shape \[batch, time\], got a 1-D array"),
        (np.zeros((BATCH, TIME, 1), int), None, ValueError, r"x must be token ids .* got a 3-D array"),
        (np.full((BATCH, TIME), VOCAB), None, ValueError, r"x must lie in \[0, vocab_size\) = \[0, 20\)"),
        (np.zeros((BATCH, TIME), np.float32), None, TypeError, "x must be an integer array of token ids"),
        (np.zeros((BATCH, TIME), int), np.array([0, 1, 2]), ValueError, "lengths must be at least 1"),
    ],
)
def test_bad_input(ids, lengths, error, match):
    model, variables = parity.from_torch(reference_model())
    with pytest.raises(error, match=match):
        model.apply(variables, ids, lengths)


def test_bad_config():
    with pytest.raises(ValueError, match="num_tags must be greater than zero, got 0"):
        flaxseq.GRUTagger(VOCAB, EMBED, HIDDEN, LAYERS, 0)
