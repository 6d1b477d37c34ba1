"""`flaxseq.memory.keep_freed_memory`: a jitted call no longer faults its temporaries in afresh.

Each case runs in its own process (malloc's settings are process-wide and best set before JAX
starts) and counts the minor page faults of each call of a function with about 200 MB of
temporaries.
"""

import json
import platform
import subprocess
import sys

import pytest

CHILD = """
import json, resource, sys
import flaxseq.memory
kept = flaxseq.memory.keep_freed_memory() if sys.argv[1] == "keep" else None
import jax, jax.numpy as jnp
x = jnp.ones((6000, 4000), jnp.float32)  # 96 MB: sin(x) and cos(x) are temporaries of that size
v = jnp.ones((4000, 4), jnp.float32)
f = jax.jit(lambda x: (jnp.sin(x) @ v).sum() + (jnp.cos(x) @ v).sum())
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


def _faults(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_memory_stops_page_faults():
    default, kept = _faults("default"), _faults("keep")
    assert kept["kept"] is True
    # 96 MB of fresh pages is about 23,000 faults; without the setting every call takes them
    assert min(default["faults"][-4:]) > 10_000, default
    # with it, the heap settles after a few calls and the last calls reuse its pages
    assert max(kept["faults"][-4:]) < 1_000, kept



TOP_PAD_CHILD = """
import ctypes, json, resource, sys
import flaxseq.memory
kept = flaxseq.memory.keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 2**31 + 2**28  # 2.25 GiB, above the largest trim threshold malloc takes
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_memory_keeps_blocks_above_the_trim_threshold():
    """A block larger than malloc's largest trim threshold (the long-sequence row's temporaries)
    is not handed back to the kernel whole at every free: `M_TOP_PAD` keeps 2 GB of it."""
    result = subprocess.run(
        [sys.executable, "-c", TOP_PAD_CHILD, "keep"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    kept = json.loads(result.stdout.strip().splitlines()[-1])
    assert kept["kept"] is True
    pages = (2**31 + 2**28) // 4096  # 589,824 pages of 4 KiB
    assert kept["faults"][0] > pages // 2, kept  # the first block is fresh memory
    # later blocks fault in only what was trimmed above the 2 GB kept (about 65,000 pages)
    assert max(kept["faults"][1:]) < pages // 4, kept
