"""Keep memory that a jitted call frees, for the next call (Linux with glibc).

XLA:CPU allocates a compiled function's temporary buffer at every call and frees it at the
end; glibc hands blocks that large back to the kernel at once, so the next call faults fresh
pages in. `keep_freed_memory()` sets malloc to keep freed memory in the process and hand it
out again: one arena for all threads (`M_ARENA_MAX=1`), no blocks mapped on their own
(`M_MMAP_MAX=0`), no trimming of the heap below 2 GB (`M_TRIM_THRESHOLD`, `M_TOP_PAD`).

The cost: the process keeps its memory until it exits, and the heap can grow to several times
the largest temporary. It applies to the whole process (PyTorch's allocations too) and works
best called before JAX first runs. Measurements: `docs/performance.md`, findings 14 and 21.

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
