"""Run a batch-first PyTorch RNN on padded input, optionally through a packed sequence."""

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def run_padded(rnn: torch.nn.RNNBase, input: torch.Tensor, lengths=None):
    """`rnn(input)`, or with `lengths` (`[batch]`, any order) `rnn` on the packed sequence.

    `input: [batch, time, features]` (`rnn.batch_first` must be True). With `lengths` the input
    goes through `pack_padded_sequence(enforce_sorted=False)` and the output back through
    `pad_packed_sequence(total_length=time)`, so outputs past each length are zero and the
    final states are taken at each sequence's last valid step, in the input's batch order.
    """
    if lengths is None:
        return rnn(input)
    lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
    packed = pack_padded_sequence(input, lengths, batch_first=True, enforce_sorted=False)
    output, state = rnn(packed)
    output, _ = pad_packed_sequence(output, batch_first=True, total_length=input.shape[1])
    return output, state
