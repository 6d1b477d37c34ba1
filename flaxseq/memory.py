"""Keep memory that a jitted call frees, for the next call (Linux with glibc).

XLA:CPU allocates a compiled function's temporary buffer at every call and frees it at the end.
glibc's malloc gives blocks that large back to the kernel at once (`munmap`: always for blocks
over 64 MB requested from a thread other than the main one, which is where XLA runs), so the
next call writes into fresh pages and the kernel faults each one in. At the classifier LSTM's
training step that is 32,000 page faults and 76 ms of system time per step, a third of the
step (`docs/performance.md`).

`keep_freed_memory()` sets malloc to keep freed memory in the process and hand it out again:
one arena for all threads (`M_ARENA_MAX=1`), no blocks mapped on their own (`M_MMAP_MAX=0`),
no trimming of the heap below 2 GB (`M_TRIM_THRESHOLD`, and `M_TOP_PAD` for temporaries larger
than that: with only the threshold, a free heap top above 2 GB went back to the kernel whole
and a 1,000-step sequence's 2.4 GB of temporaries were faulted in at every call).

The cost: the process keeps its memory until it exits, and more than its peak: a small block
that lands in a freed temporary splits it, and a later call takes a new one beside it, so the
heap grows now and then by a temporary's size, to several times the largest temporary (measured:
192 MB of temporaries, resident 0.9 to 1.8 GB after 20 calls in 8 runs; 490 MB, 2.3 GB after 8
calls and no growth in the next 112; 1.2 GB, 4.0 GB after 9 calls). The heap grows in steps of
at least 2 GB of address space (untouched pages cost no memory, but count where overcommit is
strict). It applies to the whole process (PyTorch's allocations too) and works best called
before JAX first runs, while XLA's threads have not yet made their own arenas.

    import flaxseq.memory
    flaxseq.memory.keep_freed_memory()  # first thing in a training script
"""

import ctypes
import ctypes.util
import functools

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8
_LARGEST = 2**31 - 1  # the largest int mallopt takes: the trim threshold and the top kept, 2 GB


@functools.cache
def keep_freed_memory() -> bool:
    """Make malloc keep freed memory for reuse (see the module docstring).

    Returns True when set, False where there is no glibc malloc to set (macOS, Windows, musl).
    Calling it again does nothing more.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _LARGEST), (M_TOP_PAD, _LARGEST))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
