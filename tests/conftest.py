import os
import shutil
import tempfile

import jax

# Float64 parity needs x64; float32 cases ask for float32 explicitly.
jax.config.update("jax_enable_x64", True)

CACHE = "JAX_COMPILATION_CACHE_DIR"
MIN_SECONDS = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def pytest_configure(config):
    """One XLA compilation cache for the whole run, shared by the xdist workers and by the
    command-line runs the tests start (they inherit the environment): the same model's train
    step, and the same small programs that run op by op, are compiled in many processes.
    Every compile is kept (JAX keeps only those over a second by default, and most here take
    less). It is a fresh folder, removed at the end, so a run never reads what another run (or
    another checkout) compiled."""
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        config.flaxseq_cache = os.environ[CACHE] = tempfile.mkdtemp(prefix="flaxseq-tests-xla-")
        os.environ[MIN_SECONDS] = "0"
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ[MIN_SECONDS]))


def pytest_unconfigure(config):
    if getattr(config, "flaxseq_cache", None):
        shutil.rmtree(config.flaxseq_cache, ignore_errors=True)
