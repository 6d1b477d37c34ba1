"""Conversion rule for `GRUTagger`, and its comparison cases."""

from dataclasses import dataclass

import numpy as np
import torch

import flaxseq
import torch_ref
from parity.classifiers import random_lengths, random_tokens, token_args
from parity.compare import Report, compare
from parity.convert import copy_rule, from_torch, torch_dtype

copy_rule(
    torch_ref.GRUTagger, flaxseq.GRUTagger, ("vocab_size", "embed_dim", "hidden_size", "num_layers", "num_tags"),
    token_args,
)


@dataclass(frozen=True)
class TaggerCase:
    """`GRUTagger` with seeded weights on random padded token ids, with or without lengths."""

    lengths: bool = False
    dtype: str = "float64"
    num_layers: int = 2
    vocab_size: int = 20
    embed_dim: int = 6
    hidden_size: int = 5
    num_tags: int = 4
    batch: int = 3
    time: int = 6

    def label(self) -> str:
        return " ".join(["GRUTagger", f"L{self.num_layers}"] + ["lengths"] * self.lengths)

    def torch_module(self) -> torch.nn.Module:
        return torch_ref.GRUTagger(self.vocab_size, self.embed_dim, self.hidden_size, self.num_layers, self.num_tags)

    def inputs(self, rng: np.random.Generator):
        """(args, kwargs): token ids `[batch, time]`, padded with 0, and maybe their lengths."""
        lengths = random_lengths(rng, self.batch, self.time)
        ids = random_tokens(rng, self.vocab_size, lengths, self.time)
        return (ids,), ({"lengths": lengths} if self.lengths else {})

    def run(self, seed: int = 0) -> Report:
        torch.manual_seed(seed)
        torch_module = self.torch_module().to(torch_dtype(self.dtype))
        flax_module, variables = from_torch(torch_module)
        args, kwargs = self.inputs(np.random.default_rng(seed))
        return compare(torch_module, flax_module, variables, args, kwargs, output_names=("scores",), seed=seed)


def model_cases() -> list[TaggerCase]:
    """The report's cases: with and without lengths, float64 and float32."""
    return [TaggerCase(lengths, dtype) for dtype in ("float64", "float32") for lengths in (False, True)]
