"""Readers for the file formats of the training data; each returns plain Python lists.

    texts, labels = read_table("reviews.csv", delimiter=",", header=True, text_column="review", label_column="label")
    texts, labels = read_folder("bbcnews/data")                 # <class>/<file>.txt
    sentences = read_conllu("en_ewt-ud-dev.conllu")             # [(words, upos_tags), ...]
    entries = read_pronunciations("cmudict.dict")               # [(word, phonemes), ...]

Text files are read as UTF-8, falling back to latin-1 for a file that is not valid UTF-8.
A malformed line raises ValueError with `file:line:`; a file or folder with no data raises
ValueError too.
"""

import csv
import io
import pathlib
import re

PRONUNCIATION_ALTERNATE = re.compile(r"\(\d+\)$")  # word(2): a second pronunciation
PHONEME = re.compile(r"[A-Za-z]+[0-9]?")


def read_text(path) -> str:
    """The contents of `path`, decoded as UTF-8, or as latin-1 if it is not valid UTF-8."""
    data = pathlib.Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_table(
    path,
    text_column: int | str = 0,
    label_column: int | str = 1,
    delimiter: str = "\t",
    header: bool = False,
) -> tuple[list[str], list[str]]:
    """Texts and labels from a TSV or CSV file, one example per row; blank lines are skipped.
    Every row has the first row's number of columns, a non-empty text and a non-empty label
    (surrounding spaces stripped); a row that has not raises ValueError naming `file:line`.

    Args:
        path: the file.
        text_column, label_column: column indices, or names from the header row.
        delimiter: `"\\t"` (quotes are ordinary characters) or `","` (CSV quoting).
        header: whether the first row names the columns (it is not an example).

    Returns:
        texts, labels: two lists of str of the same length.
    """
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, quoting=quoting)
    columns = None
    if header:
        columns = next(rows, None)
        if columns is None:
            raise ValueError(f"{path}: empty file, expected a header row")
    text_index = _column_index(path, "text_column", text_column, columns)
    label_index = _column_index(path, "label_column", label_column, columns)
    needed = max(text_index, label_index) + 1
    width = len(columns) if columns is not None else None
    texts, labels = [], []
    for row in rows:
        if not any(field.strip() for field in row):
            continue
        if len(row) < needed:
            raise ValueError(f"{path}:{rows.line_num}: expected at least {needed} columns, got {len(row)}: {row!r}")
        width = len(row) if width is None else width
        if len(row) != width:
            raise ValueError(f"{path}:{rows.line_num}: expected {width} columns, as the first row has, got "
                             f"{len(row)}: {row!r} (a {'tab' if delimiter == chr(9) else 'comma'} inside a field?)")
        text, label = row[text_index], row[label_index].strip()
        if not text.strip() or not label:
            raise ValueError(f"{path}:{rows.line_num}: expected a text and a label, got an empty "
                             f"{'label' if text.strip() else 'text'}: {row!r}")
        texts.append(text)
        labels.append(label)
    if not texts:
        raise ValueError(f"{path}: no examples found")
    return texts, labels


def read_folder(path, suffix: str = ".txt") -> tuple[list[str], list[str]]:
    """Texts and labels from a folder of class folders: `path/<class>/<file>.txt`.

    Classes and files are read in sorted order; the label of a text is its folder's name.
    Files directly under `path`, files not ending in `suffix`, and hidden folders and files
    (`.ipynb_checkpoints`, names starting with `.`) are ignored.

    Returns:
        texts, labels: two lists of str of the same length.
    """
    root = pathlib.Path(path)
    if not root.is_dir():
        raise ValueError(f"{path}: expected a folder of class folders, got no such folder")
    class_folders = sorted(folder for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith("."))
    if not class_folders:
        raise ValueError(f"{path}: expected class folders inside, found none")
    texts, labels = [], []
    for folder in class_folders:
        files = sorted(file for file in folder.iterdir()
                       if file.is_file() and file.name.endswith(suffix) and not file.name.startswith("."))
        if not files:
            raise ValueError(f"{folder}: expected {suffix} files in class folder {folder.name!r}, found none")
        for file in files:
            texts.append(read_text(file))
            labels.append(folder.name)
    return texts, labels


def read_conllu(path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL-U file as `(words, upos_tags)`, the FORM and UPOS columns.

    Comment lines (`#`), multiword-token ranges (`1-2`) and empty nodes (`1.1`) are skipped;
    sentences are separated by blank lines. Word ids must run 1, 2, 3, ... in each sentence.
    """
    sentences = []
    words, tags = [], []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise ValueError(f"{path}:{number}: expected 10 tab-separated fields, got {len(fields)}: {line!r}")
        token_id = fields[0]
        if re.fullmatch(r"\d+-\d+|\d+\.\d+", token_id):
            continue
        if token_id != str(len(words) + 1):
            raise ValueError(f"{path}:{number}: expected word id {len(words) + 1}, got {token_id!r}")
        if not fields[1] or not fields[3]:
            raise ValueError(f"{path}:{number}: expected a word (FORM) and a tag (UPOS), got an empty "
                             f"{'FORM' if not fields[1] else 'UPOS'}: {line!r}")
        words.append(fields[1])
        tags.append(fields[3])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise ValueError(f"{path}: no sentences found")
    return sentences


def read_pronunciations(path, stress: bool = False) -> list[tuple[str, list[str]]]:
    """Entries of a pronunciation dictionary in the CMUdict format: `WORD  PH1 PH2 ...`.

    Lines starting with `;;;` or `#` are comments, and `# ...` ends a line. Alternate
    pronunciations (`word(2)`) are dropped, keeping each word's first one. Stress digits
    (`AH0`, `EY1`) are stripped unless `stress` is True.

    Returns:
        `(word, phonemes)` pairs in file order, e.g. `("cat", ["K", "AE", "T"])`.
    """
    entries = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.startswith((";;;", "#")):
            continue
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        word, phonemes = fields[0], fields[1:]
        if not phonemes:
            raise ValueError(f"{path}:{number}: expected a word and its phonemes, got {line!r}")
        bad = [phoneme for phoneme in phonemes if not PHONEME.fullmatch(phoneme)]
        if bad:
            raise ValueError(f"{path}:{number}: expected phonemes like 'AH0' or 'K', got {bad} in {line!r}")
        if PRONUNCIATION_ALTERNATE.search(word):
            continue
        if not stress:
            phonemes = [phoneme.rstrip("0123456789") for phoneme in phonemes]
        entries.append((word, phonemes))
    if not entries:
        raise ValueError(f"{path}: no entries found")
    return entries


def _column_index(path, name: str, column, columns: list[str] | None) -> int:
    if isinstance(column, bool) or not isinstance(column, (int, str)):
        raise TypeError(f"{name} must be an int or a column name, got {type(column).__name__}")
    if isinstance(column, str):
        if columns is None:
            raise ValueError(f"{name}={column!r} names a column, which needs header=True")
        if column not in columns:
            raise ValueError(f"{path}: {name}={column!r} is not in the header {columns}")
        return columns.index(column)
    if column < 0:
        raise ValueError(f"{name} must be a non-negative column index, got {column}")
    return column
