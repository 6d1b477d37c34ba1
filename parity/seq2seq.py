"""Conversion rules and report cases for the encoder-decoder models (`Encoder`, `Decoder`, `Seq2Seq`).

A `ModelCase` builds the PyTorch model with seeded weights, converts it with `from_torch`, and
compares both on random token ids with an explicit mixed teacher-forcing schedule (some steps
feed the true token, some the argmax), so that the greedy path is compared as well. Float32
cases also measure both frameworks against PyTorch in float64 (`parity/conditioning.py`).
"""

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import torch

import flaxseq.seq2seq as fx
import torch_ref.seq2seq as tr
from parity.compare import Report, compare
from parity.conditioning import conditioned_report
from parity.convert import copy_rule, from_torch, torch_dtype

SIZES = ("vocab_size", "embed_dim", "hidden_size", "num_layers")

copy_rule(tr.Encoder, fx.Encoder, SIZES, lambda m: (jnp.zeros((1, 2), jnp.int32),))
copy_rule(
    tr.Decoder, fx.Decoder, SIZES,
    lambda m: (jnp.zeros((1, 1), jnp.int32), *[jnp.zeros((m.num_layers, 1, m.hidden_size), m.param_dtype)] * 2),
)
copy_rule(
    tr.Seq2Seq, fx.Seq2Seq, ("encoder", "decoder"),
    lambda m: (jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32), 0.5, jnp.ones((1,), bool)),
)

# The report's sizes: small, so that every case runs in about a second.
VOCAB, EMBED, HIDDEN, LAYERS = 12, 6, 5, 2
BATCH, SRC_LEN, TRG_LEN = 3, 7, 5
# Steps 1..4 of a 5-token target: teacher-forced, greedy, greedy, (unused).
MIXED_SCHEDULE = np.array([True, False, False, True])


@dataclass(frozen=True)
class Inputs:
    """One model's PyTorch twin and call: what `compare` needs."""

    torch_module: torch.nn.Module
    args: tuple
    kwargs: dict
    output_names: tuple[str, ...]
    input_names: tuple[str, ...]


# model name -> (case, numpy rng) -> Inputs; `parity/attention.py` adds its models.
BUILDERS: dict[str, Callable] = {}
# model name -> what `ModelCase.lengths` adds to its inputs, for the label.
MASK_LABELS = {"Encoder": "src_lengths", "Seq2Seq": "src_lengths"}


@dataclass(frozen=True)
class ModelCase:
    """One tutorial model, one dtype; `lengths` adds source lengths or a source mask (`MASK_LABELS`).

    The seq2seq models run the mixed teacher-forcing schedule (`MIXED_SCHEDULE`, "mixed").
    """

    model: str
    dtype: str = "float64"
    lengths: bool = False

    def label(self) -> str:
        mask = f" {MASK_LABELS[self.model]}" if self.lengths else ""
        return self.model + " mixed" * ("Seq2Seq" in self.model) + mask

    def run(self, seed: int = 0) -> Report:
        torch.manual_seed(seed)
        inputs = BUILDERS[self.model](self, np.random.default_rng(seed))
        flax_module, variables = from_torch(inputs.torch_module)
        report = compare(
            inputs.torch_module, flax_module, variables, inputs.args, inputs.kwargs,
            output_names=inputs.output_names, input_names=inputs.input_names, seed=seed,
        )
        if self.dtype == "float64":
            return report
        return conditioned_report(report, inputs.torch_module, flax_module, variables, inputs.args, inputs.kwargs, seed)


def cast(module: torch.nn.Module, dtype: str) -> torch.nn.Module:
    return module.to(torch_dtype(dtype))


def tokens(rng, *shape) -> np.ndarray:
    return rng.integers(0, VOCAB, shape)


def source_lengths(rng) -> np.ndarray:
    """`[BATCH]` unsorted lengths including 1 and the full `SRC_LEN`."""
    lengths = rng.integers(1, SRC_LEN + 1, BATCH)
    lengths[:2] = (1, SRC_LEN)
    return rng.permutation(lengths)


def _encoder(case, rng):
    kwargs = {"lengths": source_lengths(rng)} if case.lengths else {}
    module = cast(tr.Encoder(VOCAB, EMBED, HIDDEN, LAYERS), case.dtype)
    return Inputs(module, (tokens(rng, BATCH, SRC_LEN),), kwargs, ("outputs", "hidden", "cell"), ())


def _decoder(case, rng):
    dtype = np.dtype(case.dtype)
    state = [rng.standard_normal((LAYERS, BATCH, HIDDEN)).astype(dtype) for _ in range(2)]
    module = cast(tr.Decoder(VOCAB, EMBED, HIDDEN, LAYERS), case.dtype)
    return Inputs(module, (tokens(rng, BATCH, 1), *state), {}, ("prediction", "hidden", "cell"), ("hidden", "cell"))


def _seq2seq(case, rng):
    module = cast(
        tr.Seq2Seq(tr.Encoder(VOCAB, EMBED, HIDDEN, LAYERS), tr.Decoder(VOCAB, EMBED, HIDDEN, LAYERS)), case.dtype
    )
    kwargs = {"teacher_forcing": MIXED_SCHEDULE}
    if case.lengths:
        kwargs["src_lengths"] = source_lengths(rng)
    return Inputs(module, (tokens(rng, BATCH, SRC_LEN), tokens(rng, BATCH, TRG_LEN)), kwargs, ("outputs",), ())


BUILDERS.update(Encoder=_encoder, Decoder=_decoder, Seq2Seq=_seq2seq)


def seq2seq_cases() -> list[ModelCase]:
    """The report's cases for `Encoder`, `Decoder` and `Seq2Seq`, float64 then float32."""
    return [
        ModelCase(model, dtype, lengths)
        for dtype in ("float64", "float32")
        for model, lengths in (("Encoder", True), ("Decoder", False), ("Seq2Seq", False), ("Seq2Seq", True))
    ]
