"""A finished run, loaded back from its folder alone: `load_run(folder)`, then predict, evaluate, export.

    run = flaxseq.load_run("runs/classify")
    run.predict(["some text", "another text"])   # ['business', 'tech']
    run.evaluate()                               # {'test_accuracy': ..., 'test_loss': ...}
    run.model, run.params                        # the Flax module and its best validation parameters

Everything but `evaluate` reads only the folder (`flaxseq.tasks.folder`: configuration,
vocabularies, checkpoint), so a run folder moved or copied to another machine predicts the
same. `evaluate` reads the test data that the run names and refuses data whose fingerprint
differs from the one recorded when it trained.
"""

import dataclasses
import importlib
import pathlib
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from flaxseq.checkpoint import load_checkpoint
from flaxseq.optim import adam_with_clipping
from flaxseq.tasks import folder
from flaxseq.tasks.folder import CHECKPOINT_DIR, CONFIG_FILE, RUN_FILE, TASKS
from flaxseq.tasks.run import init_params, optimizer
from flaxseq.train import Trainer, TrainState


@dataclasses.dataclass
class SavedRun:
    """A trained run: its task module, config, vocabularies (`prepared`, without data), the
    model and its best validation parameters."""

    task: Any  # the task's module
    config: Any
    prepared: Any
    model: Any
    params: Any
    folder: pathlib.Path
    manifest: dict

    def predict(self, texts: list[str], warn=None) -> list[str]:
        """The label (classify), tags (tag) or phonemes (seq2seq) of each text, in order.

        Every text must hold at least one word. `warn(message)` is called for a text the model
        read only in part (longer than the run's `max_length`); by default a `UserWarning`."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of str, got a single str")
        texts = list(texts)
        if not texts:
            raise ValueError("texts: expected at least one text, got none")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty; expected a text with at least one word")
        warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
        return self.task.predict(self.model, self.params, self.prepared, self.config, texts, warn)

    def evaluate(self, warn=None) -> dict:
        """The test metrics of the best parameters, computed again on the test data the run
        names (`test_data`)."""
        trainer = Trainer(self.task.make_loss(self.model), adam_with_clipping(), self.config.batch_size,
                          jax.devices()[:1])
        return self.task.test_metrics(trainer, self.model, self.params, self.test_data(warn), self.config)

    def test_data(self, warn=None):
        """The run's vocabularies with the test split (`prepared.splits['test']`) read from the
        data the run names; refused if that data is missing or differs from what the run trained
        on. `warn(message)` (default: a `UserWarning`) if the run recorded no fingerprint."""
        items, source = self.task.read_test_data(self.config)
        now = folder.fingerprint(source, items)
        recorded = (self.manifest.get("data") or {}).get(self.task.TEST_DATA)
        if recorded is None:
            (warn or warnings.warn)(f"{self.folder} records no fingerprint of its test data (saved by an earlier "
                                    "flaxseq); the data cannot be checked against what it trained on")
        elif recorded != now:
            raise ValueError(
                f"the test data {source} differs from the data the run in {self.folder} was trained on: "
                f"{now['items']} items, sha256 {now['sha256'][:12]}... now; {recorded['items']} items, "
                f"sha256 {recorded['sha256'][:12]}... recorded in {self.folder / RUN_FILE}"
            )
        return self.task.with_test(self.config, self.prepared, items)


def load_run(folder_path) -> SavedRun:
    """The run saved in `folder_path` by `flaxseq train`: its model rebuilt from the folder's
    configuration and vocabularies, its best validation parameters restored from the checkpoint
    (hash, structure and shapes checked). Reads nothing outside the folder."""
    run = pathlib.Path(folder_path)
    config_path = run / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{run} is not a run folder: {config_path.name} is missing")
    if folder.kind(run) not in ("run", "legacy"):
        raise ValueError(f"{run} is not a flaxseq run folder: {RUN_FILE} is missing or is not a flaxseq manifest")
    manifest = folder.manifest(run)
    saved = folder.read_json(config_path)
    if not isinstance(saved, dict) or saved.get("task") not in TASKS:
        got = saved.get("task") if isinstance(saved, dict) else saved
        raise ValueError(f"{config_path}: task must be one of {TASKS}, got {got!r}")
    task = importlib.import_module(f"flaxseq.tasks.{saved.pop('task')}")
    config_type = next(v for v in vars(task).values() if isinstance(v, type) and getattr(v, "task", None))
    known = {f.name for f in dataclasses.fields(config_type)}
    if set(saved) - known:
        raise ValueError(f"{config_path}: unknown options {sorted(set(saved) - known)} for task {config_type.task!r}")
    config = config_type(**saved)
    prepared = task.load_vocabularies(run)
    model = task.build_model(config, prepared)
    init = getattr(task, "init_params", init_params)
    tx = optimizer(config, 1)  # the structure of the optimizer state, which is all the template needs

    def template():
        params = init(model, task.example(config), config.seed)
        return {"state": TrainState.create(params, tx), "best_params": params}

    arrays, _ = load_checkpoint(run / CHECKPOINT_DIR, jax.eval_shape(template))
    return SavedRun(task, config, prepared, model, jax.tree.map(jnp.asarray, arrays["best_params"]), run, manifest)


def export(run: SavedRun, path: pathlib.Path) -> None:
    """Write the best parameters as a PyTorch state_dict (`torch.save`) that the `torch_ref`
    twin loads with `load_state_dict`. Needs PyTorch (`pip install 'flaxseq[torch]'`)."""
    try:
        from parity.export import save_torch_state_dict
    except ImportError as error:
        raise ModuleNotFoundError(f"flaxseq export needs PyTorch and the parity package ({error}); "
                                  "install flaxseq[torch]") from error
    save_torch_state_dict(run.model, {"params": run.params}, path)
