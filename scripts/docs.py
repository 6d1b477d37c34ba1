"""The API reference: every public module of flaxseq and parity, rendered from the docstrings by pdoc.

    python scripts/docs.py [OUT]     # default build/docs; open OUT/index.html

A module is public when no part of its dotted name starts with "_". pdoc on a package alone
would skip the submodules its `__all__` leaves out, so every module is listed here. Any
warning while rendering (an unresolvable `__all__` entry, a bad annotation, a docstring pdoc
cannot process) fails the build.
"""

import importlib
import pathlib
import pkgutil
import shutil
import sys
import warnings

import pdoc.doc
import pdoc.render

PACKAGES = ("flaxseq", "parity")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, whatever the environment has installed


def public_modules(package: str) -> list[str]:
    """`package` and all its public submodules, imported (an import error fails here, loudly)."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, f"{package}.", onerror=lambda name: importlib.import_module(name)):
        if not any(part.startswith("_") for part in info.name.split(".")):
            importlib.import_module(info.name)
            names.append(info.name)
    return names


def render(modules: list[str], out: pathlib.Path) -> None:
    """pdoc's own `pdoc.pdoc(..., output_directory=out)`, on exactly `modules`."""
    docs = {name: pdoc.doc.Module.from_name(name) for name in modules}
    for name, module in docs.items():
        page = out / f"{name.replace('.', '/')}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(pdoc.render.html_module(module, docs))
    (out / "index.html").write_text(pdoc.render.html_index(docs))
    (out / "search.js").write_text(pdoc.render.search_index(docs))


def main(out: pathlib.Path) -> None:
    modules = [name for package in PACKAGES for name in public_modules(package)]
    shutil.rmtree(out, ignore_errors=True)
    pdoc.render.configure(docformat="google", show_source=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # after the imports: third-party import-time warnings are not the docs'
        render(modules, out)
    print(f"docs: {len(modules)} modules in {out}; open {out / 'index.html'}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build/docs"))
