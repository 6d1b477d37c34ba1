"""Options checked before anything is read or written, errors as messages, the tagger's data
(`--train`/`--test` or `$FLAXSEQ_DATA`), `--debug` and `--version`. No training here."""

import os
import subprocess
import sys

import pytest

import flaxseq
from flaxseq.cli import main
from flaxseq.tasks import classify
from flaxseq.tasks.tag import TagConfig

BAD = [
    ("classify", ["--learning-rate", "-0.001"], "argument --learning-rate: must be greater than 0, got -0.001"),
    ("classify", ["--learning-rate", "nan"], "argument --learning-rate: must be finite, got nan"),
    ("classify", ["--learning-rate", "inf"], "argument --learning-rate: must be finite, got inf"),
    ("classify", ["--max-norm", "0"], "argument --max-norm: must be greater than 0, got 0.0"),
    ("classify", ["--max-norm", "-1"], "argument --max-norm: must be greater than 0, got -1.0"),
    ("classify", ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    ("classify", ["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    ("classify", ["--hidden-size", "0"], "argument --hidden-size: must be at least 1, got 0"),
    ("classify", ["--max-length", "-3"], "argument --max-length: must be at least 1, got -3"),
    ("classify", ["--dropout", "1"], "argument --dropout: must be in [0, 1), got 1.0"),
    ("classify", ["--dropout", "-0.1"], "argument --dropout: must be in [0, 1), got -0.1"),
    ("classify", ["--clip", "numpy"], "argument --clip: must be one of optax, torch, got 'numpy'"),
    ("classify", ["--resume", "--overwrite"], "argument --resume: not allowed with argument --overwrite"),
    ("classify", ["--seed", "4294967296"], "argument --seed: must be at most 4294967295, got 4294967296"),
    ("classify", ["--header"], "argument --header: is for a TSV/CSV --data file; no --data was given"),
    ("tag", ["--unk-probability", "1.5"], "argument --unk-probability: must be in [0, 1], got 1.5"),
    ("tag", ["--embed-dim", "0"], "argument --embed-dim: must be at least 1, got 0"),
    ("seq2seq", ["--teacher-forcing-ratio", "2"], "argument --teacher-forcing-ratio: must be in [0, 1], got 2.0"),
    ("seq2seq", ["--valid-fraction", "0.6", "--test-fraction", "0.5"],
     "argument --test-fraction: with --valid-fraction must add up to less than 1, got 0.6 + 0.5"),
]


@pytest.mark.parametrize("task, args, expected", BAD, ids=[" ".join(a) for _, a, _ in BAD])
def test_an_option_that_cannot_train_is_a_usage_error_before_anything_is_read(task, args, expected, tmp_path,
                                                                              monkeypatch, capsys):
    def no_reading(*a, **k):
        raise AssertionError("the data was read")

    monkeypatch.setattr(classify, "load_texts", no_reading)
    monkeypatch.setattr(flaxseq.data, "load_cmudict", no_reading)
    monkeypatch.setattr("flaxseq.tasks.tag.read_sentences", no_reading)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        main(["train", task, "--out", str(out), "--train", "x", "--test", "y", *args] if task == "tag"
             else ["train", task, "--out", str(out), *args])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"flaxseq train {task}: error: {expected}"
    assert not out.exists()


def test_missing_data_is_refused_naming_the_argument(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["train", "classify", "--data", str(missing), "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err == ("flaxseq: error: --data: expected a folder of <class>/<file>.txt or a TSV/CSV "
                                       f"file, got {missing}, which does not exist\n")
    assert not (tmp_path / "run").exists()


def test_the_tagger_without_data_names_the_files_and_where_to_put_them(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FLAXSEQ_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "tag", "--out", "run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flaxseq: error: the tagger needs CoNLL-U files: no --train and --test were given and "
                          "FLAXSEQ_DATA is not set. Pass --train FILE --test FILE")
    assert "en_ewt-ud-dev.conllu, en_ewt-ud-test.conllu), put the two files in DIR/ud-english-ewt/ and set " \
           "FLAXSEQ_DATA=DIR" in err
    (tmp_path / "train.conllu").write_text("1\ta\ta\tDET\t_\t_\t0\t_\t_\t_\n\n")
    assert main(["train", "tag", "--out", "run", "--train", "train.conllu"]) == 1
    assert capsys.readouterr().err.startswith("flaxseq: error: the tagger needs CoNLL-U files: no --test was given "
                                              "and FLAXSEQ_DATA is not set.")
    monkeypatch.setenv("FLAXSEQ_DATA", str(tmp_path))
    assert main(["train", "tag", "--out", "run"]) == 1
    assert f"FLAXSEQ_DATA={tmp_path} holds no ud-english-ewt/en_ewt-ud-dev.conllu" in capsys.readouterr().err
    assert main(["train", "tag", "--out", "run", "--train", "train.conllu", "--test", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"flaxseq: error: --test: expected a CoNLL-U file, got {tmp_path}, which is "
                                       "a folder\n")
    assert not (tmp_path / "run").exists()


def test_test_tags_the_training_file_has_not_are_warned_about(tmp_path):
    from flaxseq.tasks import tag

    (tmp_path / "train.conllu").write_text("1\tThe\tthe\tDET\t_\t_\t0\t_\t_\t_\n\n" * 10)
    (tmp_path / "test.conllu").write_text("1\tThe\tthe\tDET\t_\t_\t0\t_\t_\t_\n"
                                          "2\truns\trun\tVERB\t_\t_\t0\t_\t_\t_\n\n")
    config = TagConfig(train=str(tmp_path / "train.conllu"), test=str(tmp_path / "test.conllu")).resolved()
    with pytest.warns(UserWarning, match=r"--test .*test\.conllu: 1 tokens have tags that the training file has not "
                                         r"\('VERB' \(1\)\); the tagger cannot predict them and they count as errors"):
        tag.prepare(config)


def test_a_warning_shows_as_the_commands_line(tmp_path, monkeypatch, capsys):
    import warnings

    def warn(args):
        warnings.warn("one layer with dropout", UserWarning, stacklevel=2)
        return 0

    monkeypatch.setattr("flaxseq.cli.run", warn)
    assert main(["evaluate", str(tmp_path)]) == 0
    assert capsys.readouterr().err == "flaxseq: warning: one layer with dropout\n"


def test_interrupting_a_command_says_what_was_kept(tmp_path, monkeypatch, capsys):
    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("flaxseq.cli.run", interrupt)
    assert main(["train", "classify", "--out", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err == (f"flaxseq: interrupted; no epoch had ended, so {tmp_path / 'run'} holds no "
                                       "checkpoint; start again with --overwrite\n")
    assert main(["evaluate", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "flaxseq: interrupted; nothing was written\n"


def test_running_out_of_memory_names_the_sizes():
    from flaxseq.cli import message

    assert message(MemoryError()) == ("out of memory (MemoryError); the run's arrays grow with --batch-size and "
                                      "--max-length and the model's sizes: choose smaller ones")
    assert message(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4e12 bytes.\nmore")).startswith(
        "out of memory (RESOURCE_EXHAUSTED: Out of memory allocating 4e12 bytes.); ")


def test_the_tagger_finds_its_files_under_flaxseq_data(tmp_path, monkeypatch):
    folder = tmp_path / "ud-english-ewt"
    folder.mkdir()
    for split in ("dev", "test"):
        (folder / f"en_ewt-ud-{split}.conllu").write_text("1\ta\ta\tDET\t_\t_\t0\t_\t_\t_\n\n")
    monkeypatch.setenv("FLAXSEQ_DATA", str(tmp_path))
    config = TagConfig().resolved()
    assert (config.train, config.test) == (str(folder / "en_ewt-ud-dev.conllu"), str(folder / "en_ewt-ud-test.conllu"))
    assert TagConfig(test="other.conllu").train is None  # nothing hidden in the defaults
    with pytest.raises(FileNotFoundError, match="--test: expected a CoNLL-U file, got other.conllu, which does not"):
        TagConfig(test="other.conllu").resolved()


def test_resume_without_a_run_is_refused(tmp_path, capsys):
    assert main(["train", "classify", "--out", str(tmp_path / "none"), "--resume"]) == 1
    assert capsys.readouterr().err == f"flaxseq: error: --resume: {tmp_path / 'none'} holds no flaxseq run to resume\n"


def test_export_to_a_missing_folder_names_the_path(tmp_path, capsys, monkeypatch):
    from flaxseq.tasks import saved

    monkeypatch.setattr(saved, "load_run", lambda folder: saved.SavedRun(*[None] * 5, folder=tmp_path / "run",
                                                                         manifest={}))
    target = tmp_path / "no" / "model.pt"
    assert main(["export", str(tmp_path), str(target)]) == 1
    assert capsys.readouterr().err == (f"flaxseq: error: FILE: the folder of {target}, {target.parent}, does not "
                                       "exist\n")


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        main(["--debug", "evaluate", str(tmp_path)])
    monkeypatch.setenv("FLAXSEQ_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        main(["evaluate", str(tmp_path)])


def test_the_command_shows_no_traceback_and_version(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FLAXSEQ_DEBUG"}
    result = subprocess.run([sys.executable, "-m", "flaxseq", "--malloc", "default", "evaluate", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert (result.returncode, result.stderr) == (1, f"flaxseq: error: {tmp_path} is not a run folder: "
                                                     "config.json is missing\n")
    result = subprocess.run([sys.executable, "-m", "flaxseq", "--version"], capture_output=True, text=True,
                            timeout=300)
    assert (result.returncode, result.stdout) == (0, f"flaxseq {flaxseq.__version__}\n")


def test_too_few_training_sentences_are_refused_naming_the_file(tmp_path, capsys):
    for name in ("train", "test"):
        (tmp_path / f"{name}.conllu").write_text("1\tThe\tthe\tDET\t_\t_\t0\t_\t_\t_\n\n" * 3)
    assert main(["train", "tag", "--train", str(tmp_path / "train.conllu"), "--test", str(tmp_path / "test.conllu"),
                 "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err == (f"flaxseq: error: --train {tmp_path / 'train.conllu'}: 3 sentences are too "
                                       "few to hold out 10% for validation; expected at least 10\n")
    assert not (tmp_path / "run").exists()
