"""Training: PyTorch's clipping rule, lockstep parity with the tutorial's loop, NaN stops,
exact resume, configuration checks, data parallelism and the NNX bridge."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import flaxseq
from flaxseq import data
from flaxseq.optim import adam_with_clipping, clip_grad_norm_torch
from flaxseq.train import Trainer, fit, run_epoch, trim_time
from parity.lockstep import LockstepCase

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("scale", [0.01, 0.999, 1.0, 3.0])
def test_clip_grad_norm_torch_matches_pytorch(scale):
    rng = np.random.default_rng(0)
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
    grads = {k: g * scale / norm for k, g in grads.items()}  # global norm = scale
    tensors = [torch.tensor(g).requires_grad_() for g in grads.values()]
    for t, g in zip(tensors, grads.values(), strict=True):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_(tensors, 1.0)
    clipped, _ = clip_grad_norm_torch(1.0).update({k: jnp.asarray(g) for k, g in grads.items()}, optax.EmptyState())
    for t, key in zip(tensors, grads, strict=True):
        np.testing.assert_allclose(clipped[key], t.grad.numpy(), rtol=1e-15, atol=0)
    # optax's rule leaves a norm below max_norm alone; PyTorch's scales it by 1 / (1 + 1e-6 / norm) at 1.0
    optax_clipped, _ = optax.clip_by_global_norm(1.0).update(grads, optax.clip_by_global_norm(1.0).init(grads))
    if scale == 1.0:
        assert not np.array_equal(optax_clipped["a"], clipped["a"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lockstep_training_with_pytorch(dtype):
    report = LockstepCase(dtype, steps=100).run(seed=3)
    assert report.passed, report.failures()
    assert len(report.gradients) == 19  # every tensor of the state_dict


def tiny_classifier_data(n=24, time=7, vocab=20, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, time + 1, n).astype(np.int32)
    ids = (rng.integers(1, vocab, (n, time)) * (np.arange(time) < lengths[:, None])).astype(np.int32)
    labels = (ids[:, 0] % 3).astype(np.int32)
    return ids, lengths, labels


def tiny_trainer(model, batch_size=8, learning_rate=1e-2, devices=None):
    from flaxseq.tasks.classify import make_loss

    return Trainer(make_loss(model), adam_with_clipping(learning_rate), batch_size, devices)


def test_nan_loss_stops_with_the_step():
    model = flaxseq.TextClassifier(20, 4, 3, 1, 3, dropout=0.0)
    ids, lengths, labels = tiny_classifier_data()
    params = model.init(jax.random.key(0), ids[:1], lengths[:1])["params"]
    params = jax.tree.map(lambda p: p.at[(0,) * p.ndim].set(jnp.nan) if p.ndim == 2 else p, params)
    trainer = tiny_trainer(model)
    batches = data.BatchIterator(ids, lengths, labels, batch_size=8, seed=0)
    with pytest.raises(FloatingPointError, match=r"the loss is nan at step 0 \(epoch 1\): training stopped"):
        run_epoch(trainer, trainer.init_state(params), batches, ("ids", "lengths", "labels"), seed=0, epoch=0,
                  progress=False)


def run_fit(tmp, epochs, resume=False, config=None):
    model = flaxseq.TextClassifier(20, 4, 3, 1, 3, dropout=0.3)
    ids, lengths, labels = tiny_classifier_data(n=30)  # the last batch of each epoch is partial
    params = model.init(jax.random.key(0), ids[:1], lengths[:1])["params"]
    trainer = tiny_trainer(model)
    batches = data.BatchIterator(ids, lengths, labels, batch_size=8, seed=1)
    valid = [{"ids": ids[:8], "lengths": lengths[:8], "labels": labels[:8]}]
    return fit(
        trainer, trainer.init_state(params), batches, ("ids", "lengths", "labels"), epochs=epochs, seed=5,
        validate=lambda p: trainer.evaluate(p, valid), score="accuracy", checkpoint_dir=tmp,
        config=config or {"model": "tiny"}, resume=resume, progress=False, log=lambda _: None,
    )


def test_resume_gives_the_uninterrupted_result(tmp_path):
    whole = run_fit(tmp_path / "whole", epochs=3)
    run_fit(tmp_path / "parts", epochs=1)
    resumed = run_fit(tmp_path / "parts", epochs=3, resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    jax.tree.map(np.testing.assert_array_equal, resumed.state.params, whole.state.params)
    jax.tree.map(np.testing.assert_array_equal, resumed.best_params, whole.best_params)
    assert int(resumed.state.step) == int(whole.state.step) == 12


def test_resume_with_another_configuration_fails_and_overwrites_nothing(tmp_path):
    run_fit(tmp_path, epochs=1, config={"model": "tiny", "hidden_size": 3})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="another configuration; nothing was overwritten:\n  hidden_size: "
                                         "checkpoint has 3, this run has 4"):
        run_fit(tmp_path, epochs=2, resume=True, config={"model": "tiny", "hidden_size": 4})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_resume_past_the_epochs_asked_for_is_refused(tmp_path):
    run_fit(tmp_path, epochs=2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=f"resume: the checkpoint in {tmp_path} has trained 2 epochs, more than "
                                         "epochs=1; pass epochs=2 or more"):
        run_fit(tmp_path, epochs=1, resume=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    again = run_fit(tmp_path, epochs=2, resume=True)  # nothing left to train: the checkpoint's result
    assert [h["epoch"] for h in again.history] == [1, 2] and again.earlier_seconds > 0


def test_trim_time_cuts_the_common_padding_columns_rounded_up():
    src = np.array([[5, 6, 0, 0, 0, 0, 0, 0], [7, 0, 0, 0, 0, 0, 0, 0]])
    trg = np.array([[2, 4, 4, 3, 0, 0, 0, 0], [2, 3, 0, 0, 0, 0, 0, 0]])
    lengths = np.array([2, 1])
    batch = {"src": src, "trg": trg, "lengths": lengths}
    trimmed = trim_time(batch, ("src", "trg"), 1)
    assert trimmed["src"].tolist() == src[:, :4].tolist() and trimmed["trg"].tolist() == trg[:, :4].tolist()
    assert trimmed["lengths"] is lengths
    assert trim_time(batch, ("src",), 1)["src"].shape == (2, 2)
    assert trim_time(batch, ("src", "trg"), 3)["src"].shape == (2, 6)
    assert trim_time(batch, ("src", "trg"), 5)["src"].shape == (2, 5)
    assert trim_time(batch, ("src", "trg"), 16)["src"].shape == (2, 8)  # never past the full length


def test_trimmed_seq2seq_batches_give_the_untrimmed_loss_and_gradients():
    """Dropping padding columns changes nothing the masked loss sees, in float64 to rounding."""
    from flaxseq.attention import AttnDecoder, Seq2SeqAttention
    from flaxseq.seq2seq import Encoder
    from flaxseq.tasks.seq2seq import make_loss

    with jax.enable_x64(True):
        model = Seq2SeqAttention(Encoder(9, 4, 5, 1, param_dtype=jnp.float64),
                                 AttnDecoder(8, 4, 5, 1, param_dtype=jnp.float64))
        rng = np.random.default_rng(0)
        src_lengths, trg_lengths = np.array([3, 5, 2]), np.array([4, 6, 3])
        src = np.where(np.arange(12) < src_lengths[:, None], rng.integers(1, 9, (3, 12)), 0)
        trg = np.where(np.arange(12) < trg_lengths[:, None], rng.integers(2, 8, (3, 12)), 0)
        batch = {"src": src, "src_lengths": src_lengths, "trg": trg, "weight": np.ones(3)}
        params = model.init(jax.random.key(0), src, trg, 1.0, src_lengths=src_lengths)["params"]
        loss_fn = jax.jit(jax.value_and_grad(make_loss(model), has_aux=True), static_argnums=2)
        (full, sums), full_grads = loss_fn(params, batch, None)
        trimmed = trim_time(batch, ("src", "trg"), 1)
        assert trimmed["src"].shape == (3, 6)
        (loss, trimmed_sums), grads = loss_fn(params, trimmed, None)
    assert abs(float(loss) - float(full)) <= 1e-14 * abs(float(full))
    assert float(trimmed_sums["count"]) == float(sums["count"]) == float(np.sum(trg_lengths - 1))
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(full_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_batch_size_must_divide_over_devices():
    model = flaxseq.TextClassifier(20, 4, 3, 1, 3)
    with pytest.raises(ValueError, match="batch_size must be a multiple of the 2 devices, got 7"):
        tiny_trainer(model, batch_size=7, devices=[jax.devices()[0]] * 2)


DATA_PARALLEL = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    import flaxseq
    from flaxseq import data
    from flaxseq.optim import adam_with_clipping
    from flaxseq.tasks.classify import make_loss
    from flaxseq.train import Trainer, run_epoch
    sys.path.insert(0, "tests")
    from test_train import tiny_classifier_data
    ids, lengths, labels = tiny_classifier_data(n=32)
    model = flaxseq.TextClassifier(20, 4, 3, 1, 3, dropout=0.0)
    params = model.init(jax.random.key(0), ids[:1], lengths[:1])["params"]
    losses = {}
    for count in (1, 4):
        trainer = Trainer(make_loss(model), adam_with_clipping(1e-2), 8, jax.devices()[:count])
        state = trainer.init_state(params)
        batches = data.BatchIterator(ids, lengths, labels, batch_size=8, seed=0)
        steps = []
        for epoch in range(2):
            for arrays in batches:
                batch = dict(zip(("ids", "lengths", "labels"), arrays))
                state, loss, _ = trainer.train_step(state, trainer.put(batch), jax.random.key(0))
                steps.append(float(loss))
        losses[count] = steps
        sharding = trainer.put(batch)["ids"].sharding
    print(json.dumps({"devices": jax.device_count(), "losses": losses, "shards": len(sharding.device_set)}))
""")


def test_data_parallel_over_four_cpu_devices_matches_one():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", DATA_PARALLEL], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4 and out["shards"] == 4
    np.testing.assert_allclose(out["losses"]["4"], out["losses"]["1"], rtol=2e-6)
    assert out["losses"]["1"][0] != out["losses"]["1"][-1]


def test_layer_inside_an_nnx_module():
    from flax import nnx
    from flax.nnx import bridge

    class Tagger(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.gru = bridge.ToNNX(flaxseq.GRU(4, 5, batch_first=True), rngs=rngs)
            self.gru.lazy_init(jnp.zeros((1, 3, 4)))
            self.head = nnx.Linear(5, 2, rngs=rngs)

        def __call__(self, x):
            output, _ = self.gru(x)
            return self.head(output)

    model = Tagger(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4)), jnp.float32)
    y = jnp.array([[0, 1, 0], [1, 1, 0]])

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    before = jax.tree.map(jnp.copy, nnx.state(model.gru, nnx.Param))
    first, second = step(model, optimizer, x, y), step(model, optimizer, x, y)
    assert second < first
    after = nnx.state(model.gru, nnx.Param)
    assert "weight_ih_l0" in str(jax.tree_util.tree_structure(after))
    assert not np.array_equal(jax.tree.leaves(before)[0], jax.tree.leaves(after)[0])
    # the bridged layer computes what the linen layer computes with the same parameters
    linen_params = {k: v.get_value() if hasattr(v, "get_value") else v[...] for k, v in
                    nnx.to_pure_dict(after).items()}
    out_bridge, _ = model.gru(x)
    out_linen, _ = flaxseq.GRU(4, 5, batch_first=True).apply({"params": linen_params}, x)
    np.testing.assert_array_equal(out_bridge, out_linen)
