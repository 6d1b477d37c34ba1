"""flaxseq's layers and cells against PyTorch's, converted weights, outputs and gradients."""

import numpy as np
import pytest

from parity.cases import cell_covering_cases, cell_grid, covering_cases, layer_grid, representative_cases, run_case


def check(case):
    report = run_case(case, seed=1)
    assert report.passed, f"{case.label()} {case.dtype}:\n" + "\n".join(report.failures())
    # float64 runs really are float64, float32 ones float32
    assert report.output_dtypes and all(dt == np.dtype(case.dtype) for dt in report.output_dtypes)
    # every parameter, the input and each given initial state has a gradient compared
    names = {d.name for d in report.gradients}
    assert "dinput" in names and ("dh_0" in names) == case.hx


@pytest.mark.parametrize("case", covering_cases(strength=3), ids=lambda c: f"{c.label()} {c.dtype}")
def test_layer_covering(case):
    check(case)


@pytest.mark.parametrize("case", cell_covering_cases(strength=3), ids=lambda c: f"{c.label()} {c.dtype}")
def test_cell_covering(case):
    check(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", cell_grid(), ids=lambda c: f"{c.label()} {c.dtype}")
def test_cell_full_grid(case):
    check(case)


def _report_params():
    """The report's cases; its NNX rows are in the slow set (the covering cases and cell grid
    (`cell_covering_cases`) already run both front ends by default, and `python -m parity` runs them all)."""
    return [
        pytest.param(c, marks=[pytest.mark.slow] if c.api == "nnx" else [], id=f"{c.label()} {c.dtype}")
        for c in representative_cases()
    ]


@pytest.mark.parametrize("case", _report_params())
def test_report_cases(case):
    check(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", layer_grid(), ids=lambda c: f"{c.label()} {c.dtype}")
def test_layer_full_grid(case):
    check(case)
