"""`flaxseq.memory.keep_freed_memory`: a jitted call no longer faults its temporaries in afresh.

Each case runs in its own process (malloc's settings are process-wide and best set before JAX
starts) and counts the minor page faults of each call of a function with about 200 MB of
temporaries, and the process's resident memory after it.
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
calls = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1])  # pages
    calls.append((faults, resident))
print(json.dumps({"kept": kept, "calls": calls}))
"""


def _calls(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_memory_stops_page_faults():
    default, kept = _calls("default"), _calls("keep")
    assert kept["kept"] is True
    # 192 MB of fresh pages is about 47,000 faults; without the setting every call takes them
    # and hands them back, so the process faults in far more than it grows
    faults = [f for f, _ in default["calls"][1:]]
    growth = max(r for _, r in default["calls"]) - default["calls"][0][1]
    assert min(faults) > 20_000 and sum(faults) > 4 * growth, default
    # with it, a call faults in only memory the process then keeps: freed pages are reused, and
    # the faults that remain are the heap growing now and then by a temporary's size (the
    # `flaxseq.memory` docstring), so many calls take none (12 to 17 of these 19 in 8 runs here)
    for (faults, resident), (_, resident_before) in zip(kept["calls"][1:], kept["calls"], strict=False):
        assert faults < resident - resident_before + 1_000, kept
    assert sum(faults < 1_000 for faults, _ in kept["calls"][1:]) >= 5, kept


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
