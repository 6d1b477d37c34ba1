"""The tutorial's attention in PyTorch: `Attention`, `AttnDecoder`, and `Seq2SeqAttention`.

`Attention` and `AttnDecoder` are the tutorial's code with an optional source mask (masked
scores filled with the dtype's most negative finite value). `Seq2SeqAttention` is the model
the tutorial stops short of: `torch_ref.seq2seq.Seq2Seq`'s loop around an `AttnDecoder`.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_ref.seq2seq import check_schedule, draw_teacher_force, greedy_decode


class Attention(nn.Module):
    """`(hidden [batch, hidden], encoder_outputs [batch, src_len, hidden], mask=None)` -> weights `[batch, src_len]`."""

    def __init__(self, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.attn = nn.Linear(hidden_size * 2, hidden_size)
        self.v = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, hidden, encoder_outputs, mask=None):
        batch_size, src_len, _ = encoder_outputs.shape

        hidden = hidden.unsqueeze(1).repeat(1, src_len, 1)

        energy = torch.tanh(self.attn(torch.cat((hidden, encoder_outputs), dim=2)))

        attention = self.v(energy).squeeze(2)
        if mask is not None:
            attention = attention.masked_fill(~mask, torch.finfo(attention.dtype).min)

        return F.softmax(attention, dim=1)


class AttnDecoder(nn.Module):
    """`(x [batch, 1], hidden, cell, encoder_outputs, mask=None)` -> `(prediction [batch, vocab], hidden, cell,
    attn_weights [batch, 1, src_len])`."""

    def __init__(self, vocab_size, embed_dim, hidden_size, num_layers):
        super().__init__()
        self.vocab_size, self.embed_dim, self.hidden_size, self.num_layers = (
            vocab_size, embed_dim, hidden_size, num_layers
        )
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim + hidden_size, hidden_size, num_layers, batch_first=True)
        self.attention = Attention(hidden_size)
        self.fc = nn.Linear(hidden_size * 2, vocab_size)

    def forward(self, x, hidden, cell, encoder_outputs, mask=None):
        embedded = self.embedding(x)

        attn_weights = self.attention(hidden[-1], encoder_outputs, mask)
        attn_weights = attn_weights.unsqueeze(1)

        context = torch.bmm(attn_weights, encoder_outputs)

        lstm_input = torch.cat((embedded, context), dim=2)
        output, (hidden, cell) = self.lstm(lstm_input, (hidden, cell))

        output = torch.cat((output.squeeze(1), context.squeeze(1)), dim=1)
        prediction = self.fc(output)

        return prediction, hidden, cell, attn_weights


class Seq2SeqAttention(nn.Module):
    """`(src, trg, teacher_forcing_ratio=0.5, src_mask=None, teacher_forcing=None, src_lengths=None)` ->
    logits `[batch, trg_len, vocab]`, position 0 zero; teacher forcing as in `Seq2Seq`.

    `src_mask` (boolean `[batch, src_len]`, True where real) defaults to the positions before
    `src_lengths` when only those are given.
    """

    def __init__(self, encoder, decoder, device=None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.device = device

    def forward(self, src, trg, teacher_forcing_ratio=0.5, src_mask=None, teacher_forcing=None, src_lengths=None):
        batch_size, trg_len = trg.shape
        trg_vocab_size = self.decoder.fc.out_features
        check_schedule(teacher_forcing, trg_len)

        dtype = self.decoder.fc.weight.dtype
        outputs = torch.zeros(batch_size, trg_len, trg_vocab_size, dtype=dtype, device=self.device)

        encoder_outputs, hidden, cell = self.encoder(src, src_lengths)
        src_mask = source_mask(src_mask, src_lengths, src.shape[1])

        input = trg[:, 0].unsqueeze(1)

        for t in range(1, trg_len):
            output, hidden, cell, _ = self.decoder(input, hidden, cell, encoder_outputs, src_mask)
            outputs[:, t] = output

            teacher_force = draw_teacher_force(teacher_forcing_ratio, teacher_forcing, t)
            top1 = output.argmax(1).unsqueeze(1)
            input = trg[:, t].unsqueeze(1) if teacher_force else top1

        return outputs

    def decode_step(self, state, input, context):
        """One step: `input [batch, 1]` token ids -> `(state, logits [batch, vocab])`."""
        output, hidden, cell, _ = self.decoder(input, *state, *context)
        return (hidden, cell), output

    @torch.no_grad()
    def generate(self, src, max_len, sos_id, eos_id=None, src_mask=None, src_lengths=None):
        """Greedy decoding: `(tokens [batch, max_len], lengths [batch])`, `eos_id` repeated after a row ends."""
        encoder_outputs, hidden, cell = self.encoder(src, src_lengths)
        context = (encoder_outputs, source_mask(src_mask, src_lengths, src.shape[1]))
        return greedy_decode(self, (hidden, cell), src.shape[0], max_len, sos_id, eos_id, context)


def source_mask(src_mask, src_lengths, src_len):
    """`src_mask`, else the positions before `src_lengths`, else None."""
    if src_mask is not None or src_lengths is None:
        return src_mask
    return torch.arange(src_len)[None, :] < torch.as_tensor(src_lengths)[:, None]
