"""The run folder: what a run writes, how a folder is recognised, claimed and replaced.

A run folder holds everything `predict` and `export` need, and can be moved or copied:

    run.json                       the manifest: format, task, flaxseq version, the files the run
                                   wrote and the fingerprints of the data it read
    config.json                    the task and every option (data paths made absolute)
    vocab.json, classes.json, ...  the task's vocabularies and label names
    checkpoint/checkpoint.msgpack  parameters, optimizer state, data position, history
    metrics.json, curves.png       the final metrics and the curves

Rules for `--out`: a new or empty folder takes a fresh run; a folder holding a flaxseq run
needs `--resume` (continue it) or `--overwrite` (replace it); any other non-empty folder is
refused. `--overwrite` deletes only the files the manifest says the run wrote. Nothing is
written until every check has passed: a refused run changes no byte of the folder.

A data fingerprint is the number of items read and the SHA-256 of their JSON text (and the
source it was read from, which is not compared); a resumed run and `evaluate` compare it with
the one recorded, so data moved to another path is still the same data.

A resumed run must have the checkpoint's configuration (`model_config`): every option but
where the run is written, how it is shown, the paths of its data (checked by content) and,
unless the learning rate decays over them (`--cosine-decay`), the number of epochs: a run
resumed with more `--epochs` trains on to the result a run of that many epochs has. An option
the checkpoint predates counts at its default.
"""

import dataclasses
import hashlib
import json
import pathlib
from typing import Any

from flaxseq.checkpoint import has_checkpoint, read_meta
from flaxseq.tasks import hosts

RUN_FILE, CONFIG_FILE, CHECKPOINT_DIR = "run.json", "config.json", "checkpoint"
FORMAT, VERSION = "flaxseq run", 1
TASKS = ("classify", "tag", "seq2seq")
BASE_FILES = (RUN_FILE, CONFIG_FILE, "metrics.json", "curves.png",
              f"{CHECKPOINT_DIR}/checkpoint.msgpack", f"{CHECKPOINT_DIR}/checkpoint.msgpack.tmp")
VOCAB_FILES = ("vocab.json", "classes.json", "tags.json", "letters.json", "phonemes.json")
# What a run of flaxseq before the manifest wrote.
LEGACY_FILES = (CONFIG_FILE, "metrics.json", "curves.png", *VOCAB_FILES,
                *(f"{CHECKPOINT_DIR}/{n}{t}" for n in ("state.msgpack", "meta.json") for t in ("", ".tmp")))
KNOWN_FILES = frozenset(BASE_FILES + LEGACY_FILES)


def read_json(path) -> Any:
    """The JSON content of `path`; a missing or malformed file raises an error naming it."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def write_json(path, data) -> None:
    pathlib.Path(path).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def fingerprint(source: str, items: list) -> dict:
    """`{"source", "items", "sha256"}` of the data items read from `source`."""
    text = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
    return {"source": source, "items": len(items), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def same_data(a: dict | None, b: dict | None) -> bool:
    """Whether two fingerprints are of the same items (wherever they were read from)."""
    return (a or {}).get("items") == (b or {}).get("items") and (a or {}).get("sha256") == (b or {}).get("sha256")


def model_config(config) -> dict:
    """The options that define the model, the data and the training, which a resumed run must
    keep: all but `--out`, `--resume`, `--overwrite`, `--progress`, the processes' options, the
    data paths (`config.data_options`; the data is checked by its fingerprint) and `--epochs`
    when the learning rate does not depend on it (no `--cosine-decay`)."""
    skip = {"out", "resume", "overwrite", "progress", *hosts.NAMES, *config.data_options, *_free(config.cosine_decay)}
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}


def _free(cosine_decay: bool) -> tuple[str, ...]:
    """The training options a resume may change: the epochs, unless the learning rate decays over them."""
    return () if cosine_decay else ("epochs",)


def config_differences(config, recorded: dict, recorded_as: str = "checkpoint has", now_as: str = "this run has"
                       ) -> list[str]:
    """Each option of `model_config(config)` whose value differs from `recorded` (a
    `model_config` saved earlier), as `"name: checkpoint has X, this run has Y"`. An option
    absent from `recorded` (one that flaxseq added since) counts at its default; one that
    `recorded` has and `config` no longer records is not compared."""
    current, defaults = model_config(config), {field.name: field.default for field in dataclasses.fields(config)}
    unrecorded = set(_free(recorded.get("cosine_decay", False))) - set(recorded)  # the record left them out
    return [f"{k}: {recorded_as} {recorded.get(k, defaults[k])!r}, {now_as} {current[k]!r}"
            for k in sorted(current) if k not in unrecorded and recorded.get(k, defaults[k]) != current[k]]


def kind(folder: pathlib.Path) -> str:
    """'missing', 'empty', 'run' (has a manifest), 'legacy' (a run of flaxseq before the
    manifest: a config.json naming a task beside a checkpoint folder) or 'other'."""
    if not folder.exists():
        return "missing"
    if not folder.is_dir():
        raise FileExistsError(f"--out {folder} is a file; expected a folder for the run")
    if not any(folder.iterdir()):
        return "empty"
    if (folder / RUN_FILE).is_file():
        try:
            manifest = read_json(folder / RUN_FILE)
        except ValueError as error:
            raise ValueError(f"{error}; the run in {folder} cannot be read (nor resumed, nor overwritten): repair "
                             f"or delete {RUN_FILE} (or the folder), or use another folder") from None
        if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
            return "run"
        return "other"
    if (folder / CONFIG_FILE).is_file() and (folder / CHECKPOINT_DIR).is_dir():
        try:
            config = json.loads((folder / CONFIG_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "other"
        if isinstance(config, dict) and config.get("task") in TASKS:
            return "legacy"
    return "other"


def manifest(folder: pathlib.Path) -> dict:
    """The run's manifest; for a legacy run, one listing the files such a run wrote."""
    if kind(folder) == "legacy":
        return {"format": FORMAT, "version": 0, "files": list(LEGACY_FILES), "data": None}
    return read_json(folder / RUN_FILE)


def claim(config) -> pathlib.Path:
    """Check `config.out` against the rules above (and, for `--resume`, the checkpoint's
    configuration against `config`'s, `config_differences`); writes nothing."""
    out = pathlib.Path(config.out)
    what = kind(out)
    if config.resume:
        if what not in ("run", "legacy"):
            raise FileNotFoundError(f"--resume: {out} holds no flaxseq run to resume")
        saved_task = manifest(out).get("task")
        if saved_task is not None and saved_task != config.task:
            raise ValueError(f"--resume: {out} holds a {saved_task} run, not a {config.task} run; resume it with "
                             f"flaxseq train {saved_task} ... --resume")
        checkpoint = out / CHECKPOINT_DIR
        if not has_checkpoint(checkpoint):
            raise FileNotFoundError(f"--resume: {out} holds no checkpoint (the run stopped before its first "
                                    "epoch ended); start again with --overwrite")
        meta = read_meta(checkpoint)
        differences = config_differences(config, meta.get("config", {}))
        if differences:
            raise ValueError(f"--resume: the checkpoint in {checkpoint} was made with another configuration; "
                             "nothing was overwritten:\n  " + "\n  ".join(differences))
        trained = len(meta.get("history", []))
        if trained > config.epochs:
            raise ValueError(f"--resume: the run in {out} has trained {trained} epochs, more than --epochs "
                             f"{config.epochs}; pass --epochs {trained} or more (nothing was overwritten)")
    elif what == "other":
        names = sorted(p.name for p in out.iterdir())
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise FileExistsError(f"--out {out} is not empty and holds no flaxseq run ({shown}); "
                              "choose a new or empty folder")
    elif what in ("run", "legacy") and not config.overwrite:
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it, --overwrite to start again, or another --out"
        )
    return out


def begin(out: pathlib.Path, config, task_files: tuple[str, ...], fingerprints: dict) -> bool:
    """Start writing the run: for a fresh run, remove the previous run's files (if any), write
    the manifest and config.json, and return True; for `--resume`, refuse data whose
    fingerprints differ from the recorded ones (nothing written), record where the data is now
    (manifest and config.json, rewritten whole) and return False."""
    what = kind(out)
    if config.resume:
        recorded = manifest(out).get("data")
        if recorded is not None:
            changed = [f"{k}: {describe(fingerprints.get(k))} now, {describe(recorded.get(k))} recorded"
                       for k in sorted(set(recorded) | set(fingerprints))
                       if not same_data(recorded.get(k), fingerprints.get(k))]
            if changed:
                raise ValueError(f"--resume: the data differs from the data the run in {out} was trained on; "
                                 "nothing was overwritten:\n  " + "\n  ".join(changed))
        _write_manifest(out, config, task_files, fingerprints)
        write_json(out / CONFIG_FILE, config_record(config))
        return False
    if what in ("run", "legacy"):
        remove_run(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, config, task_files, fingerprints)
    write_json(out / CONFIG_FILE, config_record(config))
    return True


def describe(found: dict | None) -> str:
    """A fingerprint in words: `"120 items (sha256 3fa2c1...) from PATH"`."""
    if not found:
        return "nothing"
    return f"{found.get('items')} items (sha256 {str(found.get('sha256'))[:12]}...) from {found.get('source')}"


def config_record(config) -> dict:
    """What config.json holds: the task and every option."""
    return {"task": config.task, **dataclasses.asdict(config)}


def remove_run(out: pathlib.Path) -> None:
    """Delete the files the run in `out` wrote (by its manifest) and its checkpoint folder if
    that is left empty; nothing else."""
    for name in manifest(out).get("files", []):
        if name in KNOWN_FILES:
            (out / name).unlink(missing_ok=True)
    checkpoint = out / CHECKPOINT_DIR
    if checkpoint.is_dir() and not any(checkpoint.iterdir()):
        checkpoint.rmdir()


def _write_manifest(out: pathlib.Path, config, task_files: tuple[str, ...], fingerprints: dict) -> None:
    import flaxseq

    write_json(out / RUN_FILE, {
        "format": FORMAT, "version": VERSION, "task": config.task, "flaxseq": flaxseq.__version__,
        "files": [*BASE_FILES, *task_files], "data": fingerprints,
    })


def load_vocab(path: pathlib.Path):
    """A vocabulary file of the run; errors name the file."""
    from flaxseq.data import Vocab

    return Vocab.from_dict(read_json(path), source=str(path))


def load_names(path: pathlib.Path) -> list[str]:
    """A JSON list of names (class names) of the run; errors name the file."""
    names = read_json(path)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: expected a non-empty JSON list of names, got {str(names)[:80]}")
    return names
