"""One source for the version: pyproject.toml, read back through the package metadata."""

import importlib.metadata
import pathlib
import subprocess
import sys
import tomllib

import flaxseq

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pyproject_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_version_is_pyprojects():
    assert flaxseq.__version__ == importlib.metadata.version("flaxseq") == pyproject_version()


def test_version_written_nowhere_else_in_the_package():
    version = pyproject_version()
    holders = [p.relative_to(ROOT) for p in (ROOT / "flaxseq").rglob("*.py") if f'"{version}"' in p.read_text()]
    assert holders == []


def test_version_without_metadata():
    # A source tree on sys.path without an install: the import works and says the version is unknown.
    code = (
        "import importlib.metadata as m\n"
        "def missing(name): raise m.PackageNotFoundError(name)\n"
        "m.version = missing\n"
        "import flaxseq; print(flaxseq.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "0+unknown"
