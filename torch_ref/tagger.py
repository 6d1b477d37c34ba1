"""The tutorial's sequence tagger: embedding, bidirectional GRU, a tag score per token.

The tutorial's code, with two additions: the constructor arguments are kept as attributes
(the converter reads them), and `forward` takes optional `lengths`, so that the backward
direction starts at each sequence's last token rather than on padding (None: the tutorial's
forward). With `lengths`, the GRU outputs past each length are zero, so the scores there are
`fc.bias`.
"""

import torch.nn as nn

from torch_ref.packing import run_padded


class GRUTagger(nn.Module):
    """`forward(x, lengths=None)`: `x: [batch, time]` token ids, `lengths: [batch]` or None
    -> tag scores `[batch, time, num_tags]`.

    >>> model = GRUTagger(vocab_size=10000, embed_dim=128, hidden_size=256, num_layers=2, num_tags=10)
    >>> scores = model(torch.randint(0, 10000, (32, 50)))  # [32, 50, 10]
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, num_layers, num_tags):
        super().__init__()
        self.vocab_size, self.embed_dim, self.hidden_size = vocab_size, embed_dim, hidden_size
        self.num_layers, self.num_tags = num_layers, num_tags
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.gru = nn.GRU(
            embed_dim,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=True
        )
        self.fc = nn.Linear(hidden_size * 2, num_tags)

    def forward(self, x, lengths=None):
        embedded = self.embedding(x)
        gru_out, _ = run_padded(self.gru, embedded, lengths)
        out = self.fc(gru_out)
        return out
