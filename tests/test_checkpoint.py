"""Checkpoints that cannot lie: one atomic file, its hash and structure checked on load; weights
from outside (`parity.from_state_dict`) must be floating point."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import serialization

import flaxseq
import parity
from flaxseq import checkpoint
from flaxseq.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from flaxseq.optim import adam_with_clipping
from flaxseq.train import TrainState


def arrays(vocab=20, seed=0):
    model = flaxseq.TextClassifier(vocab, 4, 3, 1, 3, dropout=0.0)
    params = model.init(jax.random.key(seed), jnp.zeros((1, 5), jnp.int32), jnp.ones(1, jnp.int32))["params"]
    return {"state": TrainState.create(params, adam_with_clipping()), "best_params": params}


def assert_tree_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_a_checkpoint_is_one_file_that_loads_back_exactly(tmp_path):
    saved = arrays(seed=1)
    save_checkpoint(tmp_path, saved, {"epoch": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.msgpack"]
    loaded, meta = load_checkpoint(tmp_path, jax.eval_shape(lambda: arrays()))
    assert meta == {"epoch": 3}
    assert_tree_equal(loaded, saved)
    assert isinstance(loaded["state"], TrainState)


def test_a_flipped_byte_is_refused_naming_the_file(tmp_path):
    save_checkpoint(tmp_path, arrays(), {"epoch": 1})
    path = tmp_path / "checkpoint.msgpack"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the parameters
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{path} is damaged: its content does not match the hash"):
        load_checkpoint(tmp_path, arrays())


@pytest.mark.parametrize("content", [b"\x00" * 100, json.dumps({"a": 1}).encode(), b""])
def test_a_foreign_file_is_refused_naming_it(tmp_path, content):
    (tmp_path / "checkpoint.msgpack").write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'checkpoint.msgpack'} is not a flaxseq checkpoint"):
        load_checkpoint(tmp_path, arrays())


def test_a_checkpoint_of_another_model_names_the_first_mismatching_parameter(tmp_path):
    save_checkpoint(tmp_path, arrays(vocab=20), {})
    with pytest.raises(CheckpointError, match=r"does not fit this model: best_params/embedding/embedding has shape "
                                              r"\(20, 4\) in the checkpoint, the model expects \(21, 4\)"):
        load_checkpoint(tmp_path, arrays(vocab=21))
    template = arrays()
    template["best_params"] = {**template["best_params"], "extra": jnp.zeros(2)}
    with pytest.raises(CheckpointError, match="parameter best_params/extra is missing"):
        load_checkpoint(tmp_path, template)


def test_a_save_killed_before_its_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    first = arrays(seed=1)
    save_checkpoint(tmp_path, first, {"epoch": 1})

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, arrays(seed=2), {"epoch": 2})
    monkeypatch.undo()
    loaded, meta = load_checkpoint(tmp_path, arrays())
    assert meta == {"epoch": 1}
    assert_tree_equal(loaded, first)


def test_the_file_is_flushed_to_disk_before_it_replaces_the_previous_one(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    save_checkpoint(tmp_path, arrays(), {})
    assert events[:2] == ["fsync", "replace"] and events.count("replace") == 1


def test_a_checkpoint_of_an_earlier_flaxseq_still_loads(tmp_path):
    saved = arrays(seed=3)
    (tmp_path / "state.msgpack").write_bytes(serialization.to_bytes(saved))
    (tmp_path / "meta.json").write_text(json.dumps({"epoch": 2}))
    assert checkpoint.has_checkpoint(tmp_path)
    loaded, meta = load_checkpoint(tmp_path, arrays())
    assert meta == {"epoch": 2}
    assert_tree_equal(loaded, saved)
    save_checkpoint(tmp_path, loaded, meta)  # the next save replaces the two old files
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.msgpack"]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_from_state_dict_refuses_weights_that_are_not_floating_point(dtype):
    state_dict = torch.nn.GRU(4, 5).state_dict()
    state_dict["weight_hh_l0"] = torch.ones(15, 5, dtype=dtype)
    with pytest.raises(ValueError, match=f"weight_hh_l0: expected floating-point weights, got dtype "
                                         f"{str(dtype).removeprefix('torch.')}"):
        parity.from_state_dict(flaxseq.GRU(4, 5), state_dict)
