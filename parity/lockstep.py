"""Lockstep training: the tutorial's PyTorch loop and flaxseq's train step, side by side.

Both start from the same (converted) weights and see the same batches, with dropout off,
PyTorch's clipping rule (`flaxseq.optim.clip_grad_norm_torch`) and Adam on both sides; the
per-step losses and the final parameters are compared.
"""

from dataclasses import dataclass

import jax
import numpy as np
import torch

import torch_ref
from flaxseq.optim import adam_with_clipping
from flaxseq.tasks import classify
from flaxseq.train import Trainer
from parity.compare import Report, tensor_diff
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

    def label(self) -> str:
        return f"lockstep TextClassifier L{self.num_layers} {self.steps} steps"

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
    torch_model = torch_ref.TextClassifier(case.vocab_size, 6, 5, case.num_layers, 3, dropout=0.0)
    torch_model = torch_model.to(torch_dtype(case.dtype))
    flax_model, variables = from_torch(torch_model)

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
