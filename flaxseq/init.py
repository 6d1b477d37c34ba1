"""PyTorch's default initialisers, as Flax initialisers.

PyTorch draws every weight and bias of its recurrent layers from U(-1/sqrt(H), 1/sqrt(H)),
`nn.Linear` weights and biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Kaiming-uniform with
a = sqrt(5) reduces to that), and `nn.Embedding` rows from N(0, 1).
"""

import math

import jax
import jax.numpy as jnp


def uniform(bound: float):
    """Initialiser drawing from U(-bound, bound)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def recurrent_uniform(hidden_size: int):
    """`torch.nn.RNNBase.reset_parameters`: U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
    return uniform(1.0 / math.sqrt(hidden_size))


def linear_uniform(fan_in: int):
    """`torch.nn.Linear.reset_parameters`, weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform(1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)
