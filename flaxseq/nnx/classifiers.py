"""The tutorial's `TextClassifier` in NNX: the worked example of a whole model, line for line
the PyTorch twin (`torch_ref.TextClassifier`)."""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flaxseq.classifiers import check_dropout, check_tokens
from flaxseq.nnx.basic import Embedding, Linear
from flaxseq.nnx.recurrent import LSTM, require_rngs


class TextClassifier(nnx.Module):
    """Embedding (`padding_idx=0`), dropout, a bidirectional batch-first LSTM with `dropout`
    between its layers, the last layer's final states of both directions, dropout, `fc`.

    `model(x, lengths=None)`: `x: [batch, time]` token ids in `[0, vocab_size)`, `lengths:
    [batch]` or None -> logits `[batch, num_classes]`. Training mode when new; `model.eval()`.

    >>> model = TextClassifier(1000, 32, 64, 2, 5, rngs=nnx.Rngs(0))
    >>> logits = model(jnp.ones((8, 20), jnp.int32))  # [8, 5]
    """

    def __init__(
        self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int, num_classes: int,
        dropout: float = 0.5, *, rngs: nnx.Rngs | None = None, param_dtype: Any = jnp.float32, dtype: Any = None,
    ):
        rngs = require_rngs(self, rngs)
        check_dropout(dropout)
        self.vocab_size, self.embed_dim, self.hidden_size = vocab_size, embed_dim, hidden_size
        self.num_layers, self.num_classes = num_layers, num_classes
        common = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        self.embedding = Embedding(vocab_size, embed_dim, padding_idx=0, **common)
        self.lstm = LSTM(embed_dim, hidden_size, num_layers, batch_first=True, bidirectional=True, dropout=dropout,
                         **common)
        self.fc = Linear(hidden_size * 2, num_classes, **common)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x, lengths=None) -> jax.Array:
        x = check_tokens(x, self.vocab_size)
        embedded = self.dropout(self.embedding(x))  # [batch, time, embed_dim]
        _, (hidden, _) = self.lstm(embedded, lengths=lengths)
        hidden = jnp.concatenate((hidden[-2], hidden[-1]), axis=1)  # [batch, 2 * hidden_size]
        return self.fc(self.dropout(hidden))
