"""Encoder, Decoder and Seq2Seq against the tutorial's PyTorch code: outputs, gradients,
conversion both ways, teacher forcing, greedy generation and argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import flaxseq
import parity
import torch_ref
from parity.seq2seq import BATCH, EMBED, HIDDEN, LAYERS, SRC_LEN, TRG_LEN, VOCAB, seq2seq_cases

SIZES = (VOCAB, EMBED, HIDDEN, LAYERS)
MODELS = {
    "Seq2Seq": (torch_ref.Seq2Seq, torch_ref.Decoder),
    "Seq2SeqAttention": (torch_ref.Seq2SeqAttention, torch_ref.AttnDecoder),
}


@pytest.mark.parametrize("case", seq2seq_cases(), ids=lambda c: f"{c.label()} {c.dtype}")
def test_parity(case):
    report = case.run(seed=1)
    assert report.passed, f"{case.label()} {case.dtype}:\n" + "\n".join(report.failures())
    # float64 runs really are float64, float32 ones float32
    assert report.output_dtypes and all(dt == np.dtype(case.dtype) for dt in report.output_dtypes)
    # every parameter's gradient is compared
    torch.manual_seed(1)
    expected = {f"d{name}" for name, _ in torch_model(case.model).named_parameters()}
    assert expected <= {d.name for d in report.gradients}


def torch_model(name: str, dtype=torch.float64, seed: int = 0) -> torch.nn.Module:
    """One of the tutorial's models at the test sizes, with seeded PyTorch initialisation."""
    torch.manual_seed(seed)
    if name in MODELS:
        model_type, decoder_type = MODELS[name]
        model = model_type(torch_ref.Encoder(*SIZES), decoder_type(*SIZES))
    elif name == "Attention":
        model = torch_ref.Attention(HIDDEN)
    else:
        model = getattr(torch_ref, name)(*SIZES)
    return model.to(dtype)


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def check_round_trips(name: str, dtype):
    """torch -> flax -> torch and flax -> torch -> flax reproduce every tensor and the configuration."""
    model = torch_model(name, dtype)
    flax_module, variables = parity.from_torch(model)
    back = parity.to_torch(flax_module, variables)
    assert type(back) is type(model)
    assert_same_state(model, back)
    for a, b in zip(model.modules(), back.modules(), strict=True):
        assert type(a) is type(b)
        for field in ("vocab_size", "embed_dim", "hidden_size", "num_layers", "input_size"):
            assert getattr(a, field, None) == getattr(b, field, None)

    again, variables_again = parity.from_torch(back)
    assert again == flax_module
    flat, flat_again = jax.tree.leaves_with_path(variables), jax.tree.leaves_with_path(variables_again)
    assert [p for p, _ in flat] == [p for p, _ in flat_again]
    for (path, x), (_, y) in zip(flat, flat_again, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y), path

    # a freshly initialised flax model survives the trip through PyTorch
    args = parity.convert.find_rule(flax_module).example_args(flax_module)
    fresh = flax_module.init(jax.random.key(3), *args)
    fresh_back = parity.from_torch(parity.to_torch(flax_module, fresh))[1]
    for (path, x), (_, y) in zip(jax.tree.leaves_with_path(fresh), jax.tree.leaves_with_path(fresh_back), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y), path


# float32 round trips of the parts; the whole model's in float64
ROUND_TRIPS = [
    (name, dtype)
    for name in ("Encoder", "Decoder", "Seq2Seq")
    for dtype in (torch.float64, torch.float32)
]


@pytest.mark.parametrize("name, dtype", [c for c in ROUND_TRIPS if c != ("Seq2Seq", torch.float32)])
def test_round_trips(name, dtype):
    check_round_trips(name, dtype)


def test_flax_initialisation_matches_pytorch_distributions():
    """Every parameter starts in PyTorch's range: U(+-1/sqrt(fan_in)) for linear and LSTM, N(0, 1) embeddings."""
    ids, state = jnp.zeros((2, 1), jnp.int32), jnp.zeros((2, 2, 30))
    params = {
        "encoder": flaxseq.Encoder(50, 40, 30, 2).init(jax.random.key(0), ids)["params"],
        "decoder": flaxseq.Decoder(50, 40, 30, 2).init(jax.random.key(1), ids, state, state)["params"],
    }
    bound = 1 / np.sqrt(30)
    for part in ("encoder", "decoder"):
        table = np.asarray(params[part]["embedding"]["embedding"])
        assert abs(table.std() - 1) < 0.1 and abs(table.mean()) < 0.1
        for weight in params[part]["lstm"].values():
            assert bound >= np.abs(weight).max() > 0.9 * bound
    for weight in params["decoder"]["fc"].values():
        assert bound >= np.abs(weight).max() > 0.9 * bound


# ---- teacher forcing ----


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, (BATCH, SRC_LEN)), rng.integers(0, VOCAB, (BATCH, TRG_LEN))


def check_teacher_forcing(name: str, extra=None):
    """Ratio 1 is the all-True schedule, ratio 0 the all-False one, in both frameworks; the
    flaxseq draw repeats for the same 'teacher' key, under jit and outside it."""
    extra = extra or {}
    model = torch_model(name)
    flax_module, variables = parity.from_torch(model)
    src, trg = inputs()
    steps = TRG_LEN - 1
    forced, greedy = np.ones(steps, bool), np.zeros(steps, bool)

    scheduled = jax.jit(lambda schedule: flax_module.apply(variables, src, trg, teacher_forcing=schedule, **extra))
    drawn = jax.jit(lambda ratio, key: flax_module.apply(
        variables, src, trg, ratio, rngs={"teacher": jax.random.key(key)}, **extra))

    def torch_run(ratio, schedule=None):
        torch_extra = {k: torch.from_numpy(np.asarray(v)) for k, v in extra.items()}
        schedule = None if schedule is None else torch.from_numpy(schedule)
        with torch.no_grad():
            return model(torch.from_numpy(src), torch.from_numpy(trg), ratio, teacher_forcing=schedule, **torch_extra)

    all_forced, all_greedy = np.asarray(scheduled(forced)), np.asarray(scheduled(greedy))
    assert not np.allclose(all_forced, all_greedy)  # the schedule matters
    assert not all_forced[:, 0].any()  # position 0 stays zero
    eager_forced = flax_module.apply(variables, src, trg, teacher_forcing=forced, **extra)
    eager_greedy = flax_module.apply(variables, src, trg, teacher_forcing=greedy, **extra)
    cases = ((1.0, forced, all_forced, eager_forced), (0.0, greedy, all_greedy, eager_greedy))
    for ratio, schedule, expected, eager in cases:
        # a Python number needs no draw; an array is drawn from 'teacher' (here under jit)
        np.testing.assert_array_equal(flax_module.apply(variables, src, trg, ratio, **extra), eager)
        np.testing.assert_array_equal(drawn(jnp.asarray(ratio), 3), expected)
        np.testing.assert_allclose(eager, expected, rtol=1e-12, atol=1e-13)  # XLA may fuse differently under jit
        np.testing.assert_allclose(torch_run(ratio).numpy(), expected, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(torch_run(0.5, schedule).numpy(), expected, rtol=1e-12, atol=1e-13)
    # the draw repeats for the same key, changes with the key, and is the same outside jit
    np.testing.assert_array_equal(drawn(0.5, 7), drawn(0.5, 7))
    assert len({np.asarray(drawn(0.5, key)).tobytes() for key in range(4)}) > 1
    eager = flax_module.apply(variables, src, trg, 0.5, rngs={"teacher": jax.random.key(7)}, **extra)
    np.testing.assert_allclose(eager, drawn(0.5, 7), rtol=1e-12, atol=1e-13)


def test_teacher_forcing():
    check_teacher_forcing("Seq2Seq")


def test_teacher_schedule_needs_rng_only_when_drawn():
    flax_module, variables = parity.from_torch(torch_model("Seq2Seq"))
    src, trg = inputs()
    with pytest.raises(Exception, match="teacher"):
        flax_module.apply(variables, src, trg, 0.5)
    flax_module.apply(variables, src, trg, 1.0)  # no draw, no rng needed


# ---- generation ----


def first_eos_lengths(tokens: np.ndarray, eos: int) -> np.ndarray:
    """Per row: the number of tokens up to and including the first `eos`, or the row's length."""
    ends = tokens == eos
    return np.where(ends.any(axis=1), ends.argmax(axis=1) + 1, tokens.shape[1])


def check_generate(name: str, dtype, seed: int, extra=None, max_len=8):
    """Same tokens and lengths as PyTorch: everywhere in float64; in float32 at every step
    whose top two PyTorch logits are more than 1e-4 apart (up to the first step that is not).

    `seed` picks weights whose greedy output is not one token repeated (common at PyTorch's
    initialisation); `eos_id` is then the token that makes rows end at different steps.
    """
    extra = extra or {}
    model = torch_model(name, dtype, seed=seed)
    flax_module, variables = parity.from_torch(model)
    src, _ = inputs(seed=seed)
    torch_extra = {k: torch.from_numpy(np.asarray(v)) for k, v in extra.items()}
    sos = 1
    free = model.generate(torch.from_numpy(src), max_len, sos, None, **torch_extra)[0].numpy()
    eos = int(max(np.unique(free), key=lambda e: len(set(first_eos_lengths(free, e)))))
    torch_tokens, torch_lengths = (
        t.numpy() for t in model.generate(torch.from_numpy(src), max_len, sos, eos, **torch_extra)
    )
    generate = jax.jit(lambda v, s, **kw: flax_module.apply(v, s, max_len, sos, eos, method="generate", **kw))
    flax_tokens, flax_lengths = (np.asarray(t) for t in generate(variables, src, **extra))
    assert len(set(torch_lengths)) > 1  # rows end at different steps

    # the contract, on PyTorch's and flaxseq's results alike
    for tokens, lengths in ((torch_tokens, torch_lengths), (flax_tokens, flax_lengths)):
        assert tokens.shape == (BATCH, max_len) and lengths.shape == (BATCH,)
        for row, length in zip(tokens, lengths, strict=True):
            assert (row[length:] == eos).all()
        np.testing.assert_array_equal(lengths, first_eos_lengths(tokens, eos))

    if dtype == torch.float64:
        np.testing.assert_array_equal(flax_tokens, torch_tokens)
        np.testing.assert_array_equal(flax_lengths, torch_lengths)
        return
    # PyTorch's logits along its own path: teacher-force [sos, tokens]
    trg = torch.from_numpy(np.concatenate([np.full((BATCH, 1), sos), torch_tokens], axis=1))
    with torch.no_grad():
        logits = model(torch.from_numpy(src), trg, 1.0, **torch_extra)[:, 1:]
    top2 = logits.topk(2, dim=-1).values
    margins = (top2[..., 0] - top2[..., 1]).numpy()
    compared = 0
    for b in range(BATCH):
        for t in range(max_len):
            if margins[b, t] <= 1e-4:
                break
            assert flax_tokens[b, t] == torch_tokens[b, t], (b, t)
            compared += 1
            if torch_tokens[b, t] == eos:
                assert flax_lengths[b] == torch_lengths[b]
                break
    assert compared >= BATCH


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_generate(dtype):
    check_generate("Seq2Seq", dtype, seed=0, extra={"src_lengths": np.array([SRC_LEN, 2, 4])})


def test_generate_without_eos_runs_to_max_len():
    model = torch_model("Seq2Seq")
    flax_module, variables = parity.from_torch(model)
    src, _ = inputs()
    tokens, lengths = flax_module.apply(variables, src, 6, 0, method="generate")
    torch_tokens, torch_lengths = model.generate(torch.from_numpy(src), 6, 0)
    np.testing.assert_array_equal(tokens, torch_tokens.numpy())
    assert (np.asarray(lengths) == 6).all() and (torch_lengths.numpy() == 6).all()


# ---- bad input ----


def flax_model():
    return parity.from_torch(torch_model("Seq2Seq"))


@pytest.mark.parametrize(
    "src_shape, trg_shape, match",
    [
        ((BATCH,), (BATCH, TRG_LEN), r"src must be a 2-D array of token ids \[batch, time\], got shape \(3,\)"),
        ((BATCH, SRC_LEN, 1), (BATCH, TRG_LEN), r"src must be a 2-D .* got shape \(3, 7, 1\)"),
        ((BATCH, SRC_LEN), (TRG_LEN,), r"trg must be a 2-D .* got shape \(5,\)"),
        ((BATCH, SRC_LEN), (BATCH + 1, TRG_LEN), r"src and trg must have the same batch size, got src.shape\[0\]=3 "
         r"and trg.shape\[0\]=4"),
        ((BATCH, SRC_LEN), (BATCH, 0), r"trg must hold at least the start token"),
    ],
)
def test_bad_shapes(src_shape, trg_shape, match):
    module, variables = flax_model()
    with pytest.raises(ValueError, match=match):
        module.apply(variables, np.zeros(src_shape, int), np.zeros(trg_shape, int), 1.0)


def test_bad_tokens():
    module, variables = flax_model()
    src, trg = inputs()
    with pytest.raises(ValueError, match=r"src must lie in \[0, vocab_size\) = \[0, 12\), got values in \[0, 12\]"):
        module.apply(variables, np.where(src == src.max(), VOCAB, src), trg, 1.0)
    with pytest.raises(ValueError, match=r"trg must lie in \[0, vocab_size\) = \[0, 12\), got values in \[-1, "):
        module.apply(variables, src, np.where(trg == trg.max(), -1, trg), 1.0)
    with pytest.raises(TypeError, match="trg must be an integer array of token ids, got dtype float"):
        module.apply(variables, src, trg.astype(float), 1.0)


def test_bad_schedule():
    module, variables = flax_model()
    src, trg = inputs()
    with pytest.raises(ValueError, match=r"teacher_forcing must have shape \[trg_len - 1\] = \(4,\), got shape \(5,\)"):
        module.apply(variables, src, trg, teacher_forcing=np.ones(TRG_LEN, bool))
    with pytest.raises(TypeError, match="teacher_forcing must be a boolean array .* got dtype int"):
        module.apply(variables, src, trg, teacher_forcing=np.ones(TRG_LEN - 1, int))
    with pytest.raises(TypeError, match="teacher_forcing_ratio must be a number in"):
        module.apply(variables, src, trg, "half")
    model = torch_model("Seq2Seq")
    with pytest.raises(ValueError, match=r"teacher_forcing must have shape \[trg_len - 1\] = \(4,\), got shape \(3,\)"):
        model(torch.from_numpy(src), torch.from_numpy(trg), teacher_forcing=torch.ones(TRG_LEN - 2, dtype=torch.bool))


def test_bad_lengths_and_generate_args():
    module, variables = flax_model()
    src, trg = inputs()
    with pytest.raises(ValueError, match=r"src_lengths must have shape \[batch\] = \(3,\), got shape \(2,\)"):
        module.apply(variables, src, trg, 1.0, src_lengths=np.array([1, 2]))
    with pytest.raises(ValueError, match=r"src_lengths must be at most the input's time length 7"):
        module.apply(variables, src, trg, 1.0, src_lengths=np.array([1, 2, 8]))
    with pytest.raises(ValueError, match="max_len must be greater than zero, got 0"):
        module.apply(variables, src, 0, 1, method="generate")
    with pytest.raises(ValueError, match=r"eos_id must lie in \[0, vocab_size\) = \[0, 12\), got 12"):
        module.apply(variables, src, 4, 1, VOCAB, method="generate")
    with pytest.raises(ValueError, match="encoder and decoder must have the same hidden_size, got 5 and 4"):
        flaxseq.Seq2Seq(flaxseq.Encoder(VOCAB, EMBED, HIDDEN, LAYERS), flaxseq.Decoder(VOCAB, EMBED, 4, LAYERS))
