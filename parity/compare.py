"""Run a PyTorch module and its flaxseq twin on the same inputs; compare outputs and gradients.

The loss whose gradients are compared is `sum_i sum(w_i * out_i)` over every floating output
(final states included), with fixed random weights `w_i`. Gradients are taken with respect to
every parameter, every floating input and every initial state: PyTorch's `.grad` (None counts
as zero) against `jax.grad`, mapped to PyTorch's names through the converter. A parameter frozen
in PyTorch (`requires_grad=False`) has no gradient there, so its gradient is not compared (its
value still is, through the outputs); the report's `frozen` lists them and its notes say so.

`compare(..., train=True)` runs both sides in training mode with the same dropout masks
(`parity.dropout`): every dropout module applies a mask drawn from `seed`, and PyTorch's
multi-layer recurrent modules with dropout run layer by layer with the masks flaxseq's layer
drew between its layers.
"""

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import parity.nnx as parity_nnx
from parity import dropout, ties
from parity.convert import to_state_dict

# dtype -> (largest relative error, largest absolute error or None)
TOLERANCES = {np.dtype("float64"): (1e-12, 1e-10), np.dtype("float32"): (1e-5, None)}


@dataclass(frozen=True)
class TensorDiff:
    """How far one flaxseq tensor `a` is from its PyTorch twin `b`."""

    name: str
    max_abs: float  # max |a - b|
    rel: float  # ||a - b|| / ||b||, or max |a| where ||b|| = 0


def tensor_diff(name: str, a, b) -> TensorDiff:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{name}: flaxseq gives shape {a.shape}, PyTorch {b.shape}")
    delta = a - b
    max_abs = float(np.abs(delta).max()) if delta.size else 0.0
    norm = float(np.linalg.norm(b))
    rel = float(np.linalg.norm(delta)) / norm if norm > 0 else (float(np.abs(a).max()) if a.size else 0.0)
    return TensorDiff(name, max_abs, rel)


def _check_outputs_match(names: tuple, flax_out: list, torch_out: list) -> None:
    """The two sides' flattened outputs must pair up one to one, each pair of one shape, before
    either side's loss is formed from them. Raises `ValueError` naming what differs."""
    def shapes(outputs):
        return ", ".join(str(tuple(o.shape)) for o in outputs)

    if len(torch_out) != len(flax_out):
        raise ValueError(
            f"flaxseq returns {len(flax_out)} outputs [{shapes(flax_out)}], PyTorch {len(torch_out)} "
            f"[{shapes(torch_out)}] (torch_call must return what the flaxseq module returns, in its order)"
        )
    for name, a, b in zip(names, flax_out, torch_out, strict=True):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"{name}: flaxseq gives shape {tuple(a.shape)}, PyTorch {tuple(b.shape)}")


@dataclass
class Report:
    """Per-tensor differences of one comparison, in one dtype."""

    dtype: np.dtype
    outputs: list[TensorDiff] = field(default_factory=list)
    gradients: list[TensorDiff] = field(default_factory=list)
    output_dtypes: list[np.dtype] = field(default_factory=list)  # flaxseq's floating outputs
    limits: tuple[float, float | None] | None = None  # (rel, abs); None: TOLERANCES[dtype]
    train: bool = False  # run in training mode, with the same dropout masks on both sides
    dropout_sites: list[str] = field(default_factory=list)  # training: the sites and their calls
    problems: list[str] = field(default_factory=list)  # training: dropout calls that disagree
    frozen: list[str] = field(default_factory=list)  # PyTorch's requires_grad=False parameters: gradients not compared

    @property
    def mode(self) -> str:
        """`'evaluation'`, or `'training (dropout: drop: 2 calls; lstm: 1 call, between layers)'`."""
        if not self.train:
            return "evaluation"
        return f"training (dropout: {'; '.join(self.dropout_sites) or 'no sites'})"

    @property
    def worst_output(self) -> TensorDiff:
        return max(self.outputs, key=lambda d: d.rel)

    @property
    def worst_gradient(self) -> TensorDiff | None:
        return max(self.gradients, key=lambda d: d.rel, default=None)

    def failures(self) -> list[str]:
        """What breaks the tolerance for this dtype; empty when the comparison passes."""
        rtol, atol = self.limits or TOLERANCES[np.dtype(self.dtype)]
        bad = [
            f"{d.name}: rel {d.rel:.2e} (max {rtol:.0e}), abs {d.max_abs:.2e}"
            + ("" if atol is None else f" (max {atol:.0e})")
            for d in self.outputs + self.gradients
            if not (d.rel <= rtol and (atol is None or d.max_abs <= atol))
        ]
        bad += [f"output dtype {dt}, expected {self.dtype}" for dt in self.output_dtypes if dt != self.dtype]
        return bad + self.problems

    def notes(self) -> list[str]:
        """Remarks on a passing comparison that the report should show: the parameters whose
        gradients were not compared, being frozen in PyTorch."""
        if not self.frozen:
            return []
        return [f"gradients not compared: parameters frozen in PyTorch (requires_grad=False): {', '.join(self.frozen)}"]

    @property
    def passed(self) -> bool:
        return not self.failures()


def _is_float(leaf) -> bool:
    return np.issubdtype(np.asarray(leaf).dtype, np.floating)


@contextlib.contextmanager
def modes_and_gradients_kept(module: torch.nn.Module):
    """Within: `module` free to change mode and gradients; after, even on an exception, each
    submodule's `training` flag and each parameter's `.grad` (None, or the user's own tensor with
    its values) are what they were."""
    modes = [(sub, sub.training) for sub in module.modules()]
    grads = [(p, p.grad) for p in module.parameters()]
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training
        for p, grad in grads:
            p.grad = grad


def compare(
    torch_module: torch.nn.Module,
    flax_module: nn.Module,
    variables: Mapping,
    args: tuple,
    kwargs: Mapping | None = None,
    *,
    torch_call: Callable | None = None,
    output_names: tuple[str, ...] | None = None,
    input_names: tuple[str, ...] | None = None,
    seed: int = 0,
    train: bool = False,
    rename: Mapping[str, str] | None = None,
) -> Report:
    """Compare forward outputs and gradients of `torch_module` and `flax_module`.

    Args:
      torch_module, flax_module, variables: the twins, with the same weights.
      args: positional inputs as numpy arrays (nested tuples and None allowed, e.g.
        `(x, (h0, c0))`); floating ones are differentiated, integer ones are passed as they are.
      kwargs: keyword inputs, not differentiated (e.g. `lengths`).
      torch_call: `(module, *args, **kwargs) -> outputs`; default `module(*args, **kwargs)`.
      output_names, input_names: names for the flattened outputs and floating inputs.
      seed: seeds the loss weights, and the dropout masks in training mode.
      train: run both in training mode with the same dropout masks (`parity.dropout`); the
        report's `mode` says so.
      rename: training mode: flaxseq's dropout site name -> PyTorch's module name, where the
        two differ (`{'Dropout_0': 'dropout'}`).

    `flax_module` may be a `flaxseq.nnx` module, with `variables` None (it holds its weights).

    Both run in evaluation mode by default (PyTorch `eval()`, flaxseq `deterministic=True`);
    flaxseq under `jax.jit`. In training mode PyTorch's module runs in `train()`; a linen
    module whose `__call__` takes `deterministic` gets `deterministic=False` (unless `kwargs`
    sets it, which then reaches PyTorch's call too: use `torch_call` to drop it) and the
    `'dropout'` rng; an NNX module runs as a copy in `train()`. Dropout sites seen by one side
    only raise `ValueError` naming them.

    Both modules are left as they were found, after an exception too: PyTorch's submodules in
    their own modes, each parameter's `.grad` what it was (None, or the user's tensor with its
    values); an NNX module is not run itself (a copy is).
    """
    kwargs = dict(kwargs or {})
    nnx_module = isinstance(flax_module, nnx.Module)
    side = None
    if train:  # both modules' dropout masked the same way
        side = dropout.FlaxSide(flax_module, variables, train=True, seed=seed, rename=rename)
        variables, base = side.variables, dropout.base_key(seed)
    elif nnx_module:  # compared through linen's functional form, on a copy in evaluation mode
        flax_module = parity_nnx.AsLinen(flax_module)
        variables = flax_module.variables
    torch_call = torch_call or (lambda module, *a, **k: module(*a, **k))
    leaves, treedef = jax.tree.flatten(args)
    float_index = [i for i, leaf in enumerate(leaves) if _is_float(leaf)]

    def rebuild(float_leaves, convert):
        new = [convert(leaf) for leaf in leaves]
        for i, leaf in zip(float_index, float_leaves, strict=True):
            new[i] = leaf
        return jax.tree.unflatten(treedef, new)

    # flaxseq
    def flax_run(params, float_leaves):  # (outputs, the keep masks drawn in training)
        if side is not None:
            outputs, _, masks = side.apply(params, side.state, base, *rebuild(float_leaves, jnp.asarray), **kwargs)
            return outputs, masks
        return flax_module.apply({**variables, "params": params}, *rebuild(float_leaves, jnp.asarray), **kwargs), {}

    def flax_outputs(params, float_leaves):
        return flax_run(params, float_leaves)[0]

    float_inputs = [jnp.asarray(leaves[i]) for i in float_index]
    out_leaves = jax.tree.leaves(jax.eval_shape(flax_outputs, variables["params"], float_inputs))
    rng = np.random.default_rng(seed)
    weights = [
        rng.standard_normal(o.shape).astype(o.dtype) if np.issubdtype(o.dtype, np.floating) else None
        for o in out_leaves
    ]

    def flax_loss(params, float_leaves):
        outputs, masks = flax_run(params, float_leaves)
        outputs = jax.tree.leaves(outputs)
        return sum(jnp.sum(w * o) for w, o in zip(weights, outputs, strict=True) if w is not None), (outputs, masks)

    grad_fn = jax.jit(jax.value_and_grad(flax_loss, argnums=(0, 1), has_aux=True))
    (_, (flax_out, masks)), (param_grads, input_grads) = grad_fn(variables["params"], float_inputs)

    # PyTorch
    torch_inputs = [torch.from_numpy(np.array(leaves[i])).requires_grad_(True) for i in float_index]
    torch_args = rebuild(torch_inputs, lambda leaf: torch.from_numpy(np.array(leaf)))
    torch_kwargs = {k: (torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
    names = output_names or tuple(f"out[{i}]" for i in range(len(flax_out)))
    with modes_and_gradients_kept(torch_module):  # the user's module: its modes and gradients as they were, after
        torch_module.train(train)
        torch_module.zero_grad(set_to_none=True)
        masked = (
            dropout.torch_side(torch_module, base, side.layer_keys(base, side.state), side.log, masks) if train
            else contextlib.nullcontext()
        )
        with masked as torch_log:
            torch_out = jax.tree.leaves(torch_call(torch_module, *torch_args, **torch_kwargs))
        _check_outputs_match(names, flax_out, torch_out)
        pairs = zip(weights, torch_out, strict=True)
        torch_loss = sum((torch.from_numpy(w) * o).sum() for w, o in pairs if w is not None)
        if torch_loss.requires_grad:  # not when every parameter is frozen and no input is floating
            torch_loss.backward()
        named = list(torch_module.named_parameters(remove_duplicate=False))  # a tied one under each name
        torch_grads = {
            name: (p.grad if p.grad is not None else torch.zeros_like(p)).numpy() for name, p in named
        }
        frozen = [name for name, p in named if not p.requires_grad]

    report = Report(dtype=np.dtype(jax.tree.leaves(variables["params"])[0].dtype), train=train, frozen=frozen)
    if train:
        report.problems = dropout.check_sites(side.log, torch_log, torch_module)
        report.dropout_sites = side.log.summary()
    for name, a, b in zip(names, flax_out, torch_out, strict=True):
        report.outputs.append(tensor_diff(name, a, b.detach().numpy()))
        if _is_float(a):
            report.output_dtypes.append(np.dtype(a.dtype))

    if nnx_module:
        flax_grads = parity_nnx.state_dict_of(param_grads)
    else:
        flax_grads = to_state_dict(flax_module, {"params": param_grads})
    flax_grads = ties.with_aliases(flax_grads, ties.torch_ties(torch_module, flax_grads))  # one parameter, both names
    if set(torch_grads) != set(flax_grads):
        raise ValueError(
            f"parameter names differ: only in flaxseq {sorted(set(flax_grads) - set(torch_grads))}, "
            f"only in PyTorch {sorted(set(torch_grads) - set(flax_grads))}"
        )
    for name in torch_grads:
        if name not in frozen:  # JAX differentiates every parameter; PyTorch not a frozen one
            report.gradients.append(tensor_diff(f"d{name}", flax_grads[name], torch_grads[name]))
    in_names = input_names or tuple(f"input[{i}]" for i in range(len(float_index)))
    for name, a, b in zip(in_names, input_grads, torch_inputs, strict=True):
        grad = b.grad.numpy() if b.grad is not None else np.zeros(b.shape, np.asarray(a).dtype)
        report.gradients.append(tensor_diff(f"d{name}", a, grad))
    return report
