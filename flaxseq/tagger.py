"""`GRUTagger`: a tag score for every token, from an embedding and a bidirectional GRU.

The twin of `torch_ref.GRUTagger`: the same constructor arguments, submodules `embedding`,
`gru` and `fc`, the same forward pass and PyTorch's default initialisation.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxseq import checks
from flaxseq.basic import Embedding, Linear
from flaxseq.classifiers import check_tokens
from flaxseq.layers import GRU


class GRUTagger(nn.Module):
    """Embedding, bidirectional GRU, and `fc` on every time step's output.

    Args:
      vocab_size, embed_dim: the embedding table `[vocab_size, embed_dim]`, from N(0, 1).
      hidden_size, num_layers: the bidirectional, batch-first GRU.
      num_tags: outputs of `fc`, a `Linear` over `2 * hidden_size` features.
      dtype: computation dtype (None: promoted from inputs and parameters).
      param_dtype: dtype of the parameters.

    Call: `model.apply(variables, x, lengths=None, *, deterministic=True)`.

    - `x: [batch, time]` integer token ids in `[0, vocab_size)`.
    - `lengths`: optional `[batch]` integers in [1, time], any order. None runs every sequence
      over the whole time axis (the tutorial's forward); with lengths the backward direction
      starts at each sequence's last token, as PyTorch's `pack_padded_sequence` gives, and the
      GRU outputs past each length are zero, so the scores there equal `fc`'s bias.
    - Returns tag scores `[batch, time, num_tags]`. (No dropout; `deterministic` keeps the
      call uniform.)

    Token ids outside `[0, vocab_size)` raise `ValueError` where they are concrete. Under
    `jax.jit` they cannot be checked: their embedding rows are NaN, which turns the scores of
    the sequences that hold them (within their lengths) NaN.

    >>> model = GRUTagger(vocab_size=10000, embed_dim=128, hidden_size=256, num_layers=2, num_tags=10)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((32, 50), jnp.int32))
    >>> scores = model.apply(variables, jnp.ones((32, 50), jnp.int32))  # [32, 50, 10]
    """

    vocab_size: int
    embed_dim: int
    hidden_size: int
    num_layers: int
    num_tags: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        for name in ("vocab_size", "embed_dim", "hidden_size", "num_layers", "num_tags"):
            checks.check_int(name, getattr(self, name), 1)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, lengths=None, *, deterministic: bool = True) -> jax.Array:
        x = check_tokens(x, self.vocab_size)
        embedded = Embedding(
            self.vocab_size, self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="embedding"
        )(x)  # [batch, time, embed_dim]
        gru = GRU(
            self.embed_dim, self.hidden_size, self.num_layers, batch_first=True, bidirectional=True,
            dtype=self.dtype, param_dtype=self.param_dtype, name="gru",
        )
        gru_out, _ = gru(embedded, lengths=lengths, deterministic=deterministic)  # [batch, time, 2 * hidden]
        fc = Linear(self.num_tags, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")
        return fc(gru_out)  # [batch, time, num_tags]
