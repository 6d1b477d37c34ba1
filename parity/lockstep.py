"""Lockstep training: a PyTorch module and its flaxseq twin trained side by side.

`LockstepCase`: the tutorial's PyTorch loop and flaxseq's train step for the `TextClassifier`.
Both start from the same (converted) weights and see the same batches, with dropout off,
PyTorch's clipping rule (`flaxseq.optim.clip_grad_norm_torch`) and Adam on both sides; the
per-step losses and the final parameters are compared. With `dropout > 0` the case trains in
training mode through `lockstep` instead, by the same rule (Adam, cross-entropy, clipping at
1), the masks shared.

`lockstep`: any (PyTorch module, twin) pair, SGD or Adam, optionally in training mode with the
same dropout masks on both sides at every step (`parity.dropout`, as `compare(train=True)`).
"""

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import parity.nnx as parity_nnx
import torch_ref
from flaxseq.optim import adam_with_clipping, clip_grad_norm_torch
from flaxseq.tasks import classify
from flaxseq.train import Trainer
from parity import dropout
from parity.compare import Report, modes_and_gradients_kept, tensor_diff
from parity.convert import from_torch, to_state_dict, torch_dtype
from torch_ref.train import train_text_classifier

# dtype -> largest relative error of the step losses and final parameters
LOCKSTEP_TOLERANCES = {np.dtype("float64"): 1e-9, np.dtype("float32"): 1e-4}


@dataclass(frozen=True)
class LockstepCase:
    """`TextClassifier` trained for `steps` steps by both frameworks on random token data."""

    dtype: str = "float64"
    steps: int = 100
    batch_size: int = 8
    vocab_size: int = 30
    time: int = 12
    num_layers: int = 2
    dropout: float = 0.0  # > 0: in training mode, the same dropout masks on both sides

    def label(self) -> str:
        return f"lockstep TextClassifier L{self.num_layers} {self.steps} steps" + (
            f" dropout {self.dropout}" if self.dropout else ""
        )

    def run(self, seed: int = 0) -> Report:
        return run_lockstep(self, seed)


def run_lockstep(case: LockstepCase, seed: int = 0) -> Report:
    rng = np.random.default_rng(seed)
    n = case.steps * case.batch_size
    lengths = rng.integers(1, case.time + 1, n)
    ids = rng.integers(1, case.vocab_size, (n, case.time)) * (np.arange(case.time) < lengths[:, None])
    labels = rng.integers(0, 3, n)
    batches = [slice(k * case.batch_size, (k + 1) * case.batch_size) for k in range(case.steps)]

    torch.manual_seed(seed)
    torch_model = torch_ref.TextClassifier(case.vocab_size, 6, 5, case.num_layers, 3, dropout=case.dropout)
    torch_model = torch_model.to(torch_dtype(case.dtype))
    flax_model, variables = from_torch(torch_model)
    if case.dropout:  # the tutorial's forward (no lengths), its loss, Adam and clipping
        return lockstep(
            torch_model, flax_model, variables, [((ids[s],), labels[s]) for s in batches],
            torch_loss=torch.nn.CrossEntropyLoss(), flax_loss=_cross_entropy, lr=1e-3, optimizer="adam",
            max_grad_norm=1.0, seed=seed, rename={"Dropout_0": "dropout"},  # flaxseq's one nn.Dropout
        )

    loader = [(torch.from_numpy(ids[s]), torch.from_numpy(labels[s])) for s in batches]
    _, torch_losses = train_text_classifier(torch_model, loader, epochs=1, lr=1e-3, max_grad_norm=1.0)

    loss_fn = classify.make_loss(flax_model)

    def full_length_loss(params, batch, key):  # the tutorial's forward: no lengths
        return loss_fn(params, {**batch, "lengths": np.full(len(batch["ids"]), case.time)}, key)

    trainer = Trainer(full_length_loss, adam_with_clipping(1e-3, 1.0, clipping="torch"), case.batch_size,
                      jax.devices()[:1])
    state = trainer.init_state(variables["params"])
    flax_losses = []
    for step, s in enumerate(batches):
        batch = trainer.put({"ids": ids[s], "lengths": lengths[s], "labels": labels[s]})
        state, loss, _ = trainer.train_step(state, batch, jax.random.key(step))  # dropout is 0: key unused
        flax_losses.append(float(loss))

    report = Report(dtype=np.dtype(case.dtype), limits=(LOCKSTEP_TOLERANCES[np.dtype(case.dtype)], None))
    report.outputs.append(tensor_diff("step losses", flax_losses, torch_losses))
    final = to_state_dict(flax_model, {"params": state.params})
    for name, value in torch_model.state_dict().items():
        report.gradients.append(tensor_diff(f"final {name}", final[name], value.numpy()))
    return report


OPTIMIZERS = ("sgd", "adam")


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _optimizers(name: str, lr: float, max_grad_norm: float | None, torch_params):
    """PyTorch's optimizer and its optax twin (PyTorch's Adam defaults), clipping first."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if name == "sgd":
        tx, opt = optax.sgd(lr), torch.optim.SGD(torch_params, lr=lr)
    else:
        tx, opt = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8), torch.optim.Adam(torch_params, lr=lr)
    if max_grad_norm is not None:
        tx = optax.chain(clip_grad_norm_torch(max_grad_norm), tx)
    return tx, opt


def _to_torch(tree):
    return jax.tree.map(lambda a: torch.from_numpy(np.array(a)) if isinstance(a, np.ndarray | jax.Array) else a, tree)


def lockstep(
    torch_module: torch.nn.Module,
    flax_module,
    variables: Mapping | None,
    batches: Sequence[tuple[tuple, object]],
    *,
    torch_loss: Callable,
    flax_loss: Callable,
    lr: float,
    optimizer: str = "sgd",
    max_grad_norm: float | None = None,
    train: bool = True,
    seed: int = 0,
    kwargs: Mapping | None = None,
    torch_call: Callable | None = None,
    rename: Mapping[str, str] | None = None,
) -> Report:
    """Train `torch_module` and its twin for one step per batch; compare the step losses and
    the final parameters.

    Args:
      torch_module, flax_module, variables: the twins, with the same weights; `flax_module` a
        linen module with its `variables`, or a `flaxseq.nnx` module with `variables` None.
        Neither is changed: flaxseq's parameters are trained as a copy, PyTorch's module in place.
      batches: `(args, targets)` per step: `args` the positional inputs as numpy arrays (as
        `compare` takes them), `targets` any pytree of numpy arrays for the losses.
      torch_loss, flax_loss: `(outputs, targets) -> scalar`, each in its framework (`targets` as
        torch tensors, or JAX arrays).
      lr, optimizer: `'sgd'` (`torch.optim.SGD`, `optax.sgd`) or `'adam'` (`torch.optim.Adam`,
        `optax.adam` with PyTorch's defaults), at learning rate `lr`.
      max_grad_norm: clip first, by PyTorch's rule (`torch.nn.utils.clip_grad_norm_`,
        `flaxseq.optim.clip_grad_norm_torch`); None: no clipping.
      train: training mode, with the same dropout masks on both sides (`parity.dropout`), drawn
        afresh at every step from `seed` and the step; False: evaluation mode.
      kwargs: keyword inputs given to both calls at every step (e.g. `lengths`).
      torch_call: `(module, *args, **kwargs) -> outputs`; default `module(*args, **kwargs)`.
      rename: flaxseq's dropout site name -> PyTorch's module name, where the two differ.

    Returns a `Report`: `outputs` holds the step losses, `gradients` the final parameters
    (`final {name}`, PyTorch's names), under `LOCKSTEP_TOLERANCES`. Dropout sites that differ
    raise `ValueError` as in `compare(train=True)`.

    >>> report = lockstep(torch_lm, flax_lm, variables, [((ids, ), targets)] * 3, torch_loss=...,
    ...                   flax_loss=..., lr=0.1)
    """
    kwargs = dict(kwargs or {})
    torch_call = torch_call or (lambda module, *a, **k: module(*a, **k))
    side = dropout.FlaxSide(flax_module, variables, train=train, seed=seed, rename=rename)
    params, state = side.variables["params"], side.state
    tx, opt = _optimizers(optimizer, lr, max_grad_norm, torch_module.parameters())
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, state, base, args, targets):
        def loss_of(params):
            outputs, new_state, masks = side.apply(params, state, base, *args, **kwargs)
            return flax_loss(outputs, targets), (new_state, masks)

        (loss, (state, masks)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, state, loss, masks

    flax_losses, torch_losses, problems = [], [], []
    with modes_and_gradients_kept(torch_module):  # trained in place; its modes and gradients as they were, after
        torch_module.train(train)
        for index, (args, targets) in enumerate(batches):
            base = dropout.base_key(seed, index)
            layer_keys = side.layer_keys(base, state) if train else None
            jax_args = jax.tree.map(jnp.asarray, args)
            params, opt_state, state, loss, masks = step(params, opt_state, state, base, jax_args, targets)
            flax_losses.append(float(loss))

            opt.zero_grad()
            masked = dropout.torch_side(torch_module, base, layer_keys, side.log, masks) if train else (
                contextlib.nullcontext())
            with masked as torch_log:
                outputs = torch_call(torch_module, *_to_torch(tuple(args)), **_to_torch(kwargs))
            loss = torch_loss(outputs, _to_torch(targets))
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(torch_module.parameters(), max_grad_norm)
            opt.step()
            torch_losses.append(loss.item())
            if train:
                found = dropout.check_sites(side.log, torch_log, torch_module)
                problems += [f"step {index}: {p}" for p in found]

    dtype = np.dtype(jax.tree.leaves(params)[0].dtype)
    report = Report(dtype=dtype, limits=(LOCKSTEP_TOLERANCES[dtype], None), train=train, problems=problems,
                    dropout_sites=side.log.summary() if train else [])
    report.outputs.append(tensor_diff("step losses", flax_losses, torch_losses))
    final = parity_nnx.state_dict_of(params) if side.is_nnx else to_state_dict(flax_module, {"params": params})
    for name, value in torch_module.named_parameters():  # tied weights: once, under their first name
        if name not in final:
            raise ValueError(f"flaxseq's twin has no parameter {name}")
        report.gradients.append(tensor_diff(f"final {name}", final[name], value.detach().numpy()))
    return report
