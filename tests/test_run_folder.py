"""Self-contained run folders: predict and export read only the folder, which can be moved;
evaluate checks its test data; `--out` and `--overwrite` touch only flaxseq runs; predict's
inputs (arguments, `--file`, standard input), truncation warnings and refusals."""

import io
import json
import os
import pathlib
import shutil
import sys

import jax
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
        assert capsys.readouterr().err == (f"flaxseq: error: the test data of the run in {moved}, {news}, does not "
                                           "exist; if it moved, pass its new path (flaxseq evaluate RUN --data PATH, "
                                           "or run.evaluate(data=PATH))\n")
        assert main(["evaluate", str(moved), "--data", str(hidden)]) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["test_loss"] == json.loads((run / "metrics.json").read_text())["test_loss"]
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


def test_seq2seq_warns_of_letters_it_never_saw(monkeypatch):
    from flaxseq.tasks import seq2seq

    letters = data.Vocab(list("abc"))
    prepared = seq2seq.Prepared(letters, data.Vocab(["AH"]), {})
    monkeypatch.setattr(seq2seq, "decode", lambda model, params, prepared, src, *rest: [["AH"]] * len(src))
    warned = []
    phonemes = seq2seq.predict(None, None, prepared, seq2seq.Seq2SeqConfig(), ["abc", "cafe"], warned.append)
    assert phonemes == ["AH", "AH"]
    assert warned == ["word 2 ('cafe') has letters the model never saw in training ('e', 'f'); it read them as <unk>"]


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


def test_evaluate_data_must_exist_and_be_the_same(trained, tmp_path, capsys):
    run, news = trained
    assert main(["evaluate", str(run), "--data", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err == (f"flaxseq: error: data: {tmp_path / 'nowhere'} does not exist; expected the "
                                       "run's test data at a new path\n")
    changed = shutil.copytree(news, tmp_path / "news")
    (changed / "tech" / "0.txt").write_text("web web web")
    assert main(["evaluate", str(run), "--data", str(changed)]) == 1
    assert f"the test data {changed} differs from the data the run in {run} was trained on" in capsys.readouterr().err


def test_resume_reads_moved_data_and_records_where_it_is(trained, tmp_path, capsys):
    run, news = trained
    moved, data_copy = shutil.copytree(run, tmp_path / "run"), shutil.copytree(news, tmp_path / "data")
    (moved / "config.json").write_text("{garbled")  # repaired by the resume, which knows the run's options
    assert main(["train", "classify", "--data", str(data_copy), "--out", str(moved), "--max-length", "5", *SMALL,
                 "--resume"]) == 0
    assert json.loads((moved / "config.json").read_text())["data"] == str(data_copy)
    assert json.loads((moved / "run.json").read_text())["data"]["data"]["source"] == str(data_copy)
    assert load_run(moved).evaluate()["test_loss"] == json.loads((run / "metrics.json").read_text())["test_loss"]


def test_wall_seconds_of_a_resumed_run_count_the_earlier_processes(trained, tmp_path):
    from flaxseq.checkpoint import read_checkpoint, save_checkpoint

    moved = shutil.copytree(trained[0], tmp_path / "run")
    arrays, meta = read_checkpoint(moved / "checkpoint")
    save_checkpoint(moved / "checkpoint", arrays, {**meta, "seconds": 5000.0})  # as if epoch 1 had taken 5000 s
    assert main(["train", "classify", "--data", str(trained[1]), "--out", str(moved), "--max-length", "5", *SMALL,
                 "--resume"]) == 0
    wall = json.loads((moved / "metrics.json").read_text())["wall_seconds"]
    assert 5000 < wall < 5000 + 600


def test_an_edited_config_is_refused_naming_what_differs(trained, tmp_path, capsys):
    moved = shutil.copytree(trained[0], tmp_path / "run")
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "dropout": 0.1}))
    assert main(["predict", str(moved), "goal"]) == 1
    assert capsys.readouterr().err == (
        f"flaxseq: error: {moved / 'config.json'} differs from the configuration its checkpoint was trained with "
        f"(was it edited?):\n  dropout: the checkpoint has {config['dropout']!r}, config.json has 0.1\n")
    (moved / "config.json").write_text(json.dumps({**config, "hidden_size": "4"}))
    assert main(["predict", str(moved), "goal"]) == 1
    assert capsys.readouterr().err == f"flaxseq: error: {moved / 'config.json'}: hidden_size must be int, got '4'\n"


def test_export_keeps_an_existing_file_unless_told_to_replace_it(trained, tmp_path, capsys):
    target = tmp_path / "model.pt"
    target.write_bytes(b"my weights")
    assert main(["export", str(trained[0]), str(target)]) == 1
    assert capsys.readouterr().err == (f"flaxseq: error: FILE: {target} exists; pass --overwrite to replace it "
                                       "(API: overwrite=True)\n")
    assert target.read_bytes() == b"my weights"
    assert main(["export", str(trained[0]), str(target), "--overwrite"]) == 0
    import torch

    state = torch.load(target)  # a state_dict of the run's parameters
    assert state["fc.weight"].shape == (2, 8) and not (tmp_path / "model.pt.partial").exists()
    assert main(["export", str(trained[0]), str(tmp_path)]) == 1
    assert capsys.readouterr().err.endswith(f"FILE: {tmp_path} is a folder; expected the name of the file to write, "
                                            "e.g. model.pt\n")


def test_resuming_a_run_of_another_task_names_it(tag_run, trained, capsys):
    assert main(["train", "classify", "--data", str(trained[1]), "--out", str(tag_run), *SMALL, "--resume"]) == 1
    assert capsys.readouterr().err == (f"flaxseq: error: --resume: {tag_run} holds a tag run, not a classify run; "
                                       "resume it with flaxseq train tag ... --resume\n")


def test_a_garbled_manifest_says_what_to_do(trained, tmp_path, capsys):
    moved = shutil.copytree(trained[0], tmp_path / "run")
    (moved / "run.json").write_text("{garbled")
    assert main(["train", "classify", "--data", str(trained[1]), "--out", str(moved), *SMALL, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"flaxseq: error: {moved / 'run.json'} is not valid JSON")
    assert err.endswith(f"the run in {moved} cannot be read (nor resumed, nor overwritten): repair or delete run.json "
                        "(or the folder), or use another folder\n")


def test_predict_on_a_missing_run_says_so(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "none"), "goal"]) == 1
    assert capsys.readouterr().err == (f"flaxseq: error: {tmp_path / 'none'} does not exist; expected a run folder "
                                       "written by flaxseq train\n")


def test_a_header_row_is_skipped_with_header_and_warned_about_without(tmp_path, capsys):
    rows = ["text\tlabel"] + [f"{w} {w} the\t{label}" for label, ws in WORDS.items() for w in ws for _ in range(3)]
    (tmp_path / "news.tsv").write_text("\n".join(rows) + "\n")
    args = ["train", "classify", "--data", str(tmp_path / "news.tsv"), "--max-length", "5", *SMALL]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert ("flaxseq: warning: --data " + str(tmp_path / "news.tsv") + ": the label of its first row, 'label', is in "
            "no other row; if that row names the columns, pass --header") in capsys.readouterr().err
    assert json.loads((tmp_path / "plain" / "classes.json").read_text()) == ["label", "sport", "tech"]
    assert main([*args, "--out", str(tmp_path / "header"), "--header"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "header" / "classes.json").read_text()) == ["sport", "tech"]


def test_export_refuses_a_file_inside_the_run(trained, tmp_path, capsys):
    moved = shutil.copytree(trained[0], tmp_path / "run")
    before = files(moved)
    assert main(["export", str(moved), str(moved / "config.json"), "--overwrite"]) == 1
    assert capsys.readouterr().err == (f"flaxseq: error: FILE: {moved / 'config.json'} is inside the run folder "
                                       f"{moved}, whose files the run needs; write the state_dict elsewhere\n")
    assert files(moved) == before


def test_resume_below_the_epochs_trained_changes_no_byte(trained, tmp_path, capsys):
    moved = shutil.copytree(trained[0], tmp_path / "run")
    (moved / "checkpoint").rename(tmp_path / "checkpoint")  # a run of two epochs: its checkpoint's history
    from flaxseq.checkpoint import read_checkpoint, save_checkpoint

    arrays, meta = read_checkpoint(tmp_path / "checkpoint")
    save_checkpoint(moved / "checkpoint", arrays, {**meta, "history": meta["history"] * 2})
    before = files(moved)
    assert main(["train", "classify", "--data", str(trained[1]), "--out", str(moved), "--max-length", "5", *SMALL,
                 "--resume"]) == 1
    assert capsys.readouterr().err == (f"flaxseq: error: --resume: the run in {moved} has trained 2 epochs, more "
                                       "than --epochs 1; pass --epochs 2 or more (nothing was overwritten)\n")
    assert files(moved) == before


def test_resume_with_cosine_decay_names_only_what_differs(trained, tmp_path, capsys):
    moved = shutil.copytree(trained[0], tmp_path / "run")
    assert main(["train", "classify", "--data", str(trained[1]), "--out", str(moved), "--max-length", "5", *SMALL,
                 "--resume", "--cosine-decay"]) == 1
    assert capsys.readouterr().err.endswith("nothing was overwritten:\n  cosine_decay: checkpoint has False, this "
                                            "run has True\n")


def test_the_tagger_never_predicts_its_special_tags(tag_run, capsys):
    run = load_run(tag_run)
    specials = set(run.prepared.tags.specials)
    big = {"params": jax.tree.map(lambda a: a, run.params)}
    bias = big["params"]["fc"]["bias"]
    big["params"]["fc"]["bias"] = bias.at[: len(specials)].set(1e6)  # the specials' logits far ahead
    tags = run.task.predict(run.model, big["params"], run.prepared, run.config, ["the dog", "dog"], print)
    assert all(tag not in specials for text in tags for tag in text.split())


def test_a_header_names_the_columns_and_one_class_is_refused(tmp_path, capsys):
    rows = ["label,text"] + [f"{label},{w} {w} the" for label, ws in WORDS.items() for w in ws for _ in range(3)]
    (tmp_path / "named.csv").write_text("\n".join(rows) + "\n")
    args = ["--max-length", "5", *SMALL]
    assert main(["train", "classify", "--data", str(tmp_path / "named.csv"), "--header", "--out",
                 str(tmp_path / "named"), *args]) == 0
    assert json.loads((tmp_path / "named" / "classes.json").read_text()) == ["sport", "tech"]
    (tmp_path / "ids.tsv").write_text("id\tbody\tkind\n" + "".join(f"{i}\tgoal\tsport\n" for i in range(9)))
    assert main(["train", "classify", "--data", str(tmp_path / "ids.tsv"), "--header", "--out",
                 str(tmp_path / "ids"), *args]) == 1
    assert capsys.readouterr().err.endswith("with --header, the header row must name a 'text' and a 'label' "
                                            "column, or have two columns (text, label); got ['id', 'body', 'kind']\n")
    (tmp_path / "one.tsv").write_text("".join(f"goal {i}\tsport\n" for i in range(12)))
    assert main(["train", "classify", "--data", str(tmp_path / "one.tsv"), "--out", str(tmp_path / "one"),
                 *args]) == 1
    assert capsys.readouterr().err.endswith("expected texts of at least two classes, got one class ('sport')\n")
    assert not (tmp_path / "one").exists()
    (tmp_path / "few.tsv").write_text("goal\tsport\nchip\ttech\nweb\ttech\nwin\tsport\n")
    assert main(["train", "classify", "--data", str(tmp_path / "few.tsv"), "--out", str(tmp_path / "few"),
                 *args]) == 1
    assert capsys.readouterr().err == (f"flaxseq: error: --data {tmp_path / 'few.tsv'}: 4 texts are too few to split "
                                       "into training, validation and test (80/10/10); expected at least 10\n")


def test_out_inside_the_data_folder_is_refused(trained, capsys):
    news = trained[1]
    with pytest.raises(SystemExit):
        main(["train", "classify", "--data", str(news), "--out", str(news / "run"), *SMALL])
    assert f"argument --out: {news / 'run'} is inside the --data folder {news}" in capsys.readouterr().err
    assert not (news / "run").exists()
