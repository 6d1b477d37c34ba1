"""flaxseq.load_torch_state_dict: files written by real torch.save read back exactly, also where torch
cannot be imported; every refused file with its message, nothing in a hostile pickle executed."""

import collections
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from flaxseq import load_torch_state_dict
from flaxseq.torch_file import DTYPES, TorchFileError

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOW_PRECISION = (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)


class Model(torch.nn.Module):
    """LSTM with projections, Linear, Embedding, int64 and bool buffers, tied weights."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 3)
        self.lstm = torch.nn.LSTM(3, 6, num_layers=2, proj_size=3, bidirectional=True)
        self.linear = torch.nn.Linear(6, 3)
        self.decoder = torch.nn.Linear(3, 10, bias=False)
        self.decoder.weight = self.embedding.weight  # one storage under two names
        self.register_buffer("steps", torch.arange(5) * 1000003)
        self.register_buffer("mask", torch.tensor([True, False, True]))


def tensors() -> dict[str, torch.Tensor]:
    """Every dtype, each also as a view with an offset and strides; views of one float32 storage."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in DTYPES:
        dtype = getattr(torch, name)
        if dtype.is_complex:
            t = torch.randn(2, 3, generator=g, dtype=dtype)
        elif dtype == torch.bool:
            t = torch.randn(2, 3, generator=g) > 0
        elif dtype.is_floating_point:
            t = (torch.randn(2, 3, generator=g, dtype=torch.float64) * 4).to(dtype)
        else:
            t = torch.randint(0, 100, (2, 3), generator=g).to(dtype)
        out[f"dtype.{name}"], out[f"dtype.{name}.view"] = t, t.T[1:]  # view: offset 1, strides (1, 3)
    m = torch.randn(4, 5, generator=g)
    out |= {"view.base": m, "view.T": m.T, "view.cols": m[:, 1:3], "view.rows": m[2:], "view.step": m[::2, ::3]}
    out |= {"view.expand": torch.arange(3.0).expand(4, 3), "view.empty": torch.zeros(0, 3),
            "view.empty_cols": m[:, 5:], "view.scalar": torch.tensor(2.5), "view.long_scalar": torch.tensor(7)}
    return out


def assert_same(got: np.ndarray, tensor: torch.Tensor, name: str):
    assert type(got) is np.ndarray and got.flags.owndata, name
    assert got.dtype == np.dtype(DTYPES[str(tensor.dtype).removeprefix("torch.")]), name
    assert got.shape == tuple(tensor.shape), name
    if tensor.dtype in LOW_PRECISION:  # no .numpy() in torch: compare as float32, which holds them exactly
        assert np.array_equal(got.astype(np.float32), tensor.float().numpy()), name
    else:
        assert np.array_equal(got, tensor.numpy()), name


def assert_state_equal(got: dict, state: dict):
    assert type(got) is dict and list(got) == list(state)
    for name, tensor in state.items():
        assert_same(got[name], tensor, name)


def test_a_model_state_dict_reads_exactly(tmp_path):
    state = Model().state_dict()
    torch.save(state, tmp_path / "model.pt")
    for path in (tmp_path / "model.pt", str(tmp_path / "model.pt")):
        got = load_torch_state_dict(path)
        assert_state_equal(got, state)
    assert "lstm.weight_hr_l1_reverse" in got and got["steps"].dtype == np.int64 and got["mask"].dtype == np.bool_
    assert np.array_equal(got["decoder.weight"], got["embedding.weight"])
    assert got["decoder.weight"] is got["embedding.weight"]  # tied: one tensor in torch, one array here
    assert got["decoder.weight"].flags.owndata and not np.shares_memory(got["decoder.weight"], got["linear.weight"])


def test_every_dtype_and_view_reads_exactly(tmp_path):
    state = tensors()
    torch.save(state, tmp_path / "tensors.pt")
    got = load_torch_state_dict(tmp_path / "tensors.pt")
    assert_state_equal(got, state)
    assert got["dtype.bfloat16"].dtype == ml_dtypes.bfloat16


def test_parameters_saved_with_keep_vars_read_as_arrays(tmp_path):
    state = torch.nn.Linear(3, 2).state_dict(keep_vars=True)  # torch._utils._rebuild_parameter
    torch.save(state, tmp_path / "params.pt")
    assert_state_equal(load_torch_state_dict(tmp_path / "params.pt"), {k: v.detach() for k, v in state.items()})


READ_WITHOUT_TORCH = """
import pickle, sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
import flaxseq
out = {path: flaxseq.load_torch_state_dict(path) for path in sys.argv[2:]}
imported = sorted(m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None)
with open(sys.argv[1], "wb") as file:
    pickle.dump({"arrays": out, "torch_modules": imported}, file)
"""


def test_files_read_the_same_where_torch_cannot_be_imported(tmp_path):
    states = {str(tmp_path / "model.pt"): Model().state_dict(), str(tmp_path / "tensors.pt"): tensors()}
    for path, state in states.items():
        torch.save(state, path)
    out = tmp_path / "out.pkl"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", READ_WITHOUT_TORCH, str(out), *states], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with open(out, "rb") as file:
        read = pickle.load(file)
    assert read["torch_modules"] == []
    for path, state in states.items():
        assert_state_equal(read["arrays"][path], state)


# Files crafted by hand: a zip in torch's layout around a pickle that torch would not write.

class Stored:
    """A storage in a crafted file: pickled as torch's persistent id for `archive/data/<key>`."""

    def __init__(self, key, kind, numel):
        self.key, self.kind, self.numel = key, kind, numel


class Tensor:
    """Pickled as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", obj.kind, obj.key, "cpu", obj.numel) if isinstance(obj, Stored) else None


def craft(path, obj, storages=(), byteorder="little", raw=None) -> pathlib.Path:
    """A zip as torch.save writes it: `archive/data.pkl` (`raw`, or `obj` pickled) and the storages."""
    with open(path, "wb") as file, zipfile.ZipFile(file, "w") as archive:
        if raw is None:
            with archive.open("archive/data.pkl", "w") as pkl:
                Pickler(pkl, protocol=2).dump(obj)
        else:
            archive.writestr("archive/data.pkl", raw)
        archive.writestr("archive/byteorder", byteorder)
        for key, data in dict(storages).items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def test_a_big_endian_file_reads_by_its_byteorder_entry(tmp_path):
    x, z = np.array([1.5, -2.25, 3.0]), np.array([1 + 2j, -3.5j], np.complex64)
    obj = {"x": Tensor(Stored("0", torch.DoubleStorage, 3), 1, (2,), (1,)),
           "z": Tensor(Stored("1", torch.ComplexFloatStorage, 2), 0, (2,), (1,))}
    path = craft(tmp_path / "big.pt", obj, {"0": x.astype(">f8").tobytes(), "1": z.astype(">c8").tobytes()}, "big")
    got = load_torch_state_dict(path)
    assert np.array_equal(got["x"], x[1:]) and np.array_equal(got["z"], z)
    with pytest.raises(ValueError, match=r"odd\.pt: its byteorder entry must be 'little' or 'big', got 'middle'"):
        load_torch_state_dict(craft(tmp_path / "odd.pt", obj, {"0": b"", "1": b""}, "middle"))


@pytest.mark.parametrize("offset, size, stride, message", [
    (0, (3, 2), (2, 1), r"reaches element 5, past the storage's 4 elements"),
    (4, (1,), (1,), r"reaches element 4, past the storage's 4 elements"),
    (0, (2,), (-1,), r"invalid view: offset 0, size \(2,\), stride \(-1,\)"),
    (0, (2, 2), (1,), r"invalid view"),
    (-1, (1,), (1,), r"invalid view"),
])
def test_a_view_outside_its_storage_is_refused(tmp_path, offset, size, stride, message):
    obj = {"w": Tensor(Stored("0", torch.FloatStorage, 4), offset, size, stride)}
    path = craft(tmp_path / "bad_view.pt", obj, {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(ValueError, match=r"bad_view\.pt: a tensor of storage 0 .*" + message):
        load_torch_state_dict(path)


def test_bool_bytes_other_than_0_and_1_read_as_true(tmp_path):
    path = craft(tmp_path / "bool.pt", {"b": Tensor(Stored("0", torch.BoolStorage, 3), 0, (3,), (1,))},
                 {"0": bytes([0, 1, 2])})
    got = load_torch_state_dict(path)["b"]
    assert got.dtype == np.bool_ and got.view(np.uint8).tolist() == [0, 1, 1]


def test_a_missing_storage_entry_is_refused(tmp_path):
    path = craft(tmp_path / "no_data.pt", {"w": Tensor(Stored("7", torch.FloatStorage, 1), 0, (1,), (1,))})
    with pytest.raises(ValueError, match=r"no_data\.pt is damaged: it has no entry archive/data/7 for storage 7"):
        load_torch_state_dict(path)


@pytest.mark.parametrize("global_, call", [
    ("os\nsystem", "touch {marker}"),
    ("builtins\nexec", "open({marker!r}, 'w')"),
    ("subprocess\ncall", "touch {marker}"),
])
def test_a_forbidden_global_is_refused_and_nothing_runs(tmp_path, global_, call):
    marker = tmp_path / "ran"
    raw = f"c{global_}\n(V{call.format(marker=str(marker))}\ntR.".encode()  # protocol 0: global(call)
    path = craft(tmp_path / "evil.pt", None, raw=raw)
    name = global_.replace("\n", ".")
    with pytest.raises(ValueError, match=rf"evil\.pt: refused the global {name}: flaxseq reads only a state_dict"):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_a_persistent_id_that_is_not_a_storage_is_refused(tmp_path):
    path = craft(tmp_path / "pid.pt", None, raw=b"(Vfile\nV/etc/passwd\ntQ.")
    with pytest.raises(ValueError, match=r"pid\.pt: refused the persistent id \('file', '/etc/passwd'\)"):
        load_torch_state_dict(path)


def test_the_legacy_format_is_refused_with_how_to_resave(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"old\.pt is in torch's legacy format \(torch < 1\.6.*"
                                         r"save it again in the default format, torch\.save\(torch\.load\(path\)"):
        load_torch_state_dict(tmp_path / "old.pt")


def test_a_whole_pickled_model_is_refused(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pt")
    with pytest.raises(ValueError, match=r"whole\.pt holds a whole pickled model \(it refers to "
                                         r"torch\.nn\.modules\.linear\.Linear\), not a state_dict: save its "
                                         r"weights with torch\.save\(model\.state_dict\(\), path\)"):
        load_torch_state_dict(tmp_path / "whole.pt")


@pytest.mark.filterwarnings("ignore:`torch.jit.s:DeprecationWarning")
def test_a_torchscript_archive_is_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "script.pt")
    with pytest.raises(ValueError, match=r"script\.pt is a TorchScript module \(torch\.jit\.save\), not a state_dict"):
        load_torch_state_dict(tmp_path / "script.pt")


def test_entries_that_are_not_tensors_are_refused_all_named(tmp_path):
    torch.save({"model": {"w": torch.ones(1)}, "epoch": 3, "w": torch.ones(1)}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint\.pt is not a plain state_dict: .* these entries do "
                                         r"not: 'model' \(dict\), 'epoch' \(int\); save"):
        load_torch_state_dict(tmp_path / "checkpoint.pt")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt holds a list, not a state_dict"):
        load_torch_state_dict(tmp_path / "list.pt")
    torch.save(torch.ones(2), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match=r"tensor\.pt holds a tensor, not a state_dict"):
        load_torch_state_dict(tmp_path / "tensor.pt")
    torch.save({1: torch.ones(2)}, tmp_path / "int_key.pt")
    with pytest.raises(ValueError, match=r"these entries do not: 1 \(a name of type int\)"):
        load_torch_state_dict(tmp_path / "int_key.pt")


def test_files_that_are_not_torch_files_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"notes\.txt is not a file written by torch\.save: it is not a zip"):
        load_torch_state_dict(tmp_path / "notes.txt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("folder/readme.txt", "hello")
    with pytest.raises(ValueError, match=r"other\.zip is a zip archive but not a file written by torch\.save: "
                                         r"it has no <folder>/data\.pkl"):
        load_torch_state_dict(tmp_path / "other.zip")
    for name, raw in [("garbled.pt", b"\x80\x02}q\x00(X\x01"), ("protocol.pt", b"\x80\x09}.")]:
        craft(tmp_path / name, None, raw=raw)
        with pytest.raises(TorchFileError, match=rf"{name} is a damaged torch file: "):
            load_torch_state_dict(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_torch_state_dict(tmp_path / "missing.pt")
