"""Checkpoints: train state, best parameters and run metadata, in one folder.

`state.msgpack` holds the arrays (flax serialization: parameters, optimizer state, step, best
parameters); `meta.json` holds the model configuration, the data iterator's position, the
seed, the epoch and the history. Both are written to a temporary name and then renamed, so a
run killed mid-save leaves the previous checkpoint intact.
"""

import json
import os
import pathlib
from typing import Any

from flax import serialization

STATE_FILE, META_FILE = "state.msgpack", "meta.json"


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_checkpoint(directory, arrays: Any, meta: dict) -> None:
    """Write `arrays` (any pytree, e.g. `{'state': ..., 'best_params': ...}`) and `meta` (JSON)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(directory / STATE_FILE, serialization.to_bytes(arrays))
    _write_atomic(directory / META_FILE, json.dumps(meta, indent=1).encode())


def has_checkpoint(directory) -> bool:
    directory = pathlib.Path(directory)
    return (directory / STATE_FILE).exists() and (directory / META_FILE).exists()


def read_meta(directory) -> dict:
    """The metadata of the checkpoint in `directory`."""
    path = pathlib.Path(directory) / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {directory}: {path.name} is missing")
    return json.loads(path.read_text())


def check_config(directory, saved: dict, config: dict) -> None:
    """Refuse a checkpoint made with another configuration, naming every difference."""
    keys = sorted(set(saved) | set(config))
    differences = [f"{k}: checkpoint has {saved.get(k)!r}, this run has {config.get(k)!r}"
                   for k in keys if saved.get(k) != config.get(k)]
    if differences:
        raise ValueError(
            f"the checkpoint in {directory} was made with another configuration; nothing was "
            "overwritten:\n  " + "\n  ".join(differences)
        )


def load_checkpoint(directory, template: Any, config: dict | None = None) -> tuple[Any, dict]:
    """Read `(arrays, meta)` from `directory`; `template` gives the pytree structure.

    With `config`, a checkpoint whose saved `meta['config']` differs raises `ValueError`.
    """
    meta = read_meta(directory)
    if config is not None:
        check_config(directory, meta.get("config", {}), config)
    data = (pathlib.Path(directory) / STATE_FILE).read_bytes()
    try:
        arrays = serialization.from_bytes(template, data)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"the checkpoint in {directory} does not fit this model: {error}") from error
    return arrays, meta
