"""Encoder-decoder (sequence-to-sequence) LSTM with teacher forcing and greedy generation.

Three modules, the twins of `torch_ref.Encoder`, `torch_ref.Decoder` and `torch_ref.Seq2Seq`:
an embedding and LSTM that read the source, an embedding, LSTM and linear layer that predict
the next target token, and the model that runs the decoder over the target one step at a time.

The decoding loop is `nn.scan` over one decoder step (`decode_step`, a method each seq2seq
model defines), so it compiles once whatever the target length. Two loops share it:

- `teacher_forced_decode`: step t feeds the true token `trg[:, t]` (teacher forcing) or the
  decoder's own argmax, decided once per step for the whole batch by a boolean schedule.
- `greedy_decode`: starts from `sos_id` and always feeds the argmax (`generate`).

The argmax only chooses which token is fed next; gradients flow through the logits alone.
"""

import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxseq import checks
from flaxseq.basic import Embedding, Linear, check_ids
from flaxseq.layers import LSTM


class Encoder(nn.Module):
    """Embedding then a batch-first LSTM over the source tokens.

    Args:
      vocab_size, embed_dim, hidden_size, num_layers: the sizes; the LSTM reads `embed_dim`
        features and has `num_layers` layers of `hidden_size`.

    Call `(x, lengths=None, *, deterministic=True)`:
      x: `[batch, src_len]` integer token ids.
      lengths: optional `[batch]` source lengths; then outputs past each length are zero and the
        final states are taken at each sequence's last token (PyTorch: packed sequences).

    Returns `(outputs [batch, src_len, hidden_size], hidden, cell)` with `hidden, cell:
    [num_layers, batch, hidden_size]`.

    >>> encoder = Encoder(vocab_size=12, embed_dim=6, hidden_size=5, num_layers=2)
    >>> src = jnp.zeros((3, 7), jnp.int32)
    >>> variables = encoder.init(jax.random.key(0), src)
    >>> outputs, hidden, cell = encoder.apply(variables, src)  # [3, 7, 5], [2, 3, 5], [2, 3, 5]
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
            self.embed_dim, self.hidden_size, self.num_layers, batch_first=True,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )

    def __call__(self, x, lengths=None, *, deterministic: bool = True):
        x = check_tokens("x", x, self.vocab_size)
        embedded = self.embedding(x)  # [batch, src_len, embed_dim]
        outputs, (hidden, cell) = self.lstm(embedded, lengths=lengths, deterministic=deterministic)
        return outputs, hidden, cell


class Decoder(nn.Module):
    """Embedding, a batch-first LSTM started from the given state, and a linear layer to logits.

    Args:
      vocab_size, embed_dim, hidden_size, num_layers: the sizes (as `Encoder`); `fc` maps
        `hidden_size` to `vocab_size` logits.

    Call `(x, hidden, cell, *, deterministic=True)`:
      x: `[batch, steps]` integer token ids (one step, `[batch, 1]`, in `Seq2Seq`).
      hidden, cell: `[num_layers, batch, hidden_size]`.

    Returns `(prediction [batch, steps, vocab_size], hidden, cell)`.

    >>> decoder = Decoder(vocab_size=12, embed_dim=6, hidden_size=5, num_layers=2)
    >>> x, state = jnp.zeros((3, 1), jnp.int32), jnp.zeros((2, 3, 5))
    >>> variables = decoder.init(jax.random.key(0), x, state, state)
    >>> prediction, hidden, cell = decoder.apply(variables, x, state, state)  # [3, 1, 12], ...
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
            self.embed_dim, self.hidden_size, self.num_layers, batch_first=True,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )
        self.fc = Linear(self.vocab_size, dtype=self.dtype, param_dtype=self.param_dtype)

    def __call__(self, x, hidden, cell, *, deterministic: bool = True):
        x = check_tokens("x", x, self.vocab_size)
        embedded = self.embedding(x)  # [batch, steps, embed_dim]
        output, (hidden, cell) = self.lstm(embedded, (hidden, cell), deterministic=deterministic)
        prediction = self.fc(output)  # [batch, steps, vocab_size]
        return prediction, hidden, cell


class Seq2Seq(nn.Module):
    """Encoder-decoder with teacher forcing, the tutorial's `Seq2Seq` (without its `device`).

    Args:
      encoder: an `Encoder`; decoder: a `Decoder` with the same `hidden_size` and `num_layers`.

    Call `(src, trg, teacher_forcing_ratio=0.5, teacher_forcing=None, src_lengths=None, *,
    deterministic=True)`, rngs `'teacher'` (when the schedule is drawn) and `'dropout'`:
      src: `[batch, src_len]` and trg: `[batch, trg_len]` integer token ids; `trg[:, 0]` is the
        first decoder input (the start token).
      teacher_forcing_ratio: the probability that a step feeds the true token; one draw per step
        for the whole batch, from the `'teacher'` rng stream (0 and 1 need no rng).
      teacher_forcing: optional boolean `[trg_len - 1]` schedule that replaces the draw: entry
        t - 1 decides the input after step t (`trg[:, t]` if True, else the argmax of step t's
        logits). The last entry is unused (the tutorial's loop draws it too).
      src_lengths: optional `[batch]` source lengths for the encoder.

    Returns `outputs: [batch, trg_len, vocab_size]` logits; `outputs[:, 0]` stays zero.

    >>> model = Seq2Seq(Encoder(12, 6, 5, 2), Decoder(12, 6, 5, 2))
    >>> src, trg = jnp.ones((3, 7), jnp.int32), jnp.ones((3, 5), jnp.int32)
    >>> variables = model.init(jax.random.key(0), src, trg)
    >>> outputs = model.apply(variables, src, trg, rngs={'teacher': jax.random.key(1)})  # [3, 5, 12]
    >>> tokens, lengths = model.apply(variables, src, 10, 1, 2, method='generate')  # [3, 10], [3]
    """

    encoder: Encoder
    decoder: Decoder

    def __post_init__(self):
        check_encoder_decoder(self.encoder, self.decoder)
        super().__post_init__()

    def __call__(
        self, src, trg, teacher_forcing_ratio=0.5, teacher_forcing=None, src_lengths=None, *,
        deterministic: bool = True,
    ):
        src, trg = check_src_trg(src, trg, self.encoder.vocab_size, self.decoder.vocab_size)
        schedule = teacher_schedule(self, teacher_forcing_ratio, teacher_forcing, trg.shape[1])
        src_lengths = check_src_lengths(src_lengths, src.shape)
        _, hidden, cell = self.encoder(src, src_lengths, deterministic=deterministic)
        return teacher_forced_decode(self, (hidden, cell), trg, schedule, None, deterministic)

    def decode_step(self, state, input, context, deterministic: bool):
        """One decoder step: `input [batch]` token ids -> `(state, logits [batch, vocab_size])`."""
        del context  # the plain decoder sees the source only through the encoder's final state
        prediction, hidden, cell = self.decoder(input[:, None], *state, deterministic=deterministic)
        return (hidden, cell), prediction[:, 0]

    def generate(self, src, max_len: int, sos_id: int, eos_id: int | None = None, src_lengths=None):
        """Greedy decoding from `sos_id` for `max_len` steps (`max_len`, `sos_id`, `eos_id` static).

        Returns `(tokens [batch, max_len], lengths [batch])`: the argmax tokens without the start
        token; after a row's first `eos_id` the row repeats `eos_id`; a length counts the tokens
        up to and including the first `eos_id`, or is `max_len`. Jit with
        `jax.jit(partial(model.apply, method='generate'), static_argnums=(2, 3, 4))`.
        """
        src = check_tokens("src", src, self.encoder.vocab_size)
        src_lengths = check_src_lengths(src_lengths, src.shape)
        check_generate_args(max_len, sos_id, eos_id, self.decoder.vocab_size)
        _, hidden, cell = self.encoder(src, src_lengths)
        return greedy_decode(self, (hidden, cell), src.shape[0], max_len, sos_id, eos_id, None)


# ---- the decoding loops, shared with `flaxseq.attention.Seq2SeqAttention` ----


def _teacher_forced_step(model, carry, xs, context, deterministic):
    state, input = carry  # input: [batch] token ids
    target, forced = xs  # [batch] true tokens of this step, scalar bool decision
    state, logits = model.decode_step(state, input, context, deterministic)  # logits: [batch, vocab]
    top1 = jnp.argmax(logits, axis=-1).astype(input.dtype)
    return (state, jnp.where(forced, target, top1)), logits


def _greedy_step(model, carry, _, context, eos_id):
    state, input, done = carry  # input: [batch] token ids, done: [batch] bool
    state, logits = model.decode_step(state, input, context, True)
    token = jnp.argmax(logits, axis=-1).astype(input.dtype)
    if eos_id is not None:
        token = jnp.where(done, eos_id, token)
        valid, done = ~done, done | (token == eos_id)
    else:
        valid = jnp.ones_like(done)
    return (state, token, done), (token, valid)


def teacher_forced_decode(model, state, trg, schedule, context, deterministic):
    """Run `model.decode_step` over steps 1..trg_len-1 with teacher forcing by `schedule`.

    `trg: [batch, trg_len]`, `schedule: [trg_len - 1]` bool; `context` is passed to every step
    unchanged. Returns `[batch, trg_len, vocab_size]` logits with position 0 zero.
    """
    scan = nn.scan(
        _teacher_forced_step, variable_broadcast="params", split_rngs={"params": False, "dropout": True},
        in_axes=(0, nn.broadcast, nn.broadcast), out_axes=1,
    )
    targets = jnp.swapaxes(trg[:, 1:], 0, 1)  # [trg_len - 1, batch]
    _, logits = scan(model, (state, trg[:, 0]), (targets, schedule), context, deterministic)
    first = jnp.zeros((trg.shape[0], 1, logits.shape[2]), logits.dtype)
    return jnp.concatenate([first, logits], axis=1)  # [batch, trg_len, vocab_size]


def greedy_decode(model, state, batch: int, max_len: int, sos_id: int, eos_id, context):
    """Feed back the argmax for `max_len` steps from `sos_id`; returns `(tokens, lengths)`."""
    scan = nn.scan(
        _greedy_step, variable_broadcast="params", split_rngs={"params": False},
        in_axes=(0, nn.broadcast, nn.broadcast), out_axes=1, length=max_len,
    )
    input = jnp.full((batch,), sos_id, jnp.asarray(0).dtype)
    done = jnp.zeros((batch,), bool)
    _, (tokens, valid) = scan(model, (state, input, done), None, context, eos_id)
    return tokens, valid.sum(axis=1)  # [batch, max_len], [batch]


def teacher_schedule(module: nn.Module, ratio, schedule, trg_len: int) -> jax.Array:
    """The `[trg_len - 1]` teacher-forcing decisions: `schedule` checked, or one draw per step."""
    steps = trg_len - 1
    if schedule is not None:
        if not hasattr(schedule, "dtype"):
            schedule = np.asarray(schedule)
        if schedule.dtype != bool:
            raise TypeError(
                f"teacher_forcing must be a boolean array of shape [trg_len - 1], got dtype {schedule.dtype}"
            )
        if tuple(schedule.shape) != (steps,):
            raise ValueError(
                f"teacher_forcing must have shape [trg_len - 1] = ({steps},), got shape {tuple(schedule.shape)}"
            )
        return jnp.asarray(schedule)
    if isinstance(ratio, numbers.Real) and not isinstance(ratio, bool):
        if ratio >= 1:
            return jnp.ones((steps,), bool)
        if ratio <= 0:
            return jnp.zeros((steps,), bool)
    elif not (hasattr(ratio, "shape") and ratio.shape == ()):
        raise TypeError(f"teacher_forcing_ratio must be a number in [0, 1], got {type(ratio).__name__}")
    return jax.random.uniform(module.make_rng("teacher"), (steps,)) < ratio


# ---- argument checks ----


def check_tokens(name: str, ids, vocab_size: int) -> jax.Array:
    """`[batch, time]` integer token ids in `[0, vocab_size)` (values checked where concrete)."""
    ids = check_ids(name, ids, vocab_size)
    if ids.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of token ids [batch, time], got shape {tuple(ids.shape)}")
    return ids


def check_src_trg(src, trg, src_vocab: int, trg_vocab: int):
    """Source and target token ids with the same batch size and at least one target step."""
    src = check_tokens("src", src, src_vocab)
    trg = check_tokens("trg", trg, trg_vocab)
    if src.shape[0] != trg.shape[0]:
        raise ValueError(
            f"src and trg must have the same batch size, got src.shape[0]={src.shape[0]} "
            f"and trg.shape[0]={trg.shape[0]}"
        )
    if trg.shape[1] < 1:
        raise ValueError(f"trg must hold at least the start token, got shape {tuple(trg.shape)}")
    return src, trg


def check_src_lengths(src_lengths, src_shape):
    """Optional `[batch]` source lengths in [1, src_len]."""
    if src_lengths is None:
        return None
    try:
        return checks.check_lengths(src_lengths, *src_shape)
    except (TypeError, ValueError) as error:
        raise type(error)(f"src_{error}") from None


def check_generate_args(max_len, sos_id, eos_id, vocab_size: int) -> None:
    """`max_len >= 1` and token ids in `[0, vocab_size)`, all Python ints (they are static)."""
    checks.check_int("max_len", max_len, 1)
    for name, value in (("sos_id", sos_id), ("eos_id", eos_id)):
        if value is None and name == "eos_id":
            continue
        checks.check_int(name, value, 0)
        if value >= vocab_size:
            raise ValueError(f"{name} must lie in [0, vocab_size) = [0, {vocab_size}), got {value}")


def check_encoder_decoder(encoder, decoder) -> None:
    """The encoder's final state starts the decoder: same `hidden_size` and `num_layers`."""
    for name in ("hidden_size", "num_layers"):
        if getattr(encoder, name) != getattr(decoder, name):
            raise ValueError(
                f"encoder and decoder must have the same {name}, got {getattr(encoder, name)} "
                f"and {getattr(decoder, name)}"
            )
