"""`flaxseq train` over two processes (jax.distributed on 127.0.0.1, CPU collectives over gloo,
one CPU device each) against one process with two CPU devices: the same run. And the
processes' options, checked before anything is read."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import typing

import numpy as np
import pytest

from flaxseq.cli import main
from flaxseq.tasks import classify

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--batch-size", "4", "--embed-dim", "4", "--hidden-size", "4", "--num-layers", "1",
        "--max-length", "8", "--min-freq", "1", "--dropout", "0", "--seed", "3", "--no-progress"]
TIMEOUT = 300  # seconds for each round of processes; then they are killed

# `flaxseq train ...` that stops (exit 75) when its second epoch would begin: an interrupted run.
STOP_AT_EPOCH_TWO = """
import sys
import flaxseq.train
from flaxseq.cli import main

run_epoch = flaxseq.train.run_epoch

def run_one(*args, **kwargs):
    if kwargs["epoch"] == 1:
        raise SystemExit(75)
    return run_epoch(*args, **kwargs)

flaxseq.train.run_epoch = run_one
sys.exit(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(devices: int) -> dict:
    """One process's environment: `devices` CPU devices."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


class Ran(typing.NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_together(commands: list[tuple[list[str], dict, int]], cwd: pathlib.Path, name: str) -> list[Ran]:
    """Run `(command, env, expected exit code)`s at once in `cwd`, their output to files
    `name.<i>.out/err`; the rest are killed as soon as one ends otherwise than expected, or
    when TIMEOUT has passed."""
    logs, running = [], []
    try:
        for i, (command, environ, _) in enumerate(commands):
            out, err = open(cwd / f"{name}.{i}.out", "w+"), open(cwd / f"{name}.{i}.err", "w+")  # noqa: SIM115
            logs.append((out, err))
            running.append(subprocess.Popen(command, cwd=cwd, env=environ, stdout=out, stderr=err))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and any(p.poll() is None for p in running):
            if any(p.poll() not in (None, rc) for p, (_, _, rc) in zip(running, commands, strict=True)):
                break
            time.sleep(0.2)
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
            process.wait()
    results = []
    for process, (out, err) in zip(running, logs, strict=True):
        out.seek(0), err.seek(0)
        results.append(Ran(process.returncode, out.read(), err.read()))
        out.close(), err.close()
    return results


def two_processes(args: list[str], script=None, expected=0) -> list[tuple[list[str], dict, int]]:
    start = [sys.executable, "-c", script] if script else [sys.executable, "-m", "flaxseq"]
    where = ["--coordinator-address", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    return [([*start, *args, *where, "--process-id", str(i)], env(1), expected) for i in (0, 1)]


@pytest.fixture
def table(tmp_path):
    """Three classes of short texts, each class with its own words, as a TSV."""
    rng = np.random.default_rng(0)
    words = {"sport": ["goal", "match", "team", "win"], "tech": ["chip", "code", "data", "web"],
             "arts": ["film", "song", "stage", "book"]}
    lines = [" ".join(rng.choice(vocab + ["the", "a"], size=rng.integers(3, 9))) + f"\t{label}"
             for label, vocab in words.items() for _ in range(12)]
    path = tmp_path / "texts.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_processes_train_the_run_of_one_process_with_two_devices(table, tmp_path):
    def args(out):
        return ["train", "classify", "--data", str(table), "--out", str(tmp_path / out), *TINY]

    # One process with two devices, beside two processes with one device each, stopped after epoch 1.
    one, *two = run_together([([sys.executable, "-m", "flaxseq", *args("one")], env(2), 0),
                              *two_processes(args("two"), STOP_AT_EPOCH_TWO, 75)], tmp_path, "first")
    assert one.returncode == 0, one.stderr[-3000:]
    assert [p.returncode for p in two] == [75, 75], two[0].stderr[-3000:] + two[1].stderr[-3000:]
    assert not (tmp_path / "two" / "metrics.json").exists()
    # Both processes resume from process 0's checkpoint (else their steps would not meet).
    two = run_together(two_processes([*args("two"), "--resume"]), tmp_path, "resumed")
    assert [p.returncode for p in two] == [0, 0], two[0].stderr[-3000:] + two[1].stderr[-3000:]
    assert "resumed from" in two[0].stdout and "epoch 2/2" in two[0].stdout
    assert [line for line in two[1].stdout.splitlines() if not line.startswith("[Gloo]")] == []  # 0 alone logs

    whole, parts = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two"))
    assert [h["epoch"] for h in parts["history"]] == [1, 2]
    for key in ("train_loss", "valid_loss", "train_accuracy", "valid_accuracy"):
        np.testing.assert_allclose([h[key] for h in parts["history"]], [h[key] for h in whole["history"]],
                                   rtol=1e-5, err_msg=key)
    assert whole["history"][0]["train_loss"] != whole["history"][1]["train_loss"]  # it trained
    assert parts["test_accuracy"] == whole["test_accuracy"]
    np.testing.assert_allclose(parts["test_loss"], whole["test_loss"], rtol=1e-5)
    assert json.loads(two[0].stdout[two[0].stdout.index("{"):])["test_accuracy"] == whole["test_accuracy"]



def test_one_process_refusing_its_out_stops_both_and_nothing_is_written(table, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run")
    zero, one = two_processes(["train", "classify", "--data", str(table), *TINY], expected=1)
    zero[0].extend(["--out", str(tmp_path / "run")])
    one[0].extend(["--out", str(other)])
    zero, one = run_together([zero, one], tmp_path, "refused")
    assert (zero.returncode, one.returncode) == (1, 1), zero.stderr[-3000:] + one.stderr[-3000:]
    assert one.stderr.splitlines()[-1] == (f"flaxseq: error: --out {other} is not empty and holds no flaxseq run "
                                           "(notes.txt); choose a new or empty folder")
    assert zero.stderr.splitlines()[-1] == ("flaxseq: error: RuntimeError: another process of the run stopped while "
                                            "reading the data or checking --out; its error says why")
    assert not (tmp_path / "run").exists() and sorted(p.name for p in other.iterdir()) == ["notes.txt"]


PARTIAL = [
    (["--coordinator-address", "127.0.0.1:1234"],
     "argument --coordinator-address: expected with --num-processes and --process-id"),
    (["--num-processes", "2", "--process-id", "0"], "argument --num-processes: expected with --coordinator-address"),
    (["--process-id", "1"], "argument --process-id: expected with --coordinator-address and --num-processes"),
    (["--coordinator-address", "127.0.0.1", "--num-processes", "2", "--process-id", "0"],
     "argument --coordinator-address: expected HOST:PORT, got '127.0.0.1'"),
    (["--coordinator-address", "127.0.0.1:1234", "--num-processes", "0", "--process-id", "0"],
     "argument --num-processes: must be at least 1, got 0"),
    (["--coordinator-address", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"],
     "argument --process-id: must be less than --num-processes (2), got 2"),
    (["--coordinator-address", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "-1"],
     "argument --process-id: must be at least 0, got -1"),
]


@pytest.mark.parametrize("args, expected", PARTIAL, ids=[" ".join(a) for a, _ in PARTIAL])
def test_the_processes_options_are_all_or_none_checked_before_anything_is_read(args, expected, tmp_path,
                                                                              monkeypatch, capsys):
    def no_reading(*a, **k):
        raise AssertionError("the data was read")

    monkeypatch.setattr(classify, "load_texts", no_reading)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        main(["train", "classify", "--out", str(out), *args])
    assert stop.value.code == 2
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith(f"flaxseq train classify: error: {expected}"), line
    assert not out.exists()
