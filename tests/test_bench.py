"""`python -m parity.bench` runs: every kind of row at tiny sizes, the table, JSON and chart.

A benchmark is not a test: nothing here checks a time.
"""

import dataclasses
import json

import pytest

from parity import bench

TINY = dict(batch=2, time=3, input_size=4, hidden_size=6, budget=0.01)


def tiny(row: bench.Row) -> bench.Row:
    sizes = {**TINY, "proj_size": 3 if row.proj_size else 0}
    if row.extra:
        extra = {k: min(v, 7) if isinstance(v, int) else v for k, v in row.extra.items()}
        extra["hidden_size"] = extra["embed_size"] = 6
        sizes["extra"] = extra
        sizes.pop("input_size")
    return dataclasses.replace(row, **sizes)


@pytest.fixture
def tiny_rows(monkeypatch):
    monkeypatch.setattr(bench, "ROWS", [tiny(r) for r in bench.ROWS])
    monkeypatch.setattr(bench, "PEAK_SIZE", 64)
    return [r.name for r in bench.ROWS]


# one row of each code path: a layer with and without flax's own LSTM column (a projection), a
# tutorial model with and without teacher forcing, a language model as users write it (a GRU);
# every row: -m slow
PATHS = ["toy-lstm", "classifier-lstm-proj", "model-classifier", "model-seq2seq", "word-lm-gru"]


@pytest.mark.parametrize("every", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["paths", "every"])
def test_rows_run(tiny_rows, tmp_path, every):
    pytest.importorskip("matplotlib")
    rows = tiny_rows if every else PATHS
    assert set(PATHS) <= set(tiny_rows)
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    argv = ["--rows", *rows, "--no-torch-compile", "--no-memory", "--json", str(out), "--png", str(png)]
    assert bench.main(argv) == 0
    records = json.loads(out.read_text())["records"]
    assert [r["row"] for r in records] == rows
    for record in records:
        assert set(record["passes"]) == set(bench.PASSES), record["notes"]
        for result in record["passes"].values():
            columns = set(result)
            assert {"flaxseq", "torch"} <= columns
            if record["config"]["kind"] == "LSTM" and not record["config"]["proj_size"]:
                assert "flax" in columns
            assert result["torch"]["ratio"] == 1.0
            for r in result.values():
                assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["rounds"] >= 3
            assert result["flaxseq"]["memory_mb"] is not None
        train = record["passes"]["train"]
        listed = bench.train_products(bench.Row(**record["config"])) is not None
        assert all((r["gflop_per_s"] is not None) == listed for r in train.values()), record["row"]
    assert png.stat().st_size > 0
    assert json.loads(out.read_text())["environment"]["peak_gflop_per_s"]["jax"] > 0


def test_language_model_rows_as_users_write_them():
    by_name = {r.name: r for r in bench.ROWS}
    for name in ("word-lm-lstm", "word-lm-gru", "char-lm-lstm"):
        assert by_name[name].kind == "lm"
    word = by_name["word-lm-lstm"]
    assert (word.time, word.batch) == (35, 20)  # time-major 35 x 20, the example's bptt and batch
    torch = pytest.importorskip("torch")
    model = bench.torch_rnn_model(word, torch)
    assert sum(p.numel() for p in model.parameters()) == 4_653_200
    params = bench.flax_rnn_model(tiny(word))
    assert params is not None
    flop = bench.step_flop(by_name["classifier-lstm"])
    assert abs(flop / 1e9 - 21.8) < 0.1  # 22.6 GFLOP less the first layer's unneeded input gradient


def test_keep_malloc_columns_and_floor(tiny_rows, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--rows", "word-lm-lstm", "--passes", "train", "--malloc", "both", "--floor", "--no-memory",
            "--no-torch-compile", "--json", str(out)]
    assert bench.main(argv) == 0
    run = json.loads(out.read_text())
    record = run["records"][0]
    assert run["args"]["malloc"] == "both"
    assert {"flaxseq", "torch", "flaxseq+keep", "torch+keep"} <= set(record["passes"]["train"]), record["notes"]
    floor = record["floor"]
    assert 0 < floor["in_loop_ms"] < floor["floor_ms"] and floor["flaxseq_over_floor"] > 0
    assert any(n.startswith("floor ") for n in record["notes"])


def test_torch_compile_column_or_note(tiny_rows, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--rows", "toy-gru", "--passes", "forward", "--no-memory", "--compile-limit", "600", "--json", str(out)]
    assert bench.main(argv) == 0
    record = json.loads(out.read_text())["records"][0]
    assert "torch.compile" in record["passes"]["forward"] or any("torch.compile" in n for n in record["notes"])


def test_torch_memory_child():
    row = next(r for r in bench.ROWS if r.name == "toy-lstm")
    memory = bench.torch_memory_subprocess(row, "float32")
    assert set(memory) == set(bench.PASSES) and all(v >= 0 for v in memory.values()), memory


def test_list_and_unknown_rows(capsys):
    assert bench.main(["--list", "--quick"]) == 0
    listed = capsys.readouterr().out
    assert all(r.name in listed for r in bench.ROWS if r.quick)
    with pytest.raises(SystemExit, match="unknown rows"):
        bench.main(["--rows", "no-such-row"])


def test_columns_and_xla_options(tiny_rows, tmp_path):
    out, dump = tmp_path / "bench.json", tmp_path / "dump"
    argv = ["--rows", "toy-lstm", "--columns", "flaxseq", "--no-memory", "--json", str(out),
            "--xla-option", f"xla_dump_to={dump}", "--xla-option", "xla_cpu_enable_fast_math=false"]
    assert bench.main(argv) == 0
    run = json.loads(out.read_text())
    assert run["args"]["xla_options"] == {"xla_dump_to": str(dump), "xla_cpu_enable_fast_math": False}
    for result in run["records"][0]["passes"].values():
        assert set(result) == {"flaxseq", "torch"}  # no flax stack, no torch.compile
    dumped = {p.name.split(".")[1] for p in dump.glob("*.before_optimizations.txt")}
    assert {"jit_train_step", "jit__lambda"} <= dumped  # the options reached the row's compilations


@pytest.mark.parametrize("option, message", [
    ("xla_no_such_option=1", "rejected by XLA: .*xla_no_such_option"),
    ("no-equals-sign", "expected NAME=VALUE, got 'no-equals-sign'"),
])
def test_bad_xla_option_stops_before_any_row(option, message):
    with pytest.raises(SystemExit, match=f"--xla-option: .*{message}"):
        bench.main(["--rows", "toy-lstm", "--xla-option", option])
