"""docs/porting.md is a tested example: its Python blocks run in order, in one namespace."""

import pathlib
import re

import pytest

GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "porting.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_code():
    assert len(blocks()) >= 8


def test_the_guide_runs(capsys):
    namespace = {"__name__": "porting_guide"}
    for index, block in enumerate(blocks()):
        try:
            exec(compile(block, f"{GUIDE.name} block {index + 1}", "exec"), namespace)
        except Exception as error:  # name the block that failed
            pytest.fail(f"{GUIDE.name}, block {index + 1} fails: {type(error).__name__}: {error}")
    printed = capsys.readouterr().out
    assert "worst gradient" in printed and "losses, PyTorch" in printed
