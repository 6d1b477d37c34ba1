"""Sequence classifiers: `LSTMClassifier`, `TextClassifier`, `BiLSTM` and `PackedLSTM`.

Each is the twin of the `torch_ref` model of the same name: the same constructor arguments,
submodules under the PyTorch attribute names (`embedding`, `lstm`, `fc`), the same forward
pass, and PyTorch's default initialisation. `dropout` is the rate; the dropout layer has no
parameters and no name to match. With `deterministic=False`, dropout draws from the
`'dropout'` rng stream: `model.apply(variables, x, deterministic=False, rngs={'dropout': key})`.

Token ids outside `[0, vocab_size)` raise `ValueError` where they are concrete. Under
`jax.jit` they cannot be checked: their embedding rows are NaN (never another token's values),
so the logits of the sequences that hold them (within their lengths) are NaN.
"""

import numbers
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxseq import checks
from flaxseq.basic import Embedding, Linear, check_ids
from flaxseq.layers import LSTM


def check_tokens(x, vocab_size: int, name: str = "x") -> jax.Array:
    """Token ids `[batch, time]`: an integer array of rank 2 with at least one time step;
    concrete values must lie in `[0, vocab_size)`."""
    shape = tuple(np.shape(x))
    if len(shape) != 2:
        raise ValueError(
            f"{name} must be token ids of shape [batch, time], got a {len(shape)}-D array of shape {shape}"
        )
    if shape[1] == 0:
        raise ValueError(f"{name} must have at least one time step, got shape {shape}")
    return check_ids(name, x, vocab_size)


def check_dropout(dropout) -> None:
    """A probability in [0, 1], as `torch.nn.Dropout` requires."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {dropout!r}")


def check_features(x, size: int, name: str = "x") -> jax.Array:
    """Float features `[batch, time, size]` with at least one time step."""
    x = checks.as_float_array(name, x)
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape [batch, time, input_size], got a {x.ndim}-D array of shape {x.shape}")
    if x.shape[-1] != size:
        raise ValueError(f"{name}.shape[-1] must be equal to input_size. Expected {size}, got {x.shape[-1]}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one time step, got shape {x.shape}")
    return x


class _Classifier(nn.Module):
    """Constructor checks shared by the models below (their fields are declared by each)."""

    def __post_init__(self):
        for name in ("vocab_size", "embed_dim", "input_size", "hidden_size", "num_layers", "num_classes"):
            if hasattr(self, name):
                checks.check_int(name, getattr(self, name), 1)
        if hasattr(self, "dropout"):
            check_dropout(self.dropout)
        super().__post_init__()


class LSTMClassifier(_Classifier):
    """Embedding, dropout, bidirectional LSTM, the last layer's final states, dropout, `fc`.

    Args:
      vocab_size, embed_dim: the embedding table `[vocab_size, embed_dim]`, from N(0, 1).
      hidden_size, num_layers: the bidirectional, batch-first LSTM (dropout between its layers
        is `dropout` when `num_layers > 1`, else 0).
      num_classes: outputs of `fc`, a `Linear` over `2 * hidden_size` features.
      dropout: rate of the dropout on the embeddings and on the concatenated final states.
      dtype: computation dtype (None: promoted from inputs and parameters).
      param_dtype: dtype of the parameters.

    Call: `model.apply(variables, x, lengths=None, *, deterministic=True, rngs=...)`.

    - `x: [batch, time]` integer token ids in `[0, vocab_size)`.
    - `lengths`: optional `[batch]` integers in [1, time], any order. None runs every sequence
      over the whole time axis (the tutorial's forward); with lengths the LSTM's final states
      are taken at each sequence's last token, and the backward direction starts there, as
      PyTorch's `pack_padded_sequence(enforce_sorted=False)` gives.
    - Returns logits `[batch, num_classes]`: `fc(dropout(cat(h_n[-2], h_n[-1])))`.

    >>> model = LSTMClassifier(vocab_size=10000, embed_dim=128, hidden_size=256, num_layers=2, num_classes=2)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((32, 50), jnp.int32))
    >>> logits = model.apply(variables, jnp.ones((32, 50), jnp.int32))  # [32, 2]
    """

    vocab_size: int
    embed_dim: int
    hidden_size: int
    num_layers: int
    num_classes: int
    dropout: float = 0.5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    padding_idx: ClassVar[int | None] = None

    def lstm_dropout(self) -> float:
        """Dropout between the LSTM's layers, as the tutorial passes it."""
        return self.dropout if self.num_layers > 1 else 0

    @nn.compact
    def __call__(self, x, lengths=None, *, deterministic: bool = True) -> jax.Array:
        x = check_tokens(x, self.vocab_size)
        dropout = nn.Dropout(self.dropout)
        embedded = Embedding(
            self.vocab_size, self.embed_dim, padding_idx=self.padding_idx, dtype=self.dtype,
            param_dtype=self.param_dtype, name="embedding",
        )(x)  # [batch, time, embed_dim]
        embedded = dropout(embedded, deterministic=deterministic)
        lstm = LSTM(
            self.embed_dim, self.hidden_size, self.num_layers, batch_first=True, dropout=self.lstm_dropout(),
            bidirectional=True, dtype=self.dtype, param_dtype=self.param_dtype, name="lstm",
        )
        _, (hidden, _) = lstm(embedded, lengths=lengths, deterministic=deterministic)
        hidden = jnp.concatenate((hidden[-2], hidden[-1]), axis=1)  # [batch, 2 * hidden_size]
        fc = Linear(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")
        return fc(dropout(hidden, deterministic=deterministic))


class TextClassifier(LSTMClassifier):
    """The complete example's classifier: `LSTMClassifier` with a padding token and the LSTM's
    `dropout` between layers whatever `num_layers` (as in PyTorch, a warning when it is 1).

    Args, call and returns as in `LSTMClassifier`. The embedding has `padding_idx=0`: row 0
    starts at zero and receives no gradient.

    >>> model = TextClassifier(vocab_size=4, embed_dim=32, hidden_size=64, num_layers=2, num_classes=2)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 3), jnp.int32))
    >>> logits = model.apply(variables, jnp.array([[2, 3, 0], [3, 2, 2]]), lengths=jnp.array([2, 3]))  # [2, 2]
    """

    padding_idx: ClassVar[int | None] = 0

    def lstm_dropout(self) -> float:
        return self.dropout


class BiLSTM(_Classifier):
    """Bidirectional LSTM and `fc` on the output at the last time step, `lstm_out[:, -1, :]`.

    Args:
      input_size, hidden_size, num_layers: the bidirectional, batch-first LSTM.
      num_classes: outputs of `fc`, a `Linear` over `2 * hidden_size` features.
      dtype, param_dtype: as in `LSTMClassifier`.

    Call: `model.apply(variables, x, *, deterministic=True) -> [batch, num_classes]` with
    `x: [batch, time, input_size]`. (No dropout; `deterministic` keeps the call uniform.) The
    backward direction's part of the last step's output has seen only that step.

    >>> model = BiLSTM(10, 20, 2, 5)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((32, 5, 10)))
    >>> out = model.apply(variables, jnp.ones((32, 5, 10)))  # [32, 5]
    """

    input_size: int
    hidden_size: int
    num_layers: int
    num_classes: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, deterministic: bool = True) -> jax.Array:
        x = check_features(x, self.input_size)
        lstm = LSTM(
            self.input_size, self.hidden_size, self.num_layers, batch_first=True, bidirectional=True,
            dtype=self.dtype, param_dtype=self.param_dtype, name="lstm",
        )
        lstm_out, _ = lstm(x, deterministic=deterministic)  # [batch, time, 2 * hidden_size]
        fc = Linear(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")
        return fc(lstm_out[:, -1, :])


class PackedLSTM(_Classifier):
    """LSTM over padded sequences of given lengths, `fc` on the last layer's final state.

    Args:
      input_size, hidden_size, num_layers: the (unidirectional) batch-first LSTM.
      num_classes: outputs of `fc`, a `Linear` over `hidden_size` features.
      dtype, param_dtype: as in `LSTMClassifier`.

    Call: `model.apply(variables, x, lengths, *, deterministic=True) -> [batch, num_classes]`
    with `x: [batch, time, input_size]` and `lengths: [batch]` integers in [1, time], any
    order: `fc(h_n[-1])`, the state at each sequence's last valid step (PyTorch packs the
    batch with `pack_padded_sequence(enforce_sorted=False)`; flaxseq's LSTM masks). No
    dropout; `deterministic` keeps the call uniform.

    >>> model = PackedLSTM(10, 20, 2, 5)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((4, 10, 10)), jnp.full((4,), 10))
    >>> out = model.apply(variables, jnp.ones((4, 10, 10)), jnp.array([10, 8, 6, 4]))  # [4, 5]
    """

    input_size: int
    hidden_size: int
    num_layers: int
    num_classes: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, lengths, *, deterministic: bool = True) -> jax.Array:
        x = check_features(x, self.input_size)
        if lengths is None:
            raise TypeError("lengths must be an integer array of shape [batch], got None")
        lstm = LSTM(
            self.input_size, self.hidden_size, self.num_layers, batch_first=True,
            dtype=self.dtype, param_dtype=self.param_dtype, name="lstm",
        )
        _, (hidden, _) = lstm(x, lengths=lengths, deterministic=deterministic)  # [num_layers, batch, hidden]
        fc = Linear(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")
        return fc(hidden[-1])
