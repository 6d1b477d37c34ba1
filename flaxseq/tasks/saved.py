"""A finished run, loaded back from its folder alone: `load_run(folder)`, then predict, evaluate, export.

    run = flaxseq.load_run("runs/classify")
    run.predict(["some text", "another text"])   # ['business', 'tech']
    run.evaluate()                               # {'test_accuracy': ..., 'test_loss': ...}
    run.model, run.params                        # the Flax module and its best validation parameters

Everything but `evaluate` reads only the folder (`flaxseq.tasks.folder`: configuration,
vocabularies, checkpoint), so a run folder moved or copied to another machine predicts the
same. `evaluate` reads the test data that the run names, or the same data at another path
(`evaluate(data=PATH)`, `flaxseq evaluate RUN --data PATH`), and refuses data whose
fingerprint differs from the one recorded when it trained. A config.json that differs from
the configuration its checkpoint was trained with (an edited file) is refused, naming each
difference.
"""

import dataclasses
import importlib
import os
import pathlib
import typing
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from flaxseq.checkpoint import has_checkpoint, load_checkpoint, read_meta
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

    def evaluate(self, data=None, warn=None) -> dict:
        """The test metrics of the best parameters, computed again on the test data the run
        names, or on `data`, the same data at another path (`test_data`)."""
        trainer = Trainer(self.task.make_loss(self.model), adam_with_clipping(), self.config.batch_size,
                          jax.devices()[:1])
        return self.task.test_metrics(trainer, self.model, self.params, self.test_data(data, warn), self.config)

    def test_data(self, data=None, warn=None):
        """The run's vocabularies with the test split (`prepared.splits['test']`) read from the
        data the run names (classify: its `--data`; tag: its `--test`), or from `data`, a path
        that replaces it; refused if that data is missing or differs from what the run trained
        on. `warn(message)` (default: a `UserWarning`) if the run recorded no fingerprint."""
        option, config = self.task.TEST_OPTION, self.config
        if data is not None:
            if option is None:
                raise ValueError(f"data: a {config.task} run reads its test data from a package, not a path; "
                                 f"got {data}")
            if not pathlib.Path(data).exists():
                raise FileNotFoundError(f"data: {data} does not exist; expected the run's test data at a new path")
            config = dataclasses.replace(config, **{option: str(pathlib.Path(data).resolve())})
        elif option is not None and getattr(config, option) is not None and not pathlib.Path(
                getattr(config, option)).exists():
            raise FileNotFoundError(
                f"the test data of the run in {self.folder}, {getattr(config, option)}, does not exist; if it moved, "
                "pass its new path (flaxseq evaluate RUN --data PATH, or run.evaluate(data=PATH))"
            )
        items, source = self.task.read_test_data(config)
        now = folder.fingerprint(source, items)
        recorded = (self.manifest.get("data") or {}).get(self.task.TEST_DATA)
        if recorded is None:
            (warn or warnings.warn)(f"{self.folder} records no fingerprint of its test data (saved by an earlier "
                                    "flaxseq); the data cannot be checked against what it trained on")
        elif not folder.same_data(recorded, now):
            raise ValueError(
                f"the test data {source} differs from the data the run in {self.folder} was trained on: "
                f"{folder.describe(now)} now; {folder.describe(recorded)} recorded in {self.folder / RUN_FILE}"
            )
        return self.task.with_test(config, self.prepared, items)


def load_run(folder_path) -> SavedRun:
    """The run saved in `folder_path` by `flaxseq train`: its model rebuilt from the folder's
    configuration and vocabularies, its best validation parameters restored from the checkpoint
    (hash, structure and shapes checked). Reads nothing outside the folder."""
    run = pathlib.Path(folder_path)
    config_path = run / CONFIG_FILE
    if not run.exists():
        raise FileNotFoundError(f"{run} does not exist; expected a run folder written by flaxseq train")
    if not run.is_dir():
        raise NotADirectoryError(f"{run} is a file; expected a run folder written by flaxseq train")
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
    check_types(config_path, config_type, saved)
    config = config_type(**saved)
    checkpoint = run / CHECKPOINT_DIR
    if not has_checkpoint(checkpoint):
        raise FileNotFoundError(f"{run} holds no checkpoint: the run stopped before its first epoch ended")
    differences = folder.config_differences(config, read_meta(checkpoint).get("config", {}),
                                            "the checkpoint has", f"{CONFIG_FILE} has")
    if differences:
        raise ValueError(f"{config_path} differs from the configuration its checkpoint was trained with (was it "
                         "edited?):\n  " + "\n  ".join(differences))
    prepared = task.load_vocabularies(run)
    model = task.build_model(config, prepared)
    init = getattr(task, "init_params", init_params)
    tx = optimizer(config, 1)  # the structure of the optimizer state, which is all the template needs

    def template():
        params = init(model, task.example(config), config.seed)
        return {"state": TrainState.create(params, tx), "best_params": params}

    arrays, _ = load_checkpoint(checkpoint, jax.eval_shape(template))
    return SavedRun(task, config, prepared, model, jax.tree.map(jnp.asarray, arrays["best_params"]), run, manifest)


def check_types(config_path: pathlib.Path, config_type, saved: dict) -> None:
    """Refuse a config.json option whose value is not of its field's type (`"hidden_size": "64"`)."""
    hints = typing.get_type_hints(config_type)
    for name, value in saved.items():
        allowed = typing.get_args(hints[name]) or (hints[name],)
        if float in allowed:
            allowed = (*allowed, int)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ValueError(f"{config_path}: {name} must be {names}, got {value!r}")


def export(run: SavedRun, path, overwrite: bool = False) -> None:
    """Write the best parameters as a PyTorch state_dict (`torch.save`) that the `torch_ref`
    twin loads with `load_state_dict`. An existing file is replaced only with `overwrite`, and
    then in one step (written beside it, then renamed over it). Needs PyTorch
    (`pip install 'flaxseq[torch]'`)."""
    path = pathlib.Path(path)
    if path.resolve().is_relative_to(run.folder.resolve()):
        raise ValueError(f"FILE: {path} is inside the run folder {run.folder}, whose files the run needs; "
                         "write the state_dict elsewhere")
    if path.is_dir():
        raise IsADirectoryError(f"FILE: {path} is a folder; expected the name of the file to write, e.g. model.pt")
    if path.exists() and not overwrite:
        raise FileExistsError(f"FILE: {path} exists; pass --overwrite to replace it (API: overwrite=True)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"FILE: the folder of {path}, {path.parent}, does not exist")
    try:
        from parity.export import save_torch_state_dict
    except ImportError as error:
        raise ModuleNotFoundError(f"flaxseq export needs PyTorch and the parity package ({error}); "
                                  "install flaxseq[torch]") from error
    partial = path.with_name(path.name + ".partial")
    try:
        save_torch_state_dict(run.model, {"params": run.params}, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
