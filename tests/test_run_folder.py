"""Self-contained run folders: predict and export read only the folder, which can be moved;
evaluate checks its test data; `--out` and `--overwrite` touch only flaxseq runs; predict's
inputs (arguments, `--file`, standard input), truncation warnings and refusals."""

import io
import json
import os
import pathlib
import shutil
import sys

import numpy as np
import pytest

from flaxseq import data
from flaxseq.cli import main
from flaxseq.tasks.saved import load_run

SMALL = ["--epochs", "1", "--batch-size", "4", "--embed-dim", "4", "--hidden-size", "4", "--no-progress"]
WORDS = {"sport": ["goal", "match", "team", "win"], "tech": ["chip", "code", "data", "web"]}


def write_news(root, seed=0):
    rng = np.random.default_rng(seed)
    for label, vocab in WORDS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            (root / label / f"{i}.txt").write_text(" ".join(rng.choice(vocab + ["the"], size=rng.integers(3, 9))))
    return root


def files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classify run trained from a relative --data path, and its data folder."""
    root = tmp_path_factory.mktemp("classify")
    write_news(root / "news")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", "classify", "--data", "news", "--out", "run", "--max-length", "5", *SMALL]) == 0
    finally:
        os.chdir(cwd)
    return root / "run", root / "news"


@pytest.fixture(scope="module")
def tag_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag")
    sentence = "1\tThe\tthe\tDET\t_\t_\t0\t_\t_\t_\n2\tdog\tdog\tNOUN\t_\t_\t0\t_\t_\t_\n\n"
    for name in ("train", "test"):
        (root / f"{name}.conllu").write_text(sentence * 12)
    assert main(["train", "tag", "--train", str(root / "train.conllu"), "--test", str(root / "test.conllu"),
                 "--out", str(root / "run"), "--max-length", "4", *SMALL]) == 0
    return root / "run"


def test_a_moved_run_predicts_the_same_without_its_data(trained, tmp_path, capsys):
    run, news = trained
    texts = ["goal match team", "chip code web data"]
    capsys.readouterr()
    assert main(["predict", str(run), *texts]) == 0
    before = capsys.readouterr().out
    moved = tmp_path / "elsewhere"
    shutil.copytree(run, moved)
    hidden = news.with_name("news-hidden")
    news.rename(hidden)  # the training data is gone
    try:
        assert main(["predict", str(moved), *texts]) == 0
        assert capsys.readouterr().out == before
        assert main(["evaluate", str(moved)]) == 1
        assert capsys.readouterr().err == ("flaxseq: error: --data: expected a folder of <class>/<file>.txt or a "
                                           f"TSV/CSV file, got {news}, which does not exist\n")
    finally:
        hidden.rename(news)


def test_the_run_records_absolute_data_and_evaluate_works_from_anywhere(trained, tmp_path, monkeypatch, capsys):
    run, news = trained
    assert json.loads((run / "config.json").read_text())["data"] == str(news)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test_accuracy"] == json.loads((run / "metrics.json").read_text())["test_accuracy"]


def test_evaluate_refuses_data_that_changed(trained, tmp_path, capsys):
    run, news = trained
    changed = shutil.copytree(news, tmp_path / "news")
    (changed / "tech" / "0.txt").write_text("web web web")
    moved = shutil.copytree(run, tmp_path / "run")
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "data": str(changed)}))
    assert main(["evaluate", str(moved)]) == 1
    err = capsys.readouterr().err
    assert f"flaxseq: error: the test data {changed} differs from the data the run in {moved} was trained on" in err
    assert f"recorded in {moved / 'run.json'}" in err


def test_load_run_gives_the_model_parameters_predict_and_evaluate(trained):
    run, _ = trained
    saved = load_run(run)
    texts = ["goal win", "code chip"]
    ids, lengths = data.encode_texts(texts, saved.prepared.vocab, saved.config.max_length)
    logits = saved.model.apply({"params": saved.params}, ids, lengths)
    assert saved.predict(texts) == [saved.prepared.classes[i] for i in np.argmax(logits, -1)]
    assert saved.evaluate()["test_loss"] == json.loads((run / "metrics.json").read_text())["test_loss"]


def test_a_damaged_checkpoint_is_refused_naming_the_file(trained, tmp_path, capsys):
    moved = shutil.copytree(trained[0], tmp_path / "run")
    path = moved / "checkpoint" / "checkpoint.msgpack"
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    assert main(["predict", str(moved), "goal"]) == 1
    assert capsys.readouterr().err == f"flaxseq: error: {path} is damaged: its content does not match the hash " \
                                      "it was saved with; it was not loaded\n"


def test_a_broken_json_file_is_named(trained, tmp_path, capsys):
    moved = shutil.copytree(trained[0], tmp_path / "run")
    (moved / "vocab.json").write_text("{not json")
    assert main(["predict", str(moved), "goal"]) == 1
    assert capsys.readouterr().err.startswith(f"flaxseq: error: {moved / 'vocab.json'} is not valid JSON")


def test_out_refuses_a_folder_that_is_not_a_run(trained, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("my own settings")
    (mine / "metrics.json").write_text("my own numbers")
    for extra in ([], ["--overwrite"]):
        assert main(["train", "classify", "--data", str(trained[1]), "--out", str(mine), *SMALL, *extra]) == 1
        assert f"flaxseq: error: --out {mine} is not empty and holds no flaxseq run (config.json, metrics.json)" \
            in capsys.readouterr().err
    assert files(mine) == {pathlib.Path("config.json"): b"my own settings",
                           pathlib.Path("metrics.json"): b"my own numbers"}


def test_overwrite_replaces_the_run_and_keeps_files_it_did_not_write(trained, tmp_path):
    moved = shutil.copytree(trained[0], tmp_path / "run")
    (moved / "notes.txt").write_text("mine")
    (moved / "checkpoint" / "keep.bin").write_bytes(b"mine too")
    old = load_run(moved).params
    assert main(["train", "classify", "--data", str(trained[1]), "--out", str(moved), "--max-length", "5", *SMALL,
                 "--seed", "1", "--overwrite"]) == 0
    assert (moved / "notes.txt").read_text() == "mine"
    assert (moved / "checkpoint" / "keep.bin").read_bytes() == b"mine too"
    assert json.loads((moved / "config.json").read_text())["seed"] == 1
    new = load_run(moved).params
    assert not np.array_equal(old["fc"]["kernel"], new["fc"]["kernel"])


def test_predict_reads_a_file_or_standard_input(trained, tmp_path, monkeypatch, capsys):
    run = trained[0]
    texts = ["goal match", "chip web", "the team"]
    capsys.readouterr()
    assert main(["predict", str(run), *texts]) == 0
    expected = capsys.readouterr().out
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    assert main(["predict", str(run), "--file", str(tmp_path / "texts.txt")]) == 0
    assert capsys.readouterr().out == expected
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(texts)))
    assert main(["predict", str(run), "--file", "-"]) == 0
    assert capsys.readouterr().out == expected
    assert [line.split("\t")[0] for line in expected.splitlines()] == texts


def test_predict_takes_texts_or_a_file_not_both(trained, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("goal\n")
    for args in (["goal", "--file", str(tmp_path / "t.txt")], []):
        with pytest.raises(SystemExit) as stop:
            main(["predict", str(trained[0]), *args])
        assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "flaxseq predict: error: argument --file: not allowed with texts" in err
    assert "flaxseq predict: error: expected texts or --file PATH" in err


def test_empty_input_is_refused(trained, tmp_path, capsys):
    run = trained[0]
    assert main(["predict", str(run), "goal", "  "]) == 1
    assert capsys.readouterr().err == "flaxseq: error: text 2 is empty; expected a text with at least one word\n"
    (tmp_path / "t.txt").write_text("goal\n\nweb\n")
    assert main(["predict", str(run), "--file", str(tmp_path / "t.txt")]) == 1
    assert f"flaxseq: error: {tmp_path / 't.txt'}:2 is empty" in capsys.readouterr().err
    (tmp_path / "none.txt").write_text("")
    assert main(["predict", str(run), "--file", str(tmp_path / "none.txt")]) == 1
    assert "holds no text; expected one text per line" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"texts\[0\] is empty"):
        load_run(run).predict([""])


def test_a_truncated_text_is_warned_about(trained, capsys):
    run = trained[0]
    assert main(["predict", str(run), "goal " * 7, "web"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ("flaxseq: warning: text 1 has 7 words; the classifier read only the first 5 "
                            "(the run's --max-length)\n")
    assert len(captured.out.splitlines()) == 2


def test_the_tagger_tags_every_word_of_a_long_sentence(tag_run, capsys):
    sentence = " ".join(["the", "dog"] * 50)  # 100 words, the run's --max-length is 4
    capsys.readouterr()
    assert main(["predict", str(tag_run), sentence, "dog"]) == 0
    first, second = (line.split("\t")[1].split() for line in capsys.readouterr().out.splitlines())
    assert len(first) == 100 and len(second) == 1
    run = load_run(tag_run)
    short = run.predict(["the dog the dog"])[0].split()
    assert first[:2] == short[:2]  # the forward state at the first words does not depend on the length


def test_resume_refuses_data_that_changed_and_changes_no_byte(trained, tmp_path, capsys):
    run, news = trained
    moved = shutil.copytree(run, tmp_path / "run")
    before = files(moved)
    text = news / "tech" / "0.txt"
    original = text.read_bytes()
    text.write_text("web web web")
    try:
        assert main(["train", "classify", "--data", str(news), "--out", str(moved), "--max-length", "5", *SMALL,
                     "--resume"]) == 1
    finally:
        text.write_bytes(original)
    err = capsys.readouterr().err
    assert err.startswith(f"flaxseq: error: --resume: the data differs from the data the run in {moved} was "
                          "trained on; nothing was overwritten:\n  data: ")
    assert files(moved) == before
