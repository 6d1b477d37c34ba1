"""plot_curves draws without pyplot and leaves the process's matplotlib backend alone."""

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("matplotlib")

ROOT = pathlib.Path(__file__).resolve().parents[1]
HISTORY = [
    {"epoch": 1, "train_loss": 1.2, "valid_loss": 1.0, "train_accuracy": 0.4, "valid_accuracy": 0.5},
    {"epoch": 2, "train_loss": 0.8, "valid_loss": 0.9, "train_accuracy": 0.7, "valid_accuracy": 0.6},
]


def run_plot(tmp_path: pathlib.Path, before: str) -> dict:
    """Run `before`, then plot_curves, in a fresh interpreter; what matplotlib looked like after."""
    code = textwrap.dedent(f"""
        import json, sys
        import matplotlib
        {before}
        backend = matplotlib.rcParams["backend"]
        had_pyplot = "matplotlib.pyplot" in sys.modules
        figures = sys.modules["matplotlib.pyplot"].get_fignums() if had_pyplot else None
        from flaxseq.tasks.run import plot_curves
        plot_curves({HISTORY!r}, {str(tmp_path / "curves.png")!r})
        print(json.dumps({{
            "backend": [backend, matplotlib.rcParams["backend"]],
            "pyplot": [had_pyplot, "matplotlib.pyplot" in sys.modules],
            "figures": [figures, sys.modules["matplotlib.pyplot"].get_fignums() if had_pyplot else None],
        }}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def png_size(path: pathlib.Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_backend_and_pyplot_untouched(tmp_path):
    state = run_plot(tmp_path, 'matplotlib.use("svg")')
    assert state["backend"] == ["svg", "svg"]
    assert state["pyplot"] == [False, False]
    assert png_size(tmp_path / "curves.png") == (1000, 400)  # figsize 10 x 4 inches at 100 dpi


def test_open_pyplot_figures_untouched(tmp_path):
    # A notebook with pyplot imported and a figure of its own open.
    state = run_plot(tmp_path, 'matplotlib.use("svg"); import matplotlib.pyplot as plt; plt.figure(7)')
    assert state["backend"] == ["svg", "svg"]
    assert state["figures"] == [[7], [7]]
    assert png_size(tmp_path / "curves.png") == (1000, 400)
