"""Progress fits where it goes: a live bar on a terminal, one line per epoch on a file or a pipe."""

import fcntl
import os
import pathlib
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 3
# A tiny classifier fit: 30 examples in batches of 8, so 4 steps an epoch.
FIT = textwrap.dedent(f"""
    import jax
    import numpy as np

    import flaxseq
    from flaxseq import data
    from flaxseq.optim import adam_with_clipping
    from flaxseq.tasks.classify import make_loss
    from flaxseq.train import Trainer, fit

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 8, 30).astype(np.int32)
    ids = (rng.integers(1, 20, (30, 7)) * (np.arange(7) < lengths[:, None])).astype(np.int32)
    labels = (ids[:, 0] % 3).astype(np.int32)
    model = flaxseq.TextClassifier(20, 4, 3, 1, 3, dropout=0.0)
    params = model.init(jax.random.key(0), ids[:1], lengths[:1])["params"]
    trainer = Trainer(make_loss(model), adam_with_clipping(1e-2), 8)
    batches = data.BatchIterator(ids, lengths, labels, batch_size=8, seed=1)
    valid = [{{"ids": ids[:8], "lengths": lengths[:8], "labels": labels[:8]}}]
    fit(trainer, trainer.init_state(params), batches, ("ids", "lengths", "labels"), epochs={EPOCHS}, seed=5,
        validate=lambda p: trainer.evaluate(p, valid), score="accuracy", progress=True, log=lambda _: None)
""")
LINE = re.compile(r"^epoch (\d+): 4 steps  loss \d+\.\d{4} acc \d\.\d{3}  \d+ examples/s$")


def test_pipe_gets_one_line_per_epoch():
    out = subprocess.run([sys.executable, "-c", FIT], capture_output=True, cwd=ROOT, timeout=300)
    stderr = out.stderr.decode()  # bytes decoded as they are: text mode would turn "\r" into "\n"
    assert out.returncode == 0, stderr
    assert "\r" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("epoch")]
    assert [LINE.match(line) and int(LINE.match(line)[1]) for line in lines] == list(range(1, EPOCHS + 1))


@pytest.mark.slow  # a file is not a terminal, as a pipe is not: the pipe test covers the default run
def test_file_gets_one_line_per_epoch(tmp_path):
    with open(tmp_path / "log", "w") as log:
        subprocess.run([sys.executable, "-c", FIT], stderr=log, cwd=ROOT, timeout=300, check=True)
    text = (tmp_path / "log").read_bytes().decode()
    assert "\r" not in text
    assert sum(bool(LINE.match(line)) for line in text.splitlines()) == EPOCHS


def test_terminal_gets_the_bar():
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm sizes its bar by it
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the follower side closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        process = subprocess.run([sys.executable, "-c", FIT], stderr=follower, cwd=ROOT, timeout=300)
    finally:
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")  # the terminal's own line ends
    assert process.returncode == 0, text
    assert re.search(r"\repoch 3: +\d+%\|", text)  # tqdm redraws its line
    assert not any(LINE.match(line.strip("\r")) for line in text.splitlines())
