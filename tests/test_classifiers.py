"""The classifiers against the PyTorch references: parity (with and without lengths), conversion,
initialisation, dropout, padding, jit and bad input."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from model_checks import check_init_like_torch, check_jit, check_report, check_round_trips

import flaxseq
import parity
import torch_ref
from parity.classifiers import ClassifierCase, model_cases, random_lengths, random_tokens

TOKEN_MODELS = ("LSTMClassifier", "TextClassifier")
VOCAB, EMBED, HIDDEN, LAYERS, CLASSES, BATCH, TIME = 20, 6, 5, 2, 4, 3, 6


def tokens_and_lengths(seed=0):
    rng = np.random.default_rng(seed)
    lengths = random_lengths(rng, BATCH, TIME)
    return random_tokens(rng, VOCAB, lengths, TIME), lengths


def reference_model(name, dtype=torch.float64, **kwargs):
    """A seeded PyTorch model of the test sizes."""
    torch.manual_seed(0)
    sizes = (VOCAB, EMBED) if name in TOKEN_MODELS else (EMBED,)
    return getattr(torch_ref, name)(*sizes, HIDDEN, LAYERS, CLASSES, **kwargs).to(dtype)


@functools.cache
def converted(name, **kwargs):
    """The flaxseq twin of `reference_model(name, **kwargs)` (float64), its variables, and its
    `apply` under `jax.jit` (eager calls would compile every scan anew)."""
    model, variables = parity.from_torch(reference_model(name, **kwargs))
    return model, variables, jax.jit(model.apply, static_argnames="deterministic")


@pytest.mark.parametrize("case", model_cases(), ids=lambda c: f"{c.label()} {c.dtype}")
def test_parity(case):
    check_report(case, input_names=() if case.model in TOKEN_MODELS else ("x",))


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_lengths_change_the_result_only_where_there_is_padding(name):
    _, variables, apply = converted(name)
    ids, lengths = tokens_and_lengths()
    padded = apply(variables, ids)
    packed = apply(variables, ids, lengths)
    full = lengths == TIME
    assert np.all(np.abs(padded[~full] - packed[~full]) > 1e-6)
    np.testing.assert_allclose(packed[full], padded[full], rtol=1e-14)
    np.testing.assert_allclose(apply(variables, ids, np.full(BATCH, TIME)), padded, rtol=1e-14)
    # with lengths, the tokens past each length do not matter
    other = np.where(np.arange(TIME)[None, :] < lengths[:, None], ids, (ids + 7) % VOCAB)
    np.testing.assert_array_equal(apply(variables, other, lengths), packed)


def test_packed_lstm_ignores_padding():
    """PackedLSTM's head sees the state after each sequence's last valid step: the values past
    each length do not matter, and a full-length sequence gives the state after all steps."""
    _, variables, apply = converted("PackedLSTM")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, TIME, EMBED))
    lengths = np.array([2, TIME, 4])
    other = np.where(np.arange(TIME)[None, :, None] < lengths[:, None, None], x, rng.standard_normal(x.shape))
    out = np.asarray(apply(variables, x, lengths))
    np.testing.assert_array_equal(apply(variables, other, lengths), out)
    whole = np.asarray(apply(variables, other, np.full(BATCH, TIME)))
    assert not np.allclose(whole[[0, 2]], out[[0, 2]])
    np.testing.assert_array_equal(whole[1], out[1])


@pytest.mark.parametrize("name", ["LSTMClassifier", "TextClassifier", "BiLSTM", "PackedLSTM"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trips(name, dtype):
    config = dict(dropout=0.25) if name in TOKEN_MODELS else {}
    reference = reference_model(name, getattr(torch, dtype), **config)
    sizes = (VOCAB, EMBED) if name in TOKEN_MODELS else (EMBED,)
    model = getattr(flaxseq, name)(*sizes, HIDDEN, LAYERS, CLASSES, **config, param_dtype=jnp.dtype(dtype))
    check_round_trips(reference, model)


@pytest.mark.parametrize("name", ["LSTMClassifier", "TextClassifier", "BiLSTM", "PackedLSTM"])
def test_init_like_torch(name):
    # sizes large enough for statistics; equal sizes let the models share eager compilations
    sizes = (100, 30) if name in TOKEN_MODELS else (30,)
    torch.manual_seed(0)
    reference = getattr(torch_ref, name)(*sizes, 30, 2, 30)
    model = getattr(flaxseq, name)(*sizes, 30, 2, 30)
    example = parity.convert.find_rule(model).example_args(model)
    variables = model.init(jax.random.key(0), *example)
    check_init_like_torch(reference, model, variables)
    if name == "TextClassifier":  # the padding row starts at zero in both
        np.testing.assert_array_equal(variables["params"]["embedding"]["embedding"][0], 0)
        assert not reference.embedding.weight[0].any()


def test_padding_idx_row_gets_no_gradient():
    """TextClassifier's padding row (zero after init: `test_init_like_torch`) has zero gradient
    in both frameworks, and the other rows' gradients agree."""
    reference = reference_model("TextClassifier")
    _, variables, apply = converted("TextClassifier")
    ids, lengths = tokens_and_lengths()
    assert (ids == 0).any()
    weights = np.random.default_rng(1).standard_normal((BATCH, CLASSES))
    grads = jax.jit(jax.grad(lambda p: jnp.sum(weights * apply({"params": p}, ids, lengths))))(variables["params"])
    flax_grad = np.asarray(grads["embedding"]["embedding"])
    reference.eval()
    (torch.from_numpy(weights) * reference(torch.from_numpy(ids), lengths)).sum().backward()
    torch_grad = reference.embedding.weight.grad.numpy()
    np.testing.assert_array_equal(flax_grad[0], 0)
    np.testing.assert_array_equal(torch_grad[0], 0)
    assert np.abs(flax_grad[1:]).max() > 0
    np.testing.assert_allclose(flax_grad, torch_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_dropout(name):
    """Active dropout depends on the key and repeats for the same key; deterministic=True gives
    the model without dropout."""
    ids, _ = tokens_and_lengths()
    model, variables, apply = converted(name, dropout=0.5)

    def train(seed):
        return apply(variables, ids, deterministic=False, rngs={"dropout": jax.random.key(seed)})

    assert not np.allclose(train(0), train(1))
    np.testing.assert_array_equal(train(0), train(0))
    without = jax.jit(model.clone(dropout=0.0).apply)(variables, ids)
    np.testing.assert_array_equal(apply(variables, ids, deterministic=True), without)


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_dropout_on_embeddings(name):
    """The LSTM receives the embeddings with dropout: each entry zero or scaled by 1 / (1 - p)."""
    ids, _ = tokens_and_lengths()
    model, variables, _ = converted(name, dropout=0.5)
    seen = []

    def record_lstm_input(next_fun, args, kwargs, context):
        if isinstance(context.module, flaxseq.LSTM) and context.method_name == "__call__":
            seen.append(args[0])
        return next_fun(*args, **kwargs)

    def lstm_input(variables, ids, key):
        with nn.intercept_methods(record_lstm_input):
            model.apply(variables, ids, deterministic=False, rngs={"dropout": key})
        return seen[0]

    embedded = np.asarray(jax.jit(lstm_input)(variables, ids, jax.random.key(0)))
    table = np.asarray(variables["params"]["embedding"]["embedding"])[ids]
    kept = (embedded != 0) & (table != 0)
    dropped = (embedded == 0) & (table != 0)
    assert kept.mean() > 0.2 and dropped.mean() > 0.2
    np.testing.assert_allclose(embedded[kept], table[kept] * 2, rtol=1e-15)


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_training_mode_with_dropout_one_gives_the_bias(name):
    """With p = 1 the head sees zeros in both frameworks' training mode: the output is fc.bias."""
    ids, lengths = tokens_and_lengths()
    reference = reference_model(name, dropout=1.0)
    _, variables, apply = converted(name, dropout=1.0)
    out = apply(variables, ids, lengths, deterministic=False, rngs={"dropout": jax.random.key(0)})
    reference.train()
    torch_out = reference(torch.from_numpy(ids), lengths).detach().numpy()
    bias = np.broadcast_to(reference.fc.bias.detach().numpy(), (BATCH, CLASSES))
    np.testing.assert_array_equal(out, bias)
    np.testing.assert_array_equal(torch_out, bias)


JIT_CASES = [ClassifierCase(m, lengths=m != "BiLSTM") for m in (*TOKEN_MODELS, "BiLSTM", "PackedLSTM")]


@pytest.mark.parametrize("case", JIT_CASES, ids=lambda c: c.label())
def test_jit(case):
    torch.manual_seed(0)
    model, variables = parity.from_torch(case.torch_module().double())
    args, kwargs, _ = case.inputs(np.random.default_rng(0))
    check_jit(model, variables, *args, **kwargs)


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_out_of_range_ids_under_jit_give_nan(name):
    """Under jit ids cannot be checked: an out-of-range id's embedding row is NaN, so that
    sequence's logits are NaN; the other sequences are untouched."""
    _, variables, apply = converted(name)
    ids, lengths = tokens_and_lengths()
    bad = ids.copy()
    bad[1, 0] = VOCAB
    out, expected = apply(variables, bad, lengths), apply(variables, ids, lengths)
    assert np.isnan(out[1]).all()
    np.testing.assert_allclose(np.delete(out, 1, axis=0), np.delete(expected, 1, axis=0), rtol=1e-13)


@pytest.mark.parametrize("name", TOKEN_MODELS)
@pytest.mark.parametrize(
    "ids, lengths, error, match",
    [
        (np.zeros(TIME, int), None, ValueError, r"x must be token ids of shape \[batch, time\], got a 1-D array"),
        (np.zeros((BATCH, TIME, 1), int), None, ValueError, r"x must be token ids .* got a 3-D array"),
        (np.zeros((BATCH, 0), int), None, ValueError, "x must have at least one time step"),
        (np.full((BATCH, TIME), VOCAB), None, ValueError, r"x must lie in \[0, vocab_size\) = \[0, 20\)"),
        (np.full((BATCH, TIME), -1), None, ValueError, r"x must lie in .* got values in \[-1, -1\]"),
        (np.zeros((BATCH, TIME)), None, TypeError, "x must be an integer array of token ids, got dtype float64"),
        (np.zeros((BATCH, TIME), int), np.array([1, 0, 2]), ValueError, "lengths must be at least 1"),
        (np.zeros((BATCH, TIME), int), np.array([1, 7, 2]), ValueError, "lengths must be at most .* 6"),
        (np.zeros((BATCH, TIME), int), np.array([1, 2]), ValueError, r"lengths must have shape \[batch\]"),
        (np.zeros((BATCH, TIME), int), np.array([1.0, 2, 3]), TypeError, "lengths must be an integer array"),
    ],
)
def test_bad_token_input(name, ids, lengths, error, match):
    model, variables, _ = converted(name)
    with pytest.raises(error, match=match):
        model.apply(variables, ids, lengths)


@pytest.mark.parametrize("name", ["BiLSTM", "PackedLSTM"])
@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.zeros((TIME, EMBED)), ValueError, r"x must have shape \[batch, time, input_size\], got a 2-D array"),
        (np.zeros((BATCH, TIME, EMBED + 1)), ValueError, "Expected 6, got 7"),
        (np.zeros((BATCH, TIME, EMBED), int), TypeError, "x must be a floating-point array"),
    ],
)
def test_bad_feature_input(name, x, error, match):
    model, variables, _ = converted(name)
    lengths = (np.full(BATCH, TIME),) if name == "PackedLSTM" else ()
    with pytest.raises(error, match=match):
        model.apply(variables, x, *lengths)


def test_packed_lstm_needs_lengths():
    model, variables, _ = converted("PackedLSTM")
    with pytest.raises(TypeError, match="lengths must be an integer array of shape \\[batch\\], got None"):
        model.apply(variables, np.zeros((BATCH, TIME, EMBED)), None)


def test_bad_config():
    with pytest.raises(ValueError, match="vocab_size must be greater than zero, got 0"):
        flaxseq.LSTMClassifier(0, EMBED, HIDDEN, LAYERS, CLASSES)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        flaxseq.TextClassifier(VOCAB, EMBED, HIDDEN, LAYERS, CLASSES, dropout=1.5)
    with pytest.raises(TypeError, match="num_classes should be of type int, got: str"):
        flaxseq.BiLSTM(EMBED, HIDDEN, LAYERS, "4")
