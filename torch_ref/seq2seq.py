"""The tutorial's encoder-decoder LSTM in PyTorch: `Encoder`, `Decoder`, `Seq2Seq`.

The tutorial's code, with four additions that `flaxseq.seq2seq` mirrors: the constructor
arguments are kept as attributes, the encoder takes optional source lengths (packed
sequences), the forward pass takes an explicit teacher-forcing schedule, and `generate`
decodes greedily.
"""

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class Encoder(nn.Module):
    """`x: [batch, src_len]` ids -> `(outputs [batch, src_len, hidden], hidden, cell [layers, batch, hidden])`.

    With `lengths: [batch]` the embedded source is packed (`enforce_sorted=False`) and the
    outputs padded back to `src_len` with zeros.
    """

    def __init__(self, vocab_size, embed_dim, hidden_size, num_layers):
        super().__init__()
        self.vocab_size, self.embed_dim, self.hidden_size, self.num_layers = (
            vocab_size, embed_dim, hidden_size, num_layers
        )
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True)

    def forward(self, x, lengths=None):
        embedded = self.embedding(x)
        if lengths is None:
            outputs, (hidden, cell) = self.lstm(embedded)
            return outputs, hidden, cell
        packed = pack_padded_sequence(embedded, torch.as_tensor(lengths).cpu(), batch_first=True, enforce_sorted=False)
        outputs, (hidden, cell) = self.lstm(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=x.shape[1])
        return outputs, hidden, cell


class Decoder(nn.Module):
    """`(x [batch, steps] ids, hidden, cell)` -> `(prediction [batch, steps, vocab], hidden, cell)`."""

    def __init__(self, vocab_size, embed_dim, hidden_size, num_layers):
        super().__init__()
        self.vocab_size, self.embed_dim, self.hidden_size, self.num_layers = (
            vocab_size, embed_dim, hidden_size, num_layers
        )
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, vocab_size)

    def forward(self, x, hidden, cell):
        embedded = self.embedding(x)
        output, (hidden, cell) = self.lstm(embedded, (hidden, cell))
        prediction = self.fc(output)
        return prediction, hidden, cell


class Seq2Seq(nn.Module):
    """`(src [batch, src_len], trg [batch, trg_len])` -> logits `[batch, trg_len, vocab]`, position 0 zero.

    Each step feeds the true token with probability `teacher_forcing_ratio` (one `torch.rand`
    draw per step), or follows `teacher_forcing`, a boolean `[trg_len - 1]` schedule, when given.
    """

    def __init__(self, encoder, decoder, device=None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.device = device

    def forward(self, src, trg, teacher_forcing_ratio=0.5, teacher_forcing=None, src_lengths=None):
        batch_size, trg_len = trg.shape
        trg_vocab_size = self.decoder.fc.out_features
        check_schedule(teacher_forcing, trg_len)

        dtype = self.decoder.fc.weight.dtype
        outputs = torch.zeros(batch_size, trg_len, trg_vocab_size, dtype=dtype, device=self.device)

        _, hidden, cell = self.encoder(src, src_lengths)

        input = trg[:, 0].unsqueeze(1)

        for t in range(1, trg_len):
            output, hidden, cell = self.decoder(input, hidden, cell)
            outputs[:, t] = output.squeeze(1)

            teacher_force = draw_teacher_force(teacher_forcing_ratio, teacher_forcing, t)
            top1 = output.argmax(2)
            input = trg[:, t].unsqueeze(1) if teacher_force else top1

        return outputs

    def decode_step(self, state, input, context):
        """One step: `input [batch, 1]` token ids -> `(state, logits [batch, vocab])`."""
        output, hidden, cell = self.decoder(input, *state)
        return (hidden, cell), output.squeeze(1)

    @torch.no_grad()
    def generate(self, src, max_len, sos_id, eos_id=None, src_lengths=None):
        """Greedy decoding: `(tokens [batch, max_len], lengths [batch])`, `eos_id` repeated after a row ends."""
        _, hidden, cell = self.encoder(src, src_lengths)
        return greedy_decode(self, (hidden, cell), src.shape[0], max_len, sos_id, eos_id, None)


def check_schedule(teacher_forcing, trg_len):
    """An explicit schedule must be a boolean tensor of shape `[trg_len - 1]`."""
    if teacher_forcing is None:
        return
    if teacher_forcing.dtype != torch.bool:
        raise TypeError(
            f"teacher_forcing must be a boolean tensor of shape [trg_len - 1], got dtype {teacher_forcing.dtype}"
        )
    if tuple(teacher_forcing.shape) != (trg_len - 1,):
        raise ValueError(
            f"teacher_forcing must have shape [trg_len - 1] = ({trg_len - 1},), "
            f"got shape {tuple(teacher_forcing.shape)}"
        )


def draw_teacher_force(teacher_forcing_ratio, teacher_forcing, t):
    """Whether the input after step `t` is the true token: the schedule's entry, or a draw."""
    if teacher_forcing is not None:
        return bool(teacher_forcing[t - 1])
    return torch.rand(1) < teacher_forcing_ratio


def greedy_decode(model, state, batch_size, max_len, sos_id, eos_id, context):
    """Feed back the argmax of `model.decode_step` from `sos_id`; stop once every row has ended."""
    tokens = torch.full((batch_size, max_len), 0 if eos_id is None else eos_id, dtype=torch.long)
    lengths = torch.full((batch_size,), max_len, dtype=torch.long)
    done = torch.zeros(batch_size, dtype=torch.bool)
    input = torch.full((batch_size, 1), sos_id, dtype=torch.long)
    for t in range(max_len):
        state, logits = model.decode_step(state, input, context)
        top1 = logits.argmax(1)
        if eos_id is not None:
            top1 = top1.masked_fill(done, eos_id)
            ended = ~done & (top1 == eos_id)
            lengths[ended] = t + 1
            done |= ended
        tokens[:, t] = top1
        if done.all():
            break
        input = top1.unsqueeze(1)
    return tokens, lengths
