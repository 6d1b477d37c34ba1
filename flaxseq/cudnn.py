"""The LSTM through cuDNN (`jax.experimental.rnn.lstm`), for `flaxseq.LSTM(use_cudnn=True)`.

cuDNN runs every layer and direction of a stacked LSTM in one call, forward and backward, on
NVIDIA GPUs. It takes one flat weight vector: the matrices of every pseudo-layer (layer 0
forward, layer 0 reverse, layer 1 forward, ...), `W_ih` then `W_hh` each, then the biases in
the same order, `b_ih` then `b_hh`. Its gate order (i, f, g, o) and row-major `[4 * hidden, in]`
matrices are PyTorch's, so packing is a concatenation of the layer's own parameters and the
gradients flow back to them unchanged: the parameter tree stays PyTorch's.

What it supports: no `proj_size`, no dropout between layers while training, float32. Variable
lengths are cuDNN's own (its padded layout with per-sequence lengths, which gives PyTorch's
packed-sequence results); outputs past each length are set to zero. TF32 follows
`jax_default_matmul_precision`: 'highest' turns it off.
"""

import jax
import jax.numpy as jnp

from flaxseq.kinds import LSTM, CellKind
from flaxseq.weights import Weights


def check_config(proj_size: int, kind: CellKind = LSTM) -> None:
    """At construction: what `use_cudnn=True` cannot do in any call (a kind other than the
    LSTM's, a projection)."""
    if kind is not LSTM:
        raise ValueError(f"use_cudnn=True runs cuDNN's LSTM: the kind must be flaxseq.kinds.LSTM, got {kind.name}")
    if proj_size:
        raise ValueError(f"use_cudnn=True does not support proj_size > 0, got proj_size={proj_size}")


def check_call(*, dropout: float, deterministic: bool, dtype) -> None:
    """At the call: raise `ValueError` naming what `use_cudnn=True` cannot do here."""
    if dropout > 0 and not deterministic:
        raise ValueError(
            f"use_cudnn=True does not apply dropout between layers; got dropout={dropout} with "
            "deterministic=False (use use_cudnn=False to train with dropout)"
        )
    if jnp.dtype(dtype) != jnp.float32:
        raise ValueError(f"use_cudnn=True computes in float32 only, got dtype {jnp.dtype(dtype).name}")
    platform = jax.default_backend()
    if platform != "gpu":
        raise ValueError(f"use_cudnn=True needs JAX's CUDA backend, but the default backend is '{platform}'")


def pack_weights(weights: list[Weights]) -> jax.Array:
    """Every layer's and direction's PyTorch-layout weights -> cuDNN's flat weight vector.

    `weights` in the order layer 0 forward, layer 0 reverse, layer 1 forward, ...; absent
    biases (`bias=False`) are packed as zeros.
    """
    matrices = [m.reshape(-1) for w in weights for m in (w.w_ih, w.w_hh)]
    biases = [
        jnp.zeros(w.w_hh.shape[0], w.w_hh.dtype) if b is None else b
        for w in weights for b in (w.b_ih, w.b_hh)
    ]
    return jnp.concatenate(matrices + biases)


def lstm(
    weights: list[Weights], x: jax.Array, h0: jax.Array, c0: jax.Array, lengths: jax.Array | None,
    num_layers: int, bidirectional: bool,
):
    """A stacked LSTM in one cuDNN call.

    Args:
      weights: per layer and direction, as `pack_weights` takes them.
      x: `[time, batch, input_size]`.
      h0, c0: `[num_layers * num_directions, batch, hidden_size]`.
      lengths: `[batch]` integers, or None for full length; clipped to [1, time] (cuDNN needs
        at least one step).

    Returns `(output [time, batch, num_directions * hidden], (h_n, c_n))`.
    """
    from jax.experimental import rnn

    time_steps, batch, input_size = x.shape
    hidden_size = weights[0].w_hh.shape[1]
    if lengths is None:
        seq_lengths = jnp.full((batch,), time_steps, jnp.int32)
    else:
        seq_lengths = jnp.clip(jnp.asarray(lengths, jnp.int32), 1, time_steps)
        valid = jnp.arange(time_steps)[:, None] < seq_lengths[None, :]  # [time, batch]
        x = jnp.where(valid[:, :, None], x, jnp.zeros_like(x))  # the padding is never read
    y, h_n, c_n = rnn.lstm(
        _materialized(jnp.swapaxes(x, 0, 1)), h0, c0, pack_weights(weights), seq_lengths,
        input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, dropout=0.0,
        bidirectional=bidirectional,
    )  # y: [batch, time, num_directions * hidden]
    y = jnp.swapaxes(_materialized(y), 0, 1)
    if lengths is not None:
        y = jnp.where(valid[:, :, None], y, jnp.zeros_like(y))
    return y, (h_n, c_n)


def _materialized(a: jax.Array) -> jax.Array:
    """`a`, made to reach the cuDNN call in its own row-major layout, in both passes.

    Under `jit`, XLA may hand `jax.experimental.rnn.lstm` a transposed operand (the swap of time
    and batch axes) as a layout rather than a copy, which the cuDNN call then reads in the wrong
    order (wrong outputs and gradients whenever the layer's input is time-major; eager runs were
    right). Flattening to 2-D behind an optimization barrier forces a real copy; the barrier's
    transpose does the same for the gradient flowing back.
    """
    flat = jax.lax.optimization_barrier(a.reshape(-1, a.shape[-1]))
    return flat.reshape(a.shape)
