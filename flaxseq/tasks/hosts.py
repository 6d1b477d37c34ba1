"""A run over several processes (hosts) through JAX's distributed runtime.

`--coordinator-address HOST:PORT --num-processes N --process-id I` are the arguments of
`jax.distributed.initialize`, given all three or not at all (one process). Every process
reads the same data and runs the same steps, each feeding its share of every global batch
(`flaxseq.train.Trainer`); process 0 alone writes the run folder, which must lie on a
filesystem all processes see. Every process reads it: `--out`'s checks and, with `--resume`,
the checkpoint.
"""

import hashlib

import jax
import numpy as np

from flaxseq.tasks import options

NAMES = ("coordinator_address", "num_processes", "process_id")


def check(config) -> None:
    """Raise `OptionError` unless the three options are all given or all absent, the address
    is `HOST:PORT`, and `0 <= process_id < num_processes`."""
    given = [name for name in NAMES if getattr(config, name) is not None]
    if not given:
        return
    missing = [options.flag(name) for name in NAMES if name not in given]
    if missing:
        raise options.OptionError(options.flag(given[0]), f"expected with {' and '.join(missing)} "
                                  "(all three of --coordinator-address, --num-processes, --process-id, or none)")
    address = config.coordinator_address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise options.OptionError("--coordinator-address", f"expected HOST:PORT, got {address!r}")
    options.at_least(config, 1, "num_processes")
    options.at_least(config, 0, "process_id")
    if config.process_id >= config.num_processes:
        raise options.OptionError("--process-id", f"must be less than --num-processes ({config.num_processes}), "
                                  f"got {config.process_id}")


def connect(config) -> None:
    """Join the run's processes (`jax.distributed.initialize`) if the options name them; this
    must come before JAX's first computation. Blocks until every process has joined."""
    if config.coordinator_address is None:
        return
    if jax.distributed.is_initialized():
        # A caller that joined already (a second run in one process): it must be the same run.
        if (jax.process_count(), jax.process_index()) != (config.num_processes, config.process_id):
            raise ValueError(f"--num-processes {config.num_processes} --process-id {config.process_id}: this "
                             f"process already runs as process {jax.process_index()} of {jax.process_count()}")
        return
    jax.distributed.initialize(config.coordinator_address, config.num_processes, config.process_id)


def main() -> bool:
    """Whether this process writes files and logs: process 0 (or the only process)."""
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def log(text: str) -> None:
    """`print`, on process 0 only."""
    if main():
        print(text, flush=True)


def agreed(text: str) -> bool:
    """Whether every process passed the same `text`; every process must call it (a collective)."""
    if jax.process_count() == 1:
        return True
    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8).copy()
    digests = multihost_utils.process_allgather(digest)  # [processes, 32]
    return bool(np.all(digests == digests[0]))


def together(step, what: str):
    """`step()` on every process; if it raises on any of them, every process stops: those that
    failed with their own error, the others naming `what`. Keeps one process from waiting for
    another that has stopped."""
    try:
        result = step()
    except Exception:
        agreed("refused")
        raise
    if not agreed("done"):
        raise RuntimeError(f"another process of the run stopped while {what}; its error says why")
    return result
