"""Conversion rules for the layers and cells, and PyTorch's side of their call.

A flaxseq layer's fields have the names of the PyTorch module's attributes, so a rule copies
them across; PyTorch's `dtype=` becomes `param_dtype`.
"""

import jax.numpy as jnp
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import flaxseq
import flaxseq.nnx
from parity.convert import copy_rule
from parity.nnx import nnx_copy_rule

_STACK = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")
LAYER_FIELDS = {
    "RNN": (*_STACK, "nonlinearity"),
    "LSTM": (*_STACK, "proj_size"),
    "GRU": _STACK,
    "RNNCell": ("input_size", "hidden_size", "bias", "nonlinearity"),
    "LSTMCell": ("input_size", "hidden_size", "bias"),
    "GRUCell": ("input_size", "hidden_size", "bias"),
}


for _name in ("RNN", "LSTM", "GRU"):
    copy_rule(
        getattr(torch.nn, _name), getattr(flaxseq, _name), LAYER_FIELDS[_name],
        lambda m: (jnp.zeros((1, 1, m.input_size), m.param_dtype),),
    )
for _name in ("RNNCell", "LSTMCell", "GRUCell"):
    copy_rule(
        getattr(torch.nn, _name), getattr(flaxseq, _name), LAYER_FIELDS[_name],
        lambda m: (jnp.zeros((1, m.input_size), m.param_dtype),),
    )


for _name, _fields in LAYER_FIELDS.items():
    nnx_copy_rule(getattr(torch.nn, _name), getattr(flaxseq.nnx, _name), _fields)


def torch_forward(module: torch.nn.Module, input, hx=None, lengths=None):
    """PyTorch's side of `flaxseq.{RNN,LSTM,GRU}.apply(variables, input, hx, lengths=...)`.

    With `lengths`, the input goes through `pack_padded_sequence(enforce_sorted=False)` and the
    output back through `pad_packed_sequence(total_length=T)`, which is what flaxseq's
    `lengths` reproduces.
    """
    if lengths is None:
        return module(input, hx)
    time_steps = input.shape[1 if module.batch_first else 0]
    packed = pack_padded_sequence(
        input, torch.as_tensor(lengths).cpu(), batch_first=module.batch_first, enforce_sorted=False
    )
    output, state = module(packed, hx)
    output, _ = pad_packed_sequence(output, batch_first=module.batch_first, total_length=time_steps)
    return output, state
