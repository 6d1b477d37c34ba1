"""PyTorch state_dict files read without PyTorch: `torch.save(model.state_dict(), path)` into numpy.

`load_torch_state_dict(path)` reads the zip format that `torch.save` writes since torch 1.6 and
returns a plain `dict` of names to numpy arrays, each with the tensor's shape and dtype, owning
its memory: float16/32/64, bfloat16 and float8 (`ml_dtypes`), complex64/128, int8/16/32/64,
uint8/16/32/64 and bool. Views read as torch holds them (storage offsets, strides, tensors
sharing one storage); a tensor saved under two names (tied weights) is one array under both,
as it is one tensor in torch. The file's `byteorder` entry is honoured.

The pickle inside is read by an unpickler that knows only what a state_dict is made of (dicts,
`collections.OrderedDict`, torch's tensor and parameter rebuilders, its storage classes and
dtypes) and refuses any other global, naming it: nothing in the file is ever executed. A whole
pickled model (`torch.save(model)`), a TorchScript archive, the legacy format of torch < 1.6
(`_use_new_zipfile_serialization=False`), values that are not tensors and files that are not
torch files are refused with a `TorchFileError` (a `ValueError`) naming the file; a missing
file raises `FileNotFoundError`.

    state = load_torch_state_dict("lstm.pt")   # {'weight_ih_l0': array([...], dtype=float32), ...}
"""

import collections
import math
import os
import pickle
import sys
import zipfile

import ml_dtypes
import numpy as np

# torch's typed storage classes (`torch.FloatStorage`, ...) and dtypes (`torch.float32`, ...)
STORAGES = {
    "HalfStorage": np.float16, "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "BFloat16Storage": ml_dtypes.bfloat16, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128, "CharStorage": np.int8, "ShortStorage": np.int16,
    "IntStorage": np.int32, "LongStorage": np.int64, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
DTYPES = {
    "float16": np.float16, "float32": np.float32, "float64": np.float64, "bfloat16": ml_dtypes.bfloat16,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "complex64": np.complex64, "complex128": np.complex128, "int8": np.int8, "int16": np.int16,
    "int32": np.int32, "int64": np.int64, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32,
    "uint64": np.uint64, "bool": np.bool_,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of a torch < 1.6 file
RESAVE = "torch.save(model.state_dict(), path)"


class TorchFileError(ValueError):
    """A file that `load_torch_state_dict` refuses: not a torch state_dict, or damaged."""


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """The state_dict that `torch.save` wrote to `path` (str or os.PathLike), as a dict of names to
    numpy arrays with the tensors' shapes and dtypes (bfloat16 as `ml_dtypes.bfloat16`), read
    without torch and without running anything from the file; see the module's docstring for what
    is accepted and refused."""
    path = os.fspath(path)
    with open(path, "rb") as file:  # FileNotFoundError names the path
        head = file.read(4)
    if not zipfile.is_zipfile(path):
        if head[:1] == b"\x80" and _first_object(path) == LEGACY_MAGIC:
            raise TorchFileError(
                f"{path} is in torch's legacy format (torch < 1.6, or saved with "
                "_use_new_zipfile_serialization=False), which flaxseq does not read: load it with torch "
                "and save it again in the default format, torch.save(torch.load(path), new_path)"
            )
        raise TorchFileError(f"{path} is not a file written by torch.save: it is not a zip archive of torch >= 1.6")
    try:
        with zipfile.ZipFile(path) as archive:
            state = _read_archive(path, archive)
    except TorchFileError:
        raise
    except Exception as error:  # a damaged archive or pickle: zipfile's, pickle's or numpy's own error
        raise TorchFileError(f"{path} is a damaged torch file: {type(error).__name__}: {error}") from None
    return _check_state(path, state)


def _read_archive(path: str, archive: zipfile.ZipFile):
    names = archive.namelist()
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if not pickles:
        raise TorchFileError(
            f"{path} is a zip archive but not a file written by torch.save: it has no <folder>/data.pkl"
        )
    prefix = pickles[0][: -len("data.pkl")]  # the archive's folder: the file's name when saved
    if prefix + "constants.pkl" in names:
        raise TorchFileError(
            f"{path} is a TorchScript module (torch.jit.save), not a state_dict: save its weights with {RESAVE}"
        )
    order = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
    if order not in ("little", "big"):
        raise TorchFileError(f"{path}: its byteorder entry must be 'little' or 'big', got {order!r}")
    with archive.open(prefix + "data.pkl") as file:
        return _Unpickler(file, path, archive, prefix, swap=order != sys.byteorder).load()


def _check_state(path: str, state) -> dict[str, np.ndarray]:
    kind = lambda x: "tensor" if type(x) is np.ndarray else type(x).__name__
    if not isinstance(state, dict):
        raise TorchFileError(f"{path} holds a {kind(state)}, not a state_dict (a dict of names to tensors)")
    bad = [f"{k!r} ({kind(v)})" if isinstance(k, str) else f"{k!r} (a name of type {type(k).__name__})"
           for k, v in state.items() if not (isinstance(k, str) and type(v) is np.ndarray)]
    if bad:
        raise TorchFileError(
            f"{path} is not a plain state_dict: a state_dict maps string names to tensors, and these entries "
            f"do not: {', '.join(bad)}; save the model's state_dict alone with {RESAVE}"
        )
    return dict(state)  # a plain dict: OrderedDict's `_metadata` is left behind


class _Storage:
    """A torch storage class or dtype named in the pickle: only its numpy dtype matters."""

    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = None if dtype is None else np.dtype(dtype)


class _Buffer:
    """One storage of the archive: its bytes and, for a typed storage, its dtype."""

    __slots__ = ("key", "data", "dtype")

    def __init__(self, key, data, dtype):
        self.key, self.data, self.dtype = key, data, dtype


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path, archive, prefix, swap):
        super().__init__(file)
        self.path, self.archive, self.prefix, self.swap = path, archive, prefix, swap
        self.buffers = {}  # key -> _Buffer: tensors sharing a storage read it once
        self.views = {}  # (storage, offset, size, stride, dtype) -> the array: a tied tensor is one array

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3"):
            return self.rebuild_tensor if name.endswith("v2") else self.rebuild_tensor_v3
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module == "torch" and name in STORAGES:
            return _Storage(STORAGES[name])
        if module == "torch" and name in DTYPES:
            return _Storage(DTYPES[name])
        if module == "torch.storage" and name == "UntypedStorage":
            return _Storage(None)
        if module.startswith(("torch.nn.", "__torch__")):
            raise TorchFileError(
                f"{self.path} holds a whole pickled model (it refers to {module}.{name}), not a state_dict: "
                f"save its weights with {RESAVE}"
            )
        raise TorchFileError(
            f"{self.path}: refused the global {module}.{name}: flaxseq reads only a state_dict (names to "
            f"tensors) and runs nothing from the file; if it holds a whole model, save its weights with {RESAVE}"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise TorchFileError(f"{self.path}: refused the persistent id {pid!r}: only torch storages are read")
        key = str(pid[2])
        if key not in self.buffers:
            name = f"{self.prefix}data/{key}"
            try:
                data = self.archive.read(name)
            except KeyError:
                raise TorchFileError(f"{self.path} is damaged: it has no entry {name} for storage {key}") from None
            self.buffers[key] = _Buffer(key, data, pid[1].dtype)
        return self.buffers[key]

    def rebuild_tensor_v3(self, storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
        if not isinstance(dtype, _Storage) or dtype.dtype is None:
            raise TorchFileError(f"{self.path}: _rebuild_tensor_v3 needs a torch dtype, got {dtype!r}")
        return self.view(storage, offset, size, stride, dtype.dtype)

    def rebuild_tensor(self, storage, offset, size, stride, requires_grad, hooks, metadata=None):
        if not isinstance(storage, _Buffer) or storage.dtype is None:
            raise TorchFileError(f"{self.path}: _rebuild_tensor_v2 needs a typed torch storage, got {storage!r}")
        return self.view(storage, offset, size, stride, storage.dtype)

    def view(self, storage, offset, size, stride, dtype) -> np.ndarray:
        """The tensor at element `offset` of `storage` with `size` and element `stride`, copied
        once: the same view again (a tensor saved under two names, tied) is the same array."""
        if not isinstance(storage, _Buffer):
            raise TorchFileError(f"{self.path}: a tensor's storage must be a torch storage, got {storage!r}")
        where = (storage.key, offset, size, stride, dtype)
        if where not in self.views:
            self.views[where] = self._copy(storage, offset, size, stride, dtype)
        return self.views[where]

    def _copy(self, storage, offset, size, stride, dtype) -> np.ndarray:
        ints = lambda xs: isinstance(xs, tuple) and all(type(x) is int and x >= 0 for x in xs)
        if type(offset) is not int or offset < 0 or not ints(size) or not ints(stride) or len(size) != len(stride):
            raise TorchFileError(
                f"{self.path}: a tensor of storage {storage.key} has an invalid view: offset {offset!r}, "
                f"size {size!r}, stride {stride!r}"
            )
        if len(storage.data) % dtype.itemsize:
            raise TorchFileError(
                f"{self.path}: storage {storage.key} has {len(storage.data)} bytes, not a whole number of {dtype}"
            )
        data, count = storage.data, len(storage.data) // dtype.itemsize
        if self.swap:  # complex numbers swap each of their two parts
            unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
            data = np.frombuffer(data, f"u{unit}").byteswap().tobytes() if unit > 1 else data
        if math.prod(size) == 0:
            return np.zeros(size, dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= count:
            raise TorchFileError(
                f"{self.path}: a tensor of storage {storage.key} reaches element {last}, past the storage's "
                f"{count} elements (offset {offset}, size {size}, stride {stride})"
            )
        # as_strided over the storage's bytes (numpy checks the bounds again); not np.lib's as_strided,
        # which goes through __array_interface__ and does not know ml_dtypes' float8_e5m2
        view = np.ndarray(size, dtype, buffer=data, offset=offset * dtype.itemsize,
                          strides=tuple(s * dtype.itemsize for s in stride))
        if dtype == np.bool_:  # torch writes 0 and 1; any other byte reads as true
            return view.view(np.uint8) != 0
        return view.copy()  # C-contiguous, owning its memory


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    return data


def _first_object(path: str):
    """The first pickled object of `path`, read with no global allowed; None if there is none."""

    class NoGlobals(pickle.Unpickler):
        def find_class(self, module, name):
            raise pickle.UnpicklingError(f"global {module}.{name}")

    try:
        with open(path, "rb") as file:
            return NoGlobals(file).load()
    except Exception:  # not a pickle, or one that starts with something other than torch's number
        return None
