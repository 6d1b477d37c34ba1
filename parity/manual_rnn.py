"""Conversion rules for `ManualRNNCell` and `ManualRNN`, and their comparison cases.

Both frameworks name the parameters alike (`rnn_cell.i2h.weight` is
`params['rnn_cell']['i2h']['kernel'].T`), so the rules only copy the constructor arguments.
"""

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import torch

import flaxseq
import torch_ref
from parity.compare import Report, compare
from parity.convert import copy_rule, from_torch, torch_dtype

copy_rule(
    torch_ref.ManualRNNCell, flaxseq.ManualRNNCell, ("input_size", "hidden_size"),
    lambda m: (jnp.zeros((1, m.input_size), m.param_dtype), jnp.zeros((1, m.hidden_size), m.param_dtype)),
)
copy_rule(
    torch_ref.ManualRNN, flaxseq.ManualRNN, ("input_size", "hidden_size", "output_size"),
    lambda m: (jnp.zeros((1, 1, m.input_size), m.param_dtype),),
)


@dataclass(frozen=True)
class ManualRNNCase:
    """`ManualRNNCell` on one step or `ManualRNN` on a sequence, with seeded weights and inputs."""

    model: str  # "ManualRNNCell" or "ManualRNN"
    dtype: str = "float64"
    input_size: int = 6
    hidden_size: int = 5
    output_size: int = 4
    batch: int = 3
    time: int = 6

    def label(self) -> str:
        return self.model

    def torch_module(self) -> torch.nn.Module:
        if self.model == "ManualRNNCell":
            return torch_ref.ManualRNNCell(self.input_size, self.hidden_size)
        return torch_ref.ManualRNN(self.input_size, self.hidden_size, self.output_size)

    def inputs(self, rng: np.random.Generator):
        """(args, input names): `(x, h_prev)` for the cell, `(x,)` for the model."""
        dtype = np.dtype(self.dtype)
        if self.model == "ManualRNNCell":
            x = rng.standard_normal((self.batch, self.input_size)).astype(dtype)
            h_prev = rng.standard_normal((self.batch, self.hidden_size)).astype(dtype)
            return (x, h_prev), ("x", "h_prev")
        x = rng.standard_normal((self.batch, self.time, self.input_size)).astype(dtype)
        return (x,), ("x",)

    def output_names(self) -> tuple[str, ...]:
        return ("h",) if self.model == "ManualRNNCell" else ("outputs", "h")

    def run(self, seed: int = 0) -> Report:
        torch.manual_seed(seed)
        torch_module = self.torch_module().to(torch_dtype(self.dtype))
        flax_module, variables = from_torch(torch_module)
        args, input_names = self.inputs(np.random.default_rng(seed))
        return compare(
            torch_module, flax_module, variables, args,
            output_names=self.output_names(), input_names=input_names, seed=seed,
        )


def model_cases() -> list[ManualRNNCase]:
    """The report's cases: the cell and the model, float64 and float32."""
    models = ("ManualRNNCell", "ManualRNN")
    return [ManualRNNCase(model, dtype=dtype) for dtype in ("float64", "float32") for model in models]
