"""Arrays across the two frameworks: a torch tensor as a numpy array and back, dtype kept.

numpy has no bfloat16 or float8: torch's `Tensor.numpy()` refuses them and `torch.from_numpy`
refuses `ml_dtypes`' arrays (what JAX gives for them). Those go through an integer view of the
same width, bit for bit.
"""

from typing import Any

import ml_dtypes
import numpy as np
import torch

# torch dtype -> (the numpy dtype JAX uses for it, the integer dtype of its width in both)
_VIEWED = {
    torch.bfloat16: (np.dtype(ml_dtypes.bfloat16), torch.int16, np.int16),
    torch.float8_e4m3fn: (np.dtype(ml_dtypes.float8_e4m3fn), torch.int8, np.int8),
    torch.float8_e5m2: (np.dtype(ml_dtypes.float8_e5m2), torch.int8, np.int8),
    torch.float8_e4m3fnuz: (np.dtype(ml_dtypes.float8_e4m3fnuz), torch.int8, np.int8),
    torch.float8_e5m2fnuz: (np.dtype(ml_dtypes.float8_e5m2fnuz), torch.int8, np.int8),
}


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype of a torch dtype (`ml_dtypes`' for bfloat16 and float8)."""
    return _VIEWED[dtype][0] if dtype in _VIEWED else np.dtype(str(dtype).removeprefix("torch."))


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy/JAX dtype."""
    return getattr(torch, np.dtype(dtype).name)


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (detached, on the CPU) or anything array-like as a numpy array of its dtype."""
    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    value = value.detach().cpu()
    if value.dtype in _VIEWED:
        numpy_dtype, torch_int, _ = _VIEWED[value.dtype]
        return value.view(torch_int).numpy().view(numpy_dtype)
    return value.numpy()


def to_tensor(array: Any) -> torch.Tensor:
    """A numpy (or JAX) array as a torch tensor of its dtype, copied."""
    array = np.array(array)
    for torch_dtype, (numpy_dtype, _, numpy_int) in _VIEWED.items():
        if array.dtype == numpy_dtype:
            return torch.from_numpy(array.view(numpy_int)).view(torch_dtype)
    return torch.from_numpy(array)
