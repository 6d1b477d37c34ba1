"""The `flaxseq` command on small data: train, resume, evaluate, predict, export."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import flaxseq.cli as cli
import flaxseq.train
import torch_ref
from flaxseq.cli import main
from flaxseq.tasks import saved

SMALL = ["--epochs", "2", "--batch-size", "4", "--embed-dim", "4", "--hidden-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def news_folder(tmp_path_factory):
    """Three classes of short texts, each class with its own words."""
    root = tmp_path_factory.mktemp("news")
    rng = np.random.default_rng(0)
    words = {"sport": ["goal", "match", "team", "win"], "tech": ["chip", "code", "data", "web"],
             "arts": ["film", "song", "stage", "book"]}
    for label, vocab in words.items():
        (root / label).mkdir()
        for i in range(10):
            text = " ".join(rng.choice(vocab + ["the", "a"], size=rng.integers(3, 9)))
            (root / label / f"{i}.txt").write_text(text)
    return root


@pytest.fixture(scope="module")
def classify_run(news_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "classify"
    assert main(["train", "classify", "--data", str(news_folder), "--out", str(out), "--max-length", "8", *SMALL]) == 0
    return out


def test_train_writes_the_run(classify_run):
    metrics = json.loads((classify_run / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["wall_seconds"] > 0
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert (classify_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (classify_run / "checkpoint").iterdir()) == ["checkpoint.msgpack"]
    assert json.loads((classify_run / "config.json").read_text())["task"] == "classify"
    assert json.loads((classify_run / "run.json").read_text())["format"] == "flaxseq run"


def test_a_fresh_run_will_not_overwrite_a_run(classify_run, news_folder, capsys):
    before = {p: p.read_bytes() for p in classify_run.rglob("*") if p.is_file()}
    assert main(["train", "classify", "--data", str(news_folder), "--out", str(classify_run), *SMALL]) == 1
    assert f"flaxseq: error: {classify_run} already holds a run; pass --resume" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in classify_run.rglob("*") if p.is_file()} == before


def test_evaluate_repeats_the_test_metrics(classify_run, capsys):
    assert main(["evaluate", str(classify_run)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test_accuracy"] == json.loads((classify_run / "metrics.json").read_text())["test_accuracy"]


def test_predict_gives_class_names(classify_run, capsys):
    assert main(["predict", str(classify_run), "goal match team", "chip code data"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["goal match team", "chip code data"]
    assert all(line.split("\t")[1] in {"sport", "tech", "arts"} for line in lines)


def test_export_loads_into_the_torch_twin(classify_run, tmp_path):
    path = tmp_path / "model.pt"
    assert main(["export", str(classify_run), str(path)]) == 0
    run = saved.load_run(classify_run)
    config = run.config
    twin = torch_ref.TextClassifier(len(run.prepared.vocab), config.embed_dim, config.hidden_size, config.num_layers,
                                    len(run.prepared.classes), dropout=config.dropout)
    twin.load_state_dict(torch.load(path), strict=True)
    twin.eval()
    ids, lengths, _ = run.test_data().splits["test"]
    flax_logits = run.model.apply({"params": run.params}, ids, lengths)
    torch_logits = twin(torch.from_numpy(ids).long(), torch.from_numpy(lengths).long()).detach().numpy()
    np.testing.assert_allclose(flax_logits, torch_logits, rtol=1e-5, atol=1e-6)


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(news_folder, tmp_path, monkeypatch, capsys):
    def args(out):
        return ["train", "classify", "--data", str(news_folder), "--out", str(tmp_path / out), "--max-length", "8",
                *SMALL, "--epochs", "3"]

    assert main(args("whole")) == 0
    epochs_run = []
    original = flaxseq.train.run_epoch

    def interrupted(*a, **k):
        if len(epochs_run) == 2:
            raise KeyboardInterrupt
        epochs_run.append(k["epoch"])
        return original(*a, **k)

    monkeypatch.setattr(flaxseq.train, "run_epoch", interrupted)
    capsys.readouterr()
    assert main(args("parts")) == 130
    assert capsys.readouterr().err == (f"flaxseq: interrupted; the run in {tmp_path / 'parts'} keeps its last "
                                       "checkpoint (the last epoch that ended); continue it with the same command "
                                       "and --resume\n")
    monkeypatch.setattr(flaxseq.train, "run_epoch", original)
    before = {p: p.read_bytes() for p in (tmp_path / "parts").rglob("*") if p.is_file()}
    assert main([*args("parts"), "--resume", "--hidden-size", "5"]) == 1
    assert "nothing was overwritten:\n  hidden_size: checkpoint has 4, this run has 5" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (tmp_path / "parts").rglob("*") if p.is_file()} == before
    assert main([*args("parts"), "--resume"]) == 0
    whole, parts = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("whole", "parts"))
    assert [h["train_loss"] for h in parts["history"]] == [h["train_loss"] for h in whole["history"]]
    assert parts["test_accuracy"] == whole["test_accuracy"] and parts["test_loss"] == whole["test_loss"]


def test_a_finished_run_resumed_with_more_epochs_trains_on(news_folder, tmp_path, capsys):
    def args(out, epochs, *extra):
        return ["train", "classify", "--data", str(news_folder), "--out", str(tmp_path / out), "--max-length", "8",
                *SMALL, "--epochs", str(epochs), *extra]

    assert main(args("four", 4)) == 0
    assert main(args("more", 2)) == 0
    assert main([*args("more", 4), "--resume"]) == 0  # two more epochs, to a four-epoch run's result
    four, more = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("four", "more"))
    assert [h["train_loss"] for h in more["history"]] == [h["train_loss"] for h in four["history"]]
    assert more["test_loss"] == four["test_loss"]
    assert json.loads((tmp_path / "more" / "config.json").read_text())["epochs"] == 4
    assert main([*args("more", 3), "--resume"]) == 1  # fewer than it has trained
    assert "has trained 4 epochs, more than --epochs 3; pass --epochs 4 or more" in capsys.readouterr().err
    assert main(args("decayed", 1, "--cosine-decay")) == 0  # the learning rate depends on the epochs
    assert main([*args("decayed", 2, "--cosine-decay"), "--resume"]) == 1
    assert "nothing was overwritten:\n  epochs: checkpoint has 1, this run has 2" in capsys.readouterr().err


def test_tagging_on_conllu(tmp_path, capsys):
    sentence = "# text = x\n1\tThe\tthe\tDET\t_\t_\t0\t_\t_\t_\n2\tdog\tdog\tNOUN\t_\t_\t0\t_\t_\t_\n" \
               "3\truns\trun\tVERB\t_\t_\t0\t_\t_\t_\n\n"
    for name in ("train", "test"):
        (tmp_path / f"{name}.conllu").write_text(sentence * 12)
    out = tmp_path / "tag"
    assert main(["train", "tag", "--train", str(tmp_path / "train.conllu"), "--test", str(tmp_path / "test.conllu"),
                 "--out", str(out), *SMALL, "--epochs", "3", "--learning-rate", "0.05"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["token_accuracy"] == 1.0
    capsys.readouterr()
    main(["predict", str(out), "the dog runs"])
    assert capsys.readouterr().out.strip().split("\t")[1] == "DET NOUN VERB"


def test_help_lists_options_with_defaults():
    result = subprocess.run([sys.executable, "-m", "flaxseq", "train", "classify", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert "--max-length INT" in result.stdout and "(default: 200)" in result.stdout
    assert "--resume, --no-resume" in result.stdout


def test_missing_run_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"flaxseq: error: {tmp_path} is not a run folder: config.json is missing\n"



@pytest.mark.parametrize("flags, kept", [([], True), (["--malloc", "keep"], True), (["--malloc", "default"], False)])
def test_the_command_sets_malloc_unless_told_not_to(flags, kept, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(cli, "run", lambda args: calls.append(args.command) or 0)
    monkeypatch.setattr(sys, "argv", ["flaxseq", *flags, "evaluate", str(tmp_path)])
    assert cli.entry() == 0
    assert calls == (["keep", "evaluate"] if kept else ["evaluate"])


def test_malloc_choice_is_checked():
    result = subprocess.run([sys.executable, "-m", "flaxseq", "--malloc", "off", "evaluate", "x"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "argument --malloc: invalid choice: 'off' (choose from 'keep', 'default')" in result.stderr
