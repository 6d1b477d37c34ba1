"""Additive attention, the attention decoder, and the encoder-decoder model built on them.

`Attention` scores every source position against the decoder's top hidden state,
`score_s = v · tanh(attn([h; enc_s]))`, and normalises the scores with a softmax over the
source. `AttnDecoder` feeds the attention-weighted source (the context) into its LSTM beside
the embedded token, and into its output layer beside the LSTM's output. `Seq2SeqAttention`
joins an `Encoder` to an `AttnDecoder` with the teacher-forcing loop of `flaxseq.seq2seq`.

`attn` is one `Linear` over `[h; enc_s]` (PyTorch's parameters), applied in two parts,
`h @ W_h + (enc_s @ W_enc + b)`: the source part (the keys) depends on the source only, so the
decoding loops compute it once per sequence instead of once per step, which removes most of
the decoder's work (at source length 24 and hidden 192, 8 of its 9 matrix products).

Masked source positions (`mask` False) get the dtype's most negative finite score, so their
weight is exactly zero and a fully masked row gives uniform weights rather than NaN.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxseq import checks
from flaxseq.basic import Embedding, Linear
from flaxseq.init import linear_uniform
from flaxseq.layers import LSTM
from flaxseq.seq2seq import (
    Encoder,
    check_encoder_decoder,
    check_generate_args,
    check_src_lengths,
    check_src_trg,
    check_tokens,
    greedy_decode,
    teacher_forced_decode,
    teacher_schedule,
)


class ConcatLinear(nn.Module):
    """`Linear(hidden_size)` over `[query; key]` (`2 * hidden_size` features), in two parts.

    `kernel: [2 * hidden_size, hidden_size]` and `bias: [hidden_size]`, named and initialised
    as `Linear`'s, so the conversion to PyTorch's `attn` is the same. `keys(key)` gives
    `key @ kernel[hidden_size:] + bias` and `query(query)` gives `query @ kernel[:hidden_size]`;
    their sum is the `Linear` of the concatenation.
    """

    hidden_size: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def setup(self):
        checks.check_x64(self.param_dtype)
        init = linear_uniform(2 * self.hidden_size)
        self.kernel = self.param("kernel", init, (2 * self.hidden_size, self.hidden_size), self.param_dtype)
        self.bias = self.param("bias", init, (self.hidden_size,), self.param_dtype)

    def keys(self, key: jax.Array) -> jax.Array:
        """`[..., hidden_size] -> [..., hidden_size]`: the key's part, with the bias."""
        dtype = self.dtype or jnp.result_type(key, self.kernel)
        kernel = jnp.asarray(self.kernel[self.hidden_size:], dtype)
        return jnp.asarray(key, dtype) @ kernel + jnp.asarray(self.bias, dtype)

    def query(self, query: jax.Array) -> jax.Array:
        """`[..., hidden_size] -> [..., hidden_size]`: the query's part."""
        dtype = self.dtype or jnp.result_type(query, self.kernel)
        return jnp.asarray(query, dtype) @ jnp.asarray(self.kernel[: self.hidden_size], dtype)


class Attention(nn.Module):
    """Additive (Bahdanau) attention weights over the source positions.

    Args:
      hidden_size: size of the decoder state and of each encoder output; `attn` maps
        `2 * hidden_size` to `hidden_size` (a `ConcatLinear`), `v` maps `hidden_size` to one
        score (no bias).

    Call `(hidden, encoder_outputs, mask=None, keys=None)`:
      hidden: `[batch, hidden_size]`, the decoder's top-layer state.
      encoder_outputs: `[batch, src_len, hidden_size]`.
      mask: optional boolean `[batch, src_len]`, True where a source position is real.
      keys: optional `source_keys(encoder_outputs)`, computed once before a decoding loop.

    Returns the weights `[batch, src_len]` (each row sums to one).

    >>> attention = Attention(hidden_size=5)
    >>> hidden, encoder_outputs = jnp.zeros((3, 5)), jnp.zeros((3, 7, 5))
    >>> variables = attention.init(jax.random.key(0), hidden, encoder_outputs)
    >>> weights = attention.apply(variables, hidden, encoder_outputs)  # [3, 7]
    """

    hidden_size: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def setup(self):
        self.attn = ConcatLinear(self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)
        self.v = Linear(1, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)

    def source_keys(self, encoder_outputs) -> jax.Array:
        """`[batch, src_len, hidden_size]`: the source's part of `attn`, the same at every step."""
        return self.attn.keys(encoder_outputs)

    def __call__(self, hidden, encoder_outputs, mask=None, keys=None):
        hidden, encoder_outputs = check_attention_inputs(hidden, encoder_outputs, self.hidden_size)
        mask = check_mask("mask", mask, encoder_outputs.shape[:2])
        if keys is None:
            keys = self.source_keys(encoder_outputs)
        elif keys.shape != encoder_outputs.shape:
            raise ValueError(f"keys must have the shape of encoder_outputs {tuple(encoder_outputs.shape)}, "
                             f"got shape {tuple(keys.shape)}")

        energy = jnp.tanh(keys + self.attn.query(hidden)[:, None])  # [batch, src_len, hidden]
        attention = self.v(energy)[:, :, 0]  # [batch, src_len]
        if mask is not None:
            attention = jnp.where(mask, attention, jnp.finfo(attention.dtype).min)
        return jax.nn.softmax(attention, axis=1)


class AttnDecoder(nn.Module):
    """One decoder step with attention over the encoder's outputs.

    Args:
      vocab_size, embed_dim, hidden_size, num_layers: the sizes; the LSTM reads
      `embed_dim + hidden_size` features (token and context), `fc` maps `2 * hidden_size`
      (LSTM output and context) to `vocab_size` logits.

    Call `(x, hidden, cell, encoder_outputs, mask=None, *, deterministic=True, keys=None)`:
      x: `[batch, 1]` token ids; hidden, cell: `[num_layers, batch, hidden_size]`;
      encoder_outputs: `[batch, src_len, hidden_size]`; mask: optional boolean `[batch, src_len]`;
      keys: optional `source_keys(encoder_outputs)`, computed once before a decoding loop.

    Returns `(prediction [batch, vocab_size], hidden, cell, attn_weights [batch, 1, src_len])`;
    the attention reads the top layer of the incoming `hidden`.

    >>> decoder = AttnDecoder(vocab_size=12, embed_dim=6, hidden_size=5, num_layers=2)
    >>> x, state, enc = jnp.zeros((3, 1), jnp.int32), jnp.zeros((2, 3, 5)), jnp.zeros((3, 7, 5))
    >>> variables = decoder.init(jax.random.key(0), x, state, state, enc)
    >>> prediction, hidden, cell, attn_weights = decoder.apply(variables, x, state, state, enc)
    """

    vocab_size: int
    embed_dim: int
    hidden_size: int
    num_layers: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def setup(self):
        self.embedding = Embedding(self.vocab_size, self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype)
        self.lstm = LSTM(
            self.embed_dim + self.hidden_size, self.hidden_size, self.num_layers, batch_first=True,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )
        self.attention = Attention(self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)
        self.fc = Linear(self.vocab_size, dtype=self.dtype, param_dtype=self.param_dtype)

    def source_keys(self, encoder_outputs) -> jax.Array:
        """The attention's keys `[batch, src_len, hidden_size]`, for every step of one source."""
        return self.attention.source_keys(encoder_outputs)

    def __call__(self, x, hidden, cell, encoder_outputs, mask=None, *, deterministic: bool = True, keys=None):
        x = check_tokens("x", x, self.vocab_size)
        if x.shape[1] != 1:
            raise ValueError(f"x must hold one step of token ids [batch, 1], got shape {tuple(x.shape)}")
        hidden = checks.as_float_array("hidden", hidden)
        if hidden.ndim != 3:
            raise ValueError(f"hidden must be [num_layers, batch, hidden_size], got shape {tuple(hidden.shape)}")
        embedded = self.embedding(x)  # [batch, 1, embed_dim]

        attn_weights = self.attention(hidden[-1], encoder_outputs, mask, keys)[:, None]  # [batch, 1, src_len]
        context = attn_weights @ encoder_outputs  # [batch, 1, hidden]

        lstm_input = jnp.concatenate([embedded, context], axis=2)  # [batch, 1, embed_dim + hidden]
        output, (hidden, cell) = self.lstm(lstm_input, (hidden, cell), deterministic=deterministic)

        output = jnp.concatenate([output[:, 0], context[:, 0]], axis=1)  # [batch, 2 * hidden]
        prediction = self.fc(output)  # [batch, vocab_size]
        return prediction, hidden, cell, attn_weights


class Seq2SeqAttention(nn.Module):
    """Encoder-decoder with attention and teacher forcing (rules as `flaxseq.seq2seq.Seq2Seq`).

    Args:
      encoder: an `Encoder`; decoder: an `AttnDecoder` with the same `hidden_size` and `num_layers`.

    Call `(src, trg, teacher_forcing_ratio=0.5, src_mask=None, teacher_forcing=None,
    src_lengths=None, *, deterministic=True)`, rngs `'teacher'` (when the schedule is drawn):
      src: `[batch, src_len]`, trg: `[batch, trg_len]` token ids; `trg[:, 0]` starts the decoder.
      teacher_forcing_ratio, teacher_forcing: as in `Seq2Seq` (a draw per step, or a boolean
        `[trg_len - 1]` schedule).
      src_mask: optional boolean `[batch, src_len]`, True where a source position is real;
        defaults to the positions before `src_lengths` when only those are given.
      src_lengths: optional `[batch]` source lengths for the encoder.

    Returns `outputs: [batch, trg_len, vocab_size]` logits; `outputs[:, 0]` stays zero.

    >>> model = Seq2SeqAttention(Encoder(12, 6, 5, 2), AttnDecoder(12, 6, 5, 2))
    >>> src, trg = jnp.ones((3, 7), jnp.int32), jnp.ones((3, 5), jnp.int32)
    >>> variables = model.init(jax.random.key(0), src, trg)
    >>> outputs = model.apply(variables, src, trg, 1.0)  # [3, 5, 12]
    >>> tokens, lengths = model.apply(variables, src, 10, 1, 2, method='generate')  # [3, 10], [3]
    """

    encoder: Encoder
    decoder: AttnDecoder

    def __post_init__(self):
        check_encoder_decoder(self.encoder, self.decoder)
        super().__post_init__()

    def __call__(
        self, src, trg, teacher_forcing_ratio=0.5, src_mask=None, teacher_forcing=None, src_lengths=None, *,
        deterministic: bool = True,
    ):
        src, trg = check_src_trg(src, trg, self.encoder.vocab_size, self.decoder.vocab_size)
        schedule = teacher_schedule(self, teacher_forcing_ratio, teacher_forcing, trg.shape[1])
        src_lengths = check_src_lengths(src_lengths, src.shape)
        src_mask = source_mask(src_mask, src_lengths, src.shape)
        encoder_outputs, hidden, cell = self.encoder(src, src_lengths, deterministic=deterministic)
        context = (encoder_outputs, self.decoder.source_keys(encoder_outputs), src_mask)
        return teacher_forced_decode(self, (hidden, cell), trg, schedule, context, deterministic)

    def decode_step(self, state, input, context, deterministic: bool):
        """One decoder step: `input [batch]` token ids -> `(state, logits [batch, vocab_size])`."""
        encoder_outputs, keys, src_mask = context
        prediction, hidden, cell, _ = self.decoder(
            input[:, None], *state, encoder_outputs, src_mask, deterministic=deterministic, keys=keys
        )
        return (hidden, cell), prediction

    def generate(
        self, src, max_len: int, sos_id: int, eos_id: int | None = None, src_mask=None, src_lengths=None
    ):
        """Greedy decoding, as `Seq2Seq.generate`, attending to the source under `src_mask`.

        Returns `(tokens [batch, max_len], lengths [batch])`.
        """
        src = check_tokens("src", src, self.encoder.vocab_size)
        src_lengths = check_src_lengths(src_lengths, src.shape)
        src_mask = source_mask(src_mask, src_lengths, src.shape)
        check_generate_args(max_len, sos_id, eos_id, self.decoder.vocab_size)
        encoder_outputs, hidden, cell = self.encoder(src, src_lengths)
        context = (encoder_outputs, self.decoder.source_keys(encoder_outputs), src_mask)
        return greedy_decode(self, (hidden, cell), src.shape[0], max_len, sos_id, eos_id, context)


def source_mask(src_mask, src_lengths, src_shape):
    """`src_mask` checked, else the positions before `src_lengths`, else None (all real)."""
    if src_mask is not None:
        return check_mask("src_mask", src_mask, src_shape)
    if src_lengths is not None:
        return jnp.arange(src_shape[1])[None, :] < src_lengths[:, None]  # [batch, src_len]
    return None


def check_mask(name: str, mask, shape) -> jax.Array | None:
    """Optional boolean mask of shape `[batch, src_len]`."""
    if mask is None:
        return None
    if not hasattr(mask, "dtype"):
        mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"{name} must be a boolean array [batch, src_len], got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{name} must have shape [batch, src_len] = {tuple(shape)}, got shape {tuple(mask.shape)}"
        )
    return jnp.asarray(mask)


def check_attention_inputs(hidden, encoder_outputs, hidden_size: int):
    """`hidden: [batch, hidden_size]` and `encoder_outputs: [batch, src_len, hidden_size]`."""
    hidden = checks.as_float_array("hidden", hidden)
    encoder_outputs = checks.as_float_array("encoder_outputs", encoder_outputs)
    if encoder_outputs.ndim != 3 or encoder_outputs.shape[2] != hidden_size:
        raise ValueError(
            f"encoder_outputs must be [batch, src_len, hidden_size] with hidden_size={hidden_size}, "
            f"got shape {tuple(encoder_outputs.shape)}"
        )
    if hidden.shape != (encoder_outputs.shape[0], hidden_size):
        raise ValueError(
            f"hidden must be [batch, hidden_size] = {(encoder_outputs.shape[0], hidden_size)}, "
            f"got shape {tuple(hidden.shape)}"
        )
    return hidden, encoder_outputs
