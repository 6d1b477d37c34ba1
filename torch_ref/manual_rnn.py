"""The tutorial's hand-written RNN: a cell over `cat(x, h)` with one `nn.Linear`, looped over time.

The tutorial names the cell `RNNCell`; here it is `ManualRNNCell`, since `torch_ref.RNNCell`
is `torch.nn.RNNCell`. The constructor arguments are kept as attributes, so that the converter
can build the flaxseq twin with the same configuration.
"""

import torch
import torch.nn as nn


class ManualRNNCell(nn.Module):
    """`h = tanh(i2h(cat(x, h_prev)))`: `x: [batch, input_size]`, `h_prev`, `h: [batch, hidden_size]`.

    >>> cell = ManualRNNCell(10, 20)
    >>> h = cell(torch.randn(32, 10), torch.zeros(32, 20))  # [32, 20]
    """

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.tanh = nn.Tanh()

    def forward(self, x, h_prev):
        combined = torch.cat((x, h_prev), dim=1)
        h = self.tanh(self.i2h(combined))
        return h


class ManualRNN(nn.Module):
    """The cell over `x: [batch, time, input_size]` from a zero state.

    Returns `(outputs, h)`: `outputs: [batch, time, hidden_size]`, the state after each step,
    and `h: [batch, hidden_size]`, the last one. `fc` (hidden_size -> output_size) is created
    but not used by the forward pass, as in the tutorial.

    >>> model = ManualRNN(10, 20, 5)
    >>> outputs, h = model(torch.randn(32, 5, 10))  # [32, 5, 20], [32, 20]
    """

    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.rnn_cell = ManualRNNCell(input_size, hidden_size)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        batch_size, seq_len, _ = x.size()
        h = torch.zeros(batch_size, self.hidden_size, dtype=x.dtype, device=x.device)

        outputs = []
        for t in range(seq_len):
            h = self.rnn_cell(x[:, t, :], h)
            outputs.append(h)

        outputs = torch.stack(outputs, dim=1)
        return outputs, h
