"""Conversion rules for the classifiers, and their comparison cases.

The rules copy the constructor arguments, which both frameworks keep as attributes of the same
names, with one exception: PyTorch's `LSTMClassifier.dropout` and `TextClassifier.dropout`
are the `nn.Dropout` modules, whose rate is `dropout.p`.
"""

import dataclasses
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import torch

import flaxseq
import flaxseq.nnx
import torch_ref
from parity.compare import Report, compare
from parity.convert import copy_rule, from_torch, module_dtype, register, torch_dtype
from parity.nnx import nnx_copy_rule

TOKEN_FIELDS = ("vocab_size", "embed_dim", "hidden_size", "num_layers", "num_classes", "dropout")
FEATURE_FIELDS = ("input_size", "hidden_size", "num_layers", "num_classes")


def token_args(module) -> tuple:
    """`init` arguments of a model over token ids: one batch of one token."""
    return (jnp.zeros((1, 1), jnp.int32),)


def feature_args(module) -> tuple:
    """`init` arguments of a model over features `[batch, time, input_size]`."""
    return (jnp.zeros((1, 1, module.input_size), module.param_dtype),)


def _dropout_rate(module) -> float:
    """The rate of a dropout module: torch's `p`, NNX's `rate`."""
    return module.p if isinstance(module, torch.nn.Dropout) else module.rate


def dropout_rule(torch_type: type, flax_type: type, fields: tuple[str, ...], example_args):
    """`copy_rule`, except that the rate is read from PyTorch's `dropout` module as `dropout.p`."""
    rule = copy_rule(torch_type, flax_type, fields, example_args)

    def to_flax(module):
        config = {f: getattr(module, f) for f in fields if f != "dropout"}
        return flax_type(**config, dropout=module.dropout.p, param_dtype=jnp.dtype(module_dtype(module)))

    return register(dataclasses.replace(rule, to_flax=to_flax))


dropout_rule(torch_ref.LSTMClassifier, flaxseq.LSTMClassifier, TOKEN_FIELDS, token_args)
dropout_rule(torch_ref.TextClassifier, flaxseq.TextClassifier, TOKEN_FIELDS, token_args)
nnx_copy_rule(
    torch_ref.TextClassifier, flaxseq.nnx.TextClassifier,
    {**{f: f for f in TOKEN_FIELDS if f != "dropout"}, "dropout": lambda m: _dropout_rate(m.dropout)},
)
copy_rule(torch_ref.BiLSTM, flaxseq.BiLSTM, FEATURE_FIELDS, feature_args)
copy_rule(
    torch_ref.PackedLSTM, flaxseq.PackedLSTM, FEATURE_FIELDS,
    lambda m: (*feature_args(m), jnp.ones((1,), jnp.int32)),
)

TOKEN_MODELS = ("LSTMClassifier", "TextClassifier")
FEATURE_MODELS = ("BiLSTM", "PackedLSTM")


def random_lengths(rng: np.random.Generator, batch: int, time: int) -> np.ndarray:
    """`[batch]` lengths in [1, time], unsorted, holding 1 and `time` (for a batch of at least 2)."""
    lengths = rng.integers(1, time + 1, batch)
    lengths[:2] = (1, time)[:batch]
    return rng.permutation(lengths)


def random_tokens(rng: np.random.Generator, vocab_size: int, lengths: np.ndarray, time: int) -> np.ndarray:
    """`[batch, time]` int64 ids in [1, vocab_size) within each length and 0 (padding) past it;
    the largest id `vocab_size - 1` appears."""
    ids = rng.integers(1, vocab_size, (len(lengths), time))
    ids[0, 0] = vocab_size - 1
    return np.where(np.arange(time)[None, :] < lengths[:, None], ids, 0)


@dataclass(frozen=True)
class ClassifierCase:
    """One classifier with seeded weights and random inputs; `lengths` passes the sequences'
    lengths (PackedLSTM always takes them; BiLSTM never)."""

    model: str  # one of TOKEN_MODELS or FEATURE_MODELS
    lengths: bool = False
    dtype: str = "float64"
    num_layers: int = 2
    vocab_size: int = 20
    embed_dim: int = 6  # the input size of BiLSTM and PackedLSTM
    hidden_size: int = 5
    num_classes: int = 4
    batch: int = 3
    time: int = 6

    def __post_init__(self):
        if self.model == "BiLSTM" and self.lengths:
            raise ValueError("BiLSTM takes no lengths")
        if self.model == "PackedLSTM" and not self.lengths:
            raise ValueError("PackedLSTM always takes lengths")

    def label(self) -> str:
        return " ".join([self.model, f"L{self.num_layers}"] + ["lengths"] * self.lengths)

    def torch_module(self) -> torch.nn.Module:
        size = self.vocab_size if self.model in TOKEN_MODELS else self.embed_dim
        args = (self.embed_dim,) if self.model in TOKEN_MODELS else ()
        return getattr(torch_ref, self.model)(size, *args, self.hidden_size, self.num_layers, self.num_classes)

    def inputs(self, rng: np.random.Generator):
        """(args, kwargs, input names): token ids or random features, and lengths."""
        lengths = random_lengths(rng, self.batch, self.time)
        if self.model in TOKEN_MODELS:
            args, names = (random_tokens(rng, self.vocab_size, lengths, self.time),), ()
        else:
            x = rng.standard_normal((self.batch, self.time, self.embed_dim)).astype(np.dtype(self.dtype))
            args, names = (x,), ("x",)
        return args, ({"lengths": lengths} if self.lengths else {}), names

    def run(self, seed: int = 0) -> Report:
        torch.manual_seed(seed)
        torch_module = self.torch_module().to(torch_dtype(self.dtype))
        flax_module, variables = from_torch(torch_module)
        args, kwargs, input_names = self.inputs(np.random.default_rng(seed))
        return compare(
            torch_module, flax_module, variables, args, kwargs,
            output_names=("logits",), input_names=input_names, seed=seed,
        )


def model_cases() -> list[ClassifierCase]:
    """The report's cases: every classifier, with and without lengths where it takes them."""
    cases = []
    for dtype in ("float64", "float32"):
        for model in TOKEN_MODELS:
            cases += [ClassifierCase(model, dtype=dtype), ClassifierCase(model, lengths=True, dtype=dtype)]
        cases += [ClassifierCase("BiLSTM", dtype=dtype), ClassifierCase("PackedLSTM", lengths=True, dtype=dtype)]
    return cases
