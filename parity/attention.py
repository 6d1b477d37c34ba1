"""Conversion rules and report cases for `Attention`, `AttnDecoder` and `Seq2SeqAttention`.

The masked cases give one row a fully masked source (uniform attention, no NaN) and one row
no masking at all, so both edges of the mask are compared.
"""

import jax.numpy as jnp
import numpy as np

import flaxseq.attention as fx
import torch_ref.attention as tr
import torch_ref.seq2seq as tr_seq2seq
from parity.convert import copy_rule
from parity.seq2seq import (
    BATCH,
    BUILDERS,
    EMBED,
    HIDDEN,
    LAYERS,
    MASK_LABELS,
    MIXED_SCHEDULE,
    SIZES,
    SRC_LEN,
    TRG_LEN,
    VOCAB,
    Inputs,
    ModelCase,
    cast,
    source_lengths,
    tokens,
)


def _state(m):
    return jnp.zeros((m.num_layers, 1, m.hidden_size), m.param_dtype)


copy_rule(
    tr.Attention, fx.Attention, ("hidden_size",),
    lambda m: (jnp.zeros((1, m.hidden_size), m.param_dtype), jnp.zeros((1, 2, m.hidden_size), m.param_dtype)),
)
copy_rule(
    tr.AttnDecoder, fx.AttnDecoder, SIZES,
    lambda m: (
        jnp.zeros((1, 1), jnp.int32), _state(m), _state(m), jnp.zeros((1, 2, m.hidden_size), m.param_dtype)
    ),
)
copy_rule(
    tr.Seq2SeqAttention, fx.Seq2SeqAttention, ("encoder", "decoder"),
    lambda m: (jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32), 0.5, None, jnp.ones((1,), bool)),
)


def source_mask(rng, lengths=None) -> np.ndarray:
    """`[BATCH, SRC_LEN]` booleans: row 0 fully masked, row 1 all real, the rest random (or by `lengths`)."""
    if lengths is None:
        mask = rng.random((BATCH, SRC_LEN)) < 0.6
    else:
        mask = np.arange(SRC_LEN)[None, :] < lengths[:, None]
    mask[0], mask[1] = False, True
    return mask


def _attention(case, rng):
    dtype = np.dtype(case.dtype)
    hidden = rng.standard_normal((BATCH, HIDDEN)).astype(dtype)
    args = (hidden, rng.standard_normal((BATCH, SRC_LEN, HIDDEN)).astype(dtype))
    kwargs = {"mask": source_mask(rng)} if case.lengths else {}
    module = cast(tr.Attention(HIDDEN), case.dtype)
    return Inputs(module, args, kwargs, ("attention",), ("hidden", "encoder_outputs"))


def _attn_decoder(case, rng):
    dtype = np.dtype(case.dtype)
    state = [rng.standard_normal((LAYERS, BATCH, HIDDEN)).astype(dtype) for _ in range(2)]
    encoder_outputs = rng.standard_normal((BATCH, SRC_LEN, HIDDEN)).astype(dtype)
    kwargs = {"mask": source_mask(rng)} if case.lengths else {}
    module = cast(tr.AttnDecoder(VOCAB, EMBED, HIDDEN, LAYERS), case.dtype)
    return Inputs(
        module, (tokens(rng, BATCH, 1), *state, encoder_outputs), kwargs,
        ("prediction", "hidden", "cell", "attn_weights"), ("hidden", "cell", "encoder_outputs"),
    )


def _seq2seq_attention(case, rng):
    module = cast(
        tr.Seq2SeqAttention(
            tr_seq2seq.Encoder(VOCAB, EMBED, HIDDEN, LAYERS), tr.AttnDecoder(VOCAB, EMBED, HIDDEN, LAYERS)
        ),
        case.dtype,
    )
    kwargs = {"teacher_forcing": MIXED_SCHEDULE}
    if case.lengths:
        kwargs["src_lengths"] = source_lengths(rng)
        kwargs["src_mask"] = source_mask(rng, kwargs["src_lengths"])
    return Inputs(module, (tokens(rng, BATCH, SRC_LEN), tokens(rng, BATCH, TRG_LEN)), kwargs, ("outputs",), ())


BUILDERS.update(Attention=_attention, AttnDecoder=_attn_decoder, Seq2SeqAttention=_seq2seq_attention)
MASK_LABELS.update(Attention="mask", AttnDecoder="mask", Seq2SeqAttention="src_lengths src_mask")


def attention_cases() -> list[ModelCase]:
    """The report's cases for the attention models, float64 then float32."""
    return [
        ModelCase(model, dtype, lengths)
        for dtype in ("float64", "float32")
        for model, lengths in (
            ("Attention", True), ("AttnDecoder", True), ("Seq2SeqAttention", False), ("Seq2SeqAttention", True)
        )
    ]
