"""The tutorial's sequence classifiers: `LSTMClassifier`, `TextClassifier`, `BiLSTM`, `PackedLSTM`.

The tutorial's code, with two additions: the constructor arguments are kept as attributes
(the converter reads them), and `LSTMClassifier` and `TextClassifier` take optional
`lengths` so that padding does not reach the final states (None: the tutorial's forward).
"""

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from torch_ref.packing import run_padded


class LSTMClassifier(nn.Module):
    """Embedding, dropout, bidirectional LSTM, the last layer's two final states, dropout, `fc`.

    `forward(x, lengths=None)`: `x: [batch, time]` token ids, `lengths: [batch]` or None
    -> logits `[batch, num_classes]`.

    >>> model = LSTMClassifier(vocab_size=10000, embed_dim=128, hidden_size=256, num_layers=2, num_classes=2)
    >>> logits = model(torch.randint(0, 10000, (32, 50)))  # [32, 2]
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, num_layers, num_classes, dropout=0.5):
        super().__init__()
        self.vocab_size, self.embed_dim, self.hidden_size = vocab_size, embed_dim, hidden_size
        self.num_layers, self.num_classes = num_layers, num_classes
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0,
            bidirectional=True
        )
        self.fc = nn.Linear(hidden_size * 2, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, lengths=None):
        embedded = self.dropout(self.embedding(x))

        lstm_out, (hidden, _) = run_padded(self.lstm, embedded, lengths)

        hidden = torch.cat((hidden[-2], hidden[-1]), dim=1)

        out = self.fc(self.dropout(hidden))
        return out


class TextClassifier(nn.Module):
    """The complete example's classifier: as `LSTMClassifier`, with `padding_idx=0` and the
    LSTM's `dropout` between layers whatever `num_layers`.

    `forward(x, lengths=None)`: `x: [batch, time]` token ids, `lengths: [batch]` or None
    -> logits `[batch, num_classes]`.

    >>> model = TextClassifier(vocab_size=4, embed_dim=32, hidden_size=64, num_layers=2, num_classes=2)
    >>> logits = model(torch.tensor([[2, 3, 0], [3, 2, 2]]))  # [2, 2]
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, num_layers, num_classes, dropout=0.5):
        super().__init__()
        self.vocab_size, self.embed_dim, self.hidden_size = vocab_size, embed_dim, hidden_size
        self.num_layers, self.num_classes = num_layers, num_classes
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(
            embed_dim, hidden_size, num_layers,
            batch_first=True, bidirectional=True, dropout=dropout
        )
        self.fc = nn.Linear(hidden_size * 2, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, lengths=None):
        embedded = self.dropout(self.embedding(x))
        lstm_out, (hidden, _) = run_padded(self.lstm, embedded, lengths)
        hidden = torch.cat((hidden[-2], hidden[-1]), dim=1)
        out = self.fc(self.dropout(hidden))
        return out


class BiLSTM(nn.Module):
    """Bidirectional LSTM and `fc` on the output at the last time step, `lstm_out[:, -1, :]`.

    `forward(x)`: `x: [batch, time, input_size]` -> `[batch, num_classes]`.

    >>> model = BiLSTM(10, 20, 2, 5)
    >>> out = model(torch.randn(32, 5, 10))  # [32, 5]
    """

    def __init__(self, input_size, hidden_size, num_layers, num_classes):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.num_classes = num_layers, num_classes
        self.lstm = nn.LSTM(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=True
        )
        self.fc = nn.Linear(hidden_size * 2, num_classes)

    def forward(self, x):
        lstm_out, (hidden, _) = self.lstm(x)

        out = self.fc(lstm_out[:, -1, :])
        return out


class PackedLSTM(nn.Module):
    """LSTM over a packed batch and `fc` on the last layer's final state `hidden[-1]`.

    `forward(x, lengths)`: `x: [batch, time, input_size]`, `lengths: [batch]` (any order)
    -> `[batch, num_classes]`.

    >>> model = PackedLSTM(10, 20, 2, 5)
    >>> out = model(torch.randn(4, 10, 10), [10, 8, 6, 4])  # [4, 5]
    """

    def __init__(self, input_size, hidden_size, num_layers, num_classes):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.num_classes = num_layers, num_classes
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x, lengths):
        lengths = torch.as_tensor(lengths, dtype=torch.long)

        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)

        packed_out, (hidden, _) = self.lstm(packed)

        out, _ = pad_packed_sequence(packed_out, batch_first=True)

        return self.fc(hidden[-1])
