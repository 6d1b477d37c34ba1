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

A data fingerprint is the number of items read and the SHA-256 of their JSON text; a resumed
run and `evaluate` compare it with the one recorded.
"""

import dataclasses
import hashlib
import json
import pathlib
from typing import Any

from flaxseq.checkpoint import check_config, has_checkpoint, read_meta

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
        manifest = read_json(folder / RUN_FILE)
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


def claim(config, model_config: dict) -> pathlib.Path:
    """Check `config.out` against the rules above (and, for `--resume`, the checkpoint's
    configuration against `model_config`); writes nothing."""
    out = pathlib.Path(config.out)
    what = kind(out)
    if config.resume:
        if what not in ("run", "legacy"):
            raise FileNotFoundError(f"--resume: {out} holds no flaxseq run to resume")
        checkpoint = out / CHECKPOINT_DIR
        if not has_checkpoint(checkpoint):
            raise FileNotFoundError(f"--resume: {out} holds no checkpoint (the run stopped before its first "
                                    "epoch ended); start again with --overwrite")
        check_config(checkpoint, read_meta(checkpoint).get("config", {}), model_config)
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
    fingerprints differ from the recorded ones (nothing written) and return False."""
    what = kind(out)
    if config.resume:
        recorded = manifest(out).get("data")
        if recorded is not None and recorded != fingerprints:
            changed = [f"{k}: {fingerprints.get(k)} now, {recorded.get(k)} recorded"
                       for k in sorted(set(recorded) | set(fingerprints)) if recorded.get(k) != fingerprints.get(k)]
            raise ValueError(f"--resume: the data differs from the data the run in {out} was trained on; "
                             "nothing was overwritten:\n  " + "\n  ".join(changed))
        if what == "legacy":
            _write_manifest(out, config, task_files, fingerprints)
        return False
    if what in ("run", "legacy"):
        remove_run(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, config, task_files, fingerprints)
    write_json(out / CONFIG_FILE, config_record(config))
    return True


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
