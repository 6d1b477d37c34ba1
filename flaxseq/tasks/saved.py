"""A finished run, loaded back from its folder: evaluate, predict, export.

The folder holds `config.json` (the task and its options), the vocabularies and the checkpoint;
the model is rebuilt from the configuration and the best validation parameters are restored.
"""

import dataclasses
import importlib
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from flaxseq.checkpoint import load_checkpoint
from flaxseq.optim import adam_with_clipping
from flaxseq.tasks.run import CHECKPOINT_DIR, init_params, optimizer
from flaxseq.train import Trainer, TrainState

TASKS = ("classify", "tag", "seq2seq")


@dataclasses.dataclass
class SavedRun:
    task: Any  # the task's module
    config: Any
    prepared: Any
    model: Any
    params: Any

    def evaluate(self) -> dict:
        """The test metrics of the best parameters, computed again."""
        loss_fn = self.task.make_loss(self.model)
        trainer = Trainer(loss_fn, adam_with_clipping(), self.config.batch_size, jax.devices()[:1])
        return self.task.test_metrics(trainer, self.model, self.params, self.prepared, self.config)

    def predict(self, texts: list[str]) -> list[str]:
        return self.task.predict(self.model, self.params, self.prepared, self.config, texts)


def load_run(folder: pathlib.Path) -> SavedRun:
    """Rebuild the model of the run in `folder` and restore its best validation parameters."""
    config_path = folder / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{folder} is not a run folder: {config_path.name} is missing")
    saved = json.loads(config_path.read_text())
    if saved.get("task") not in TASKS:
        raise ValueError(f"{config_path}: task must be one of {TASKS}, got {saved.get('task')!r}")
    task = importlib.import_module(f"flaxseq.tasks.{saved.pop('task')}")
    config_type = next(v for v in vars(task).values() if isinstance(v, type) and getattr(v, "task", None))
    config = config_type(**saved)
    prepared = task.prepare(config)
    model = task.build_model(config, prepared)
    params = getattr(task, "init_params", init_params)(model, prepared.splits["train"], config.seed)
    tx = optimizer(config, 1)  # the structure of the optimizer state, which is all the template needs
    template = {"state": TrainState.create(params, tx), "best_params": params}
    arrays, _ = load_checkpoint(folder / CHECKPOINT_DIR, template)
    return SavedRun(task, config, prepared, model, jax.tree.map(jnp.asarray, arrays["best_params"]))


def export(run: SavedRun, path: pathlib.Path) -> None:
    """Write the best parameters as a PyTorch state_dict (`torch.save`) that the `torch_ref`
    twin loads with `load_state_dict`. Needs PyTorch (`pip install 'flaxseq[torch]'`)."""
    try:
        from parity.export import save_torch_state_dict
    except ImportError as error:
        raise SystemExit(f"flaxseq export needs PyTorch and the parity package ({error}); "
                         "install flaxseq[torch]") from error
    save_torch_state_dict(run.model, {"params": run.params}, path)
