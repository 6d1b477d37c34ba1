"""Checkpoints: train state, best parameters and run metadata, as one file that cannot lie.

A checkpoint is the single file `checkpoint.msgpack` in its folder:

    flaxseq checkpoint 1\\n       the format line
    <sha256 of the payload>\\n    64 hex digits
    <payload>                    msgpack of {"meta": JSON text, "arrays": flax state dict}

`arrays` is any pytree (e.g. `{'state': TrainState, 'best_params': params}`) as flax's state
dict; `meta` holds the model configuration, the data iterator's position, the seed, the epoch
and the history. Saving writes the whole file under a temporary name, flushes it to disk
(`fsync`), renames it over the previous checkpoint in one step and flushes the folder: a run
killed at any moment leaves either the previous checkpoint or the new one, never a mix.

Loading refuses, naming the file: a file that is not a flaxseq checkpoint, one whose payload
does not match its hash (damaged), and one whose arrays do not fit the template (the first
missing, unexpected or misshaped parameter is named). Nothing is loaded from a refused file.

Why one file and not orbax: orbax writes a directory of several files per checkpoint and
checks no content hash; a single msgpack file under a hash is one atomic unit that the loader
verifies whole, with flax's own serialization and no extra machinery.

Checkpoints of earlier flaxseq versions (`state.msgpack` and `meta.json`, renamed one after
the other, no hash) still load: their structure and shapes are checked; the next save writes
the new file and removes the two old ones.
"""

import hashlib
import json
import os
import pathlib
from typing import Any

import numpy as np
from flax import serialization
from flax.traverse_util import flatten_dict

CHECKPOINT_FILE = "checkpoint.msgpack"
FORMAT_LINE = b"flaxseq checkpoint 1\n"
LEGACY_STATE, LEGACY_META = "state.msgpack", "meta.json"  # before the single file


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, foreign, or not fitting the model."""


def checkpoint_path(directory) -> pathlib.Path:
    return pathlib.Path(directory) / CHECKPOINT_FILE


def save_checkpoint(directory, arrays: Any, meta: dict) -> None:
    """Write `arrays` (any pytree of arrays) and `meta` (JSON) as `directory/checkpoint.msgpack`,
    atomically: a temporary file, `fsync`, one rename, `fsync` of the folder."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = serialization.msgpack_serialize(
        {"meta": json.dumps(meta), "arrays": serialization.to_state_dict(_to_numpy(arrays))}
    )
    path = checkpoint_path(directory)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(FORMAT_LINE + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    _fsync_folder(directory)
    for name in (LEGACY_STATE, LEGACY_META):
        (directory / name).unlink(missing_ok=True)


def has_checkpoint(directory) -> bool:
    directory = pathlib.Path(directory)
    return checkpoint_path(directory).exists() or (
        (directory / LEGACY_STATE).exists() and (directory / LEGACY_META).exists()
    )


def read_checkpoint(directory) -> tuple[dict, dict]:
    """`(state_dict, meta)` of the checkpoint in `directory`, its hash checked; raises
    `FileNotFoundError` if there is none and `CheckpointError` naming the file if it is damaged."""
    directory = pathlib.Path(directory)
    path = checkpoint_path(directory)
    if not path.exists() and has_checkpoint(directory):
        return _read_legacy(directory)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {directory}: {path.name} is missing")
    data = path.read_bytes()
    if not data.startswith(FORMAT_LINE):
        raise CheckpointError(f"{path} is not a flaxseq checkpoint: it does not start with {FORMAT_LINE!r}")
    digest, _, payload = data[len(FORMAT_LINE):].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CheckpointError(
            f"{path} is damaged: its content does not match the hash it was saved with; it was not loaded"
        )
    try:
        content = serialization.msgpack_restore(payload)
        return content["arrays"], json.loads(content["meta"])
    except Exception as error:  # the hash matched, so this is a file written by something else
        raise CheckpointError(f"{path} is not a flaxseq checkpoint: {error}") from None


def read_meta(directory) -> dict:
    """The metadata of the checkpoint in `directory` (the file's hash is checked)."""
    return read_checkpoint(directory)[1]


def check_config(directory, saved: dict, config: dict) -> None:
    """Refuse a checkpoint made with another configuration, naming every difference in the
    options both record (an option one side lacks is the caller's to judge: the tasks count one
    the checkpoint predates at its default)."""
    keys = sorted(set(saved) & set(config))
    differences = [f"{k}: checkpoint has {saved.get(k)!r}, this run has {config.get(k)!r}"
                   for k in keys if saved.get(k) != config.get(k)]
    if differences:
        raise ValueError(
            f"the checkpoint in {directory} was made with another configuration; nothing was "
            "overwritten:\n  " + "\n  ".join(differences)
        )


def check_structure(path, template: Any, state: dict) -> None:
    """Refuse `state` (a flax state dict) unless it has `template`'s parameters, shapes and
    dtypes, naming the first one that differs."""
    want = flatten_dict(serialization.to_state_dict(template), sep="/")
    got = flatten_dict(state, sep="/") if isinstance(state, dict) else {}
    for name in sorted(set(want) | set(got)):
        if name not in got:
            raise CheckpointError(f"{path} does not fit this model: parameter {name} is missing")
        if name not in want:
            raise CheckpointError(f"{path} does not fit this model: it holds {name}, which the model has not")
        expected, saved = np.shape(want[name]), np.shape(got[name])
        if expected != saved:
            raise CheckpointError(
                f"{path} does not fit this model: {name} has shape {saved} in the checkpoint, "
                f"the model expects {expected}"
            )
        expected, saved = getattr(want[name], "dtype", None), np.asarray(got[name]).dtype
        if expected is not None and np.dtype(expected) != saved:
            raise CheckpointError(
                f"{path} does not fit this model: {name} has dtype {saved} in the checkpoint, "
                f"the model expects {expected}"
            )


def load_checkpoint(directory, template: Any, config: dict | None = None) -> tuple[Any, dict]:
    """Read `(arrays, meta)` from `directory`; `template` gives the pytree structure, shapes and
    dtypes (arrays or `jax.ShapeDtypeStruct`s), checked before anything is restored.

    With `config`, a checkpoint whose saved `meta['config']` differs in an option both record
    raises `ValueError` (`check_config`).
    """
    state, meta = read_checkpoint(directory)
    if config is not None:
        check_config(directory, meta.get("config", {}), config)
    path = checkpoint_path(directory) if checkpoint_path(directory).exists() else pathlib.Path(directory)
    check_structure(path, template, state)
    return serialization.from_state_dict(template, state), meta


def _read_legacy(directory: pathlib.Path) -> tuple[dict, dict]:
    """A checkpoint of flaxseq before the single file: `state.msgpack` and `meta.json`."""
    state_path, meta_path = directory / LEGACY_STATE, directory / LEGACY_META
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{meta_path} is not valid JSON: {error}") from None
    try:
        state = serialization.msgpack_restore(state_path.read_bytes())
    except Exception as error:
        raise CheckpointError(f"{state_path} is not a flaxseq checkpoint: {error}") from None
    return state, meta


def _to_numpy(tree: Any) -> Any:
    """Host copies of the arrays (msgpack serializes numpy arrays)."""
    import jax

    return jax.tree.map(np.asarray, tree)


def _fsync_folder(directory: pathlib.Path) -> None:
    """Flush the folder's entry for the renamed file (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
