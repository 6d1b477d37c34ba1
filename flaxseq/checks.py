"""Argument checks shared by the cells and layers.

Every check runs in Python, at construction or at trace time, so that a bad argument raises a
`ValueError` or `TypeError` naming the argument, the rule and the value given, before any JAX
operation can fail with a less helpful message. Messages follow `torch/nn/modules/rnn.py`.
"""

import inspect
import numbers
import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np

NONLINEARITIES = ("tanh", "relu")


def user_stacklevel() -> int:
    """The `stacklevel` for a warning raised by the function that calls this one, pointing at
    the first frame outside flaxseq, flax and jax (a linen module's dataclass `__init__` and
    its clones in `init` and `apply`, NNX's construction machinery): the user's own line,
    whichever front end built the module."""
    inside = tuple(os.path.dirname(module.__file__) + os.sep for module in (sys.modules["flaxseq"], flax, jax))
    frame, level = sys._getframe(1), 1  # the function that warns: stacklevel 1
    while frame is not None and (frame.f_code.co_filename.startswith(inside) or frame.f_code.co_filename == "<string>"):
        frame, level = frame.f_back, level + 1
    return level


def check_int(name: str, value, minimum: int) -> None:
    """`value` must be an int (not a bool) and at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value < minimum:
        rule = "greater than zero" if minimum == 1 else f"at least {minimum}"
        raise ValueError(f"{name} must be {rule}, got {value}")


def check_recurrent_config(
    *, input_size, hidden_size, num_layers=1, dropout=0.0, nonlinearity="tanh", proj_size=0
) -> None:
    """The constructor checks of `torch.nn.RNNBase` and the cells."""
    check_int("input_size", input_size, 1)
    check_int("hidden_size", hidden_size, 1)
    check_int("num_layers", num_layers, 1)
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed, got {dropout!r}"
        )
    check_nonlinearity(nonlinearity)
    check_int("proj_size", proj_size, 0)
    if proj_size >= hidden_size:
        raise ValueError(
            f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
            f"and hidden_size={hidden_size}"
        )


def check_nonlinearity(nonlinearity) -> None:
    """The Elman RNN's `nonlinearity`: `'tanh'` or `'relu'`."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


def class_name(module) -> str:
    """A module's class name, for messages only (as PyTorch names the module in its errors)."""
    return type(module).__name__


def module_label(module) -> str:
    """A module's class name and, for a linen module inside another, its path, for messages
    only: `LSTM`, or `LSTM 'encoder/layers_0'` (NNX modules do not know their path)."""
    scope = getattr(module, "scope", None)
    path = getattr(scope, "path", ()) if scope is not None else ()
    return f"{class_name(module)} '{'/'.join(map(str, path))}'" if path else class_name(module)


def check_x64(param_dtype) -> None:
    """A float64 parameter dtype needs JAX's x64 mode; without it JAX silently gives float32."""
    if jnp.dtype(param_dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "param_dtype=float64 needs JAX's x64 mode, which is off: call "
            "jax.config.update('jax_enable_x64', True) first (JAX would give float32)"
        )


def check_compute_dtype(dtype) -> None:
    """The computation dtype `dtype=`: None (promoted from the input and parameters) or a
    floating dtype, float64 only in JAX's x64 mode."""
    if dtype is None:
        return
    try:
        given = jnp.dtype(dtype)
    except TypeError:
        given = None
    if given is None or not jnp.issubdtype(given, jnp.floating):
        raise TypeError(
            f"dtype (the computation dtype) must be None or a floating-point dtype, got "
            f"{given.name if given is not None else repr(dtype)}"
        )
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype=float64 needs JAX's x64 mode, which is off: call "
            "jax.config.update('jax_enable_x64', True) first (JAX would give float32)"
        )


def as_float_array(name: str, value) -> jax.Array:
    """`value` as a JAX array of a floating dtype."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    return array


def check_shape(name: str, array, expected: tuple) -> None:
    """`array.shape` must equal `expected`."""
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"Expected {name} size {tuple(expected)}, got {tuple(array.shape)}")


def check_lengths(lengths, batch_size: int, time_steps: int) -> jax.Array:
    """Sequence lengths `[batch]`: integers in [1, time_steps].

    The values are checked only where they are concrete; under `jax.jit` they are traced, and
    the recurrence clips them to [0, time_steps] instead (see the layers' docstrings).
    """
    if isinstance(lengths, (list, tuple)) or (
        not isinstance(lengths, (jax.Array, np.ndarray)) and hasattr(lengths, "__array__")
    ):  # a list, or another framework's array (a torch tensor, as PyTorch's lengths are)
        lengths = np.asarray(lengths)
    if not hasattr(lengths, "shape") or not hasattr(lengths, "dtype"):
        raise TypeError(f"lengths must be an integer array of shape [batch], got {type(lengths).__name__}")
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be an integer array of shape [batch], got dtype {lengths.dtype}")
    if tuple(lengths.shape) != (batch_size,):
        raise ValueError(
            f"lengths must have shape [batch] = ({batch_size},), got shape {tuple(lengths.shape)}"
        )
    if not isinstance(lengths, jax.core.Tracer):
        values = np.asarray(lengths)
        if values.size and values.min() < 1:
            raise ValueError(f"lengths must be at least 1, got {values.min()} in {values.tolist()}")
        if values.size and values.max() > time_steps:
            raise ValueError(
                f"lengths must be at most the input's time length {time_steps}, "
                f"got {values.max()} in {values.tolist()}"
            )
    return jnp.asarray(lengths)


def parameter_names(fn) -> set[str]:
    """The names `fn`'s signature takes; empty where it has none to read (a builtin)."""
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def flax_rnn_refusal(
    cell, rnn: str, adapter: str, call: str = "PyTorch's cell(input, hx) -> hx'",
    how: str = "(cell): outputs, final = CellScan(cell)(x, hx), x: [time, batch, features]",
) -> TypeError:
    """The error for a flaxseq cell handed to flax's `rnn` (`flax.linen.RNN`, `flax.nnx.RNN`),
    which calls a cell as `(carry, x) -> (carry, y)`: the cell's own `call`, and the `adapter`
    that runs it over time, used as `how` says."""
    return TypeError(
        f"{class_name(cell)} is a flaxseq cell, called as {call}, not as flax's cell(carry, x) -> "
        f"(carry, y), so {rnn} cannot run it; run it over time with {adapter}{how}"
    )
