"""The `flaxseq` command: train, evaluate, predict, export.

    flaxseq train classify [--epochs 12 --out runs/classify ...]
    flaxseq train tag      [--train dev.conllu --test test.conllu ...]
    flaxseq train seq2seq  [...]
    flaxseq train classify --coordinator-address HOST:PORT --num-processes N --process-id I
                                    # one of N processes (hosts); process 0 writes --out
    flaxseq evaluate RUN            # the saved run's test metrics again
    flaxseq evaluate RUN --data P   # ... on its test data moved to P
    flaxseq predict RUN TEXT...     # label, tags or phonemes for each text
    flaxseq predict RUN --file F    # ... for each line of F (`--file -`: standard input)
    flaxseq export RUN FILE         # the trained weights as a PyTorch state_dict file (--overwrite
                                    # to replace FILE)
    flaxseq --malloc default ...    # leave glibc's malloc as it is (see `entry`)
    flaxseq --debug ...             # a refusal shows its traceback (also FLAXSEQ_DEBUG=1)
    flaxseq --version

Every `train` option is a field of the task's config dataclass; `--help` lists them with
their defaults.

Errors: a usage error, an option value that cannot train included, keeps argparse's form
(`flaxseq train classify: error: argument --epochs: ...`, exit 2); any other refusal prints
`flaxseq: error: ...` naming the argument or file, what was expected and what was given
(exit 1), with a traceback only under `--debug` or `FLAXSEQ_DEBUG=1`. Python warnings show as
`flaxseq: warning: ...`. Ctrl-C stops with a line saying what was kept (exit 130): a run
keeps its last checkpoint, which `--resume` continues.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import typing
import warnings

import flaxseq
from flaxseq.memory import keep_freed_memory

HELP = {
    "out": "run folder: checkpoint, metrics.json, curves.png, vocabularies",
    "epochs": "training epochs",
    "batch_size": "examples per training step",
    "learning_rate": "Adam's learning rate",
    "max_norm": "gradient clipping: largest global gradient norm",
    "clip": "clipping rule: 'optax' (clip_by_global_norm) or 'torch' (clip_grad_norm_, + 1e-6)",
    "cosine_decay": "decay the learning rate to 0 along a cosine over all epochs",
    "seed": "seed of splits, initialisation, shuffling and dropout",
    "resume": "continue the run in --out from its last checkpoint",
    "overwrite": "start afresh in --out even if it holds a run",
    "progress": "show progress: a bar on a terminal or notebook, one line per epoch in a file or pipe",
    "coordinator_address": "HOST:PORT of process 0, for a run over several processes (jax.distributed; "
                           "with --num-processes and --process-id)",
    "num_processes": "processes (hosts) of the run; each reads the same data, process 0 writes --out",
    "process_id": "this process's number, 0 to --num-processes - 1",
    "data": "a folder of <class>/<file>.txt or a TSV/CSV of text and label (None: BBC News)",
    "header": "the --data TSV/CSV's first row names the columns (it is not an example)",
    "max_length": "tokens kept per example (longer ones are truncated)",
    "min_freq": "words seen fewer times in training become <unk>",
    "max_vocab": "largest vocabulary, specials included",
    "embed_dim": "embedding size",
    "hidden_size": "recurrent hidden size",
    "num_layers": "recurrent layers",
    "dropout": "dropout probability",
    "train": "CoNLL-U training file, 10%% held out for validation "
             "(None: $FLAXSEQ_DATA/ud-english-ewt/en_ewt-ud-dev.conllu)",
    "test": "CoNLL-U test file (None: $FLAXSEQ_DATA/ud-english-ewt/en_ewt-ud-test.conllu)",
    "lowercase": "lowercase the words",
    "unk_max_count": "training words seen at most this often may be replaced by their shape or <unk>",
    "unk_probability": "probability of that replacement",
    "max_words": "dictionary words used, a seeded subset (0: every word)",
    "valid_fraction": "share of the words held out for validation",
    "test_fraction": "share of the words held out for the test",
    "teacher_forcing_ratio": "chance that a decoder step is fed the true previous token (else its own argmax)",
    "bucket": "batch words of similar length together and drop each batch's padding columns",
    "unk_shapes": "encode unknown words by their shape (case, digits, hyphen, suffix) instead of <unk>",
}


def _tasks() -> dict:
    from flaxseq.tasks import classify, seq2seq, tag

    return {
        "classify": (classify.ClassifyConfig, classify.train),
        "tag": (tag.TagConfig, tag.train),
        "seq2seq": (seq2seq.Seq2SeqConfig, seq2seq.train),
    }


def _add_config_options(parser: argparse.ArgumentParser, config_type) -> None:
    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        help_text = HELP.get(field.name, field.name.replace("_", " "))
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=help_text)
        else:
            base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            parser.add_argument(flag, type=base, default=field.default, metavar=base.__name__.upper(),
                                help=f"{help_text} (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flaxseq", description="Train and use flaxseq's recurrent models.")
    parser.add_argument(
        "--malloc", choices=("keep", "default"), default="keep",
        help="keep: malloc keeps freed memory for the next step (flaxseq.memory: faster steps, the process "
        "holds several times its largest temporaries); default: glibc's settings (default: %(default)s)",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a refusal (also with the environment variable FLAXSEQ_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {flaxseq.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model; writes a run folder")
    tasks = train.add_subparsers(dest="task", required=True)
    for name, (config_type, _) in _tasks().items():
        task_parser = tasks.add_parser(name, help=(sys.modules[config_type.__module__].__doc__ or "").splitlines()[0],
                                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _add_config_options(task_parser, config_type)
        task_parser.set_defaults(parser=task_parser)
    evaluate = commands.add_parser("evaluate", help="the saved run's test metrics, computed again")
    evaluate.add_argument("run", help="run folder written by train")
    evaluate.add_argument("--data", metavar="PATH", help="the run's test data, moved to PATH (classify: its --data; "
                          "tag: its --test); checked to be the same data")
    predict = commands.add_parser("predict", help="label, tags or phonemes for each text")
    predict.add_argument("run", help="run folder written by train")
    predict.add_argument("texts", nargs="*", help="texts (or words, for seq2seq)")
    predict.add_argument("--file", metavar="PATH", help="read the texts from PATH, one per line ('-': standard input)")
    predict.set_defaults(parser=predict)
    export = commands.add_parser("export", help="the trained weights as a PyTorch state_dict file (needs torch)")
    export.add_argument("run", help="run folder written by train")
    export.add_argument("file", help="output file, e.g. model.pt")
    export.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    return parser


def main(argv=None) -> int:
    """The command on `argv` (default: `sys.argv[1:]`), without the process settings of `entry`."""
    return guarded(build_parser().parse_args(argv))


def guarded(args: argparse.Namespace) -> int:
    """`run(args)`, with a refusal shown as a message (see the module docstring)."""
    from flaxseq.tasks.options import OptionError

    debug = args.debug or os.environ.get("FLAXSEQ_DEBUG") == "1"
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return run(args)
    except OptionError as error:
        if debug:
            raise
        args.parser.error(f"argument {error.option}: {error.message}")  # exits 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"flaxseq: interrupted; {interrupted(args)}", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(f"flaxseq: error: {message(error)}", file=sys.stderr)
        return 1


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning as the command shows it: `flaxseq: warning: ...`, without the file and
    line of the code that warned."""
    warn(str(message))


def interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command kept."""
    if args.command != "train":
        return "nothing was written" if args.command != "export" else f"{args.file} was not written"
    from flaxseq.checkpoint import has_checkpoint
    from flaxseq.tasks.folder import CHECKPOINT_DIR

    out = pathlib.Path(args.out)
    if has_checkpoint(out / CHECKPOINT_DIR):
        resume = "--resume in place of --overwrite" if args.overwrite else "--resume"
        return (f"the run in {out} keeps its last checkpoint (the last epoch that ended); continue it with "
                f"the same command and {resume}")
    return f"no epoch had ended, so {out} holds no checkpoint; start again with --overwrite"


def message(error: Exception) -> str:
    """What a refusal says: the error's own text; an OS error's reason and file."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror}"
    if isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error):
        reason = str(error).splitlines()[0][:200] if str(error) else "MemoryError"
        return (f"out of memory ({reason}); the run's arrays grow with --batch-size and --max-length and the "
                "model's sizes: choose smaller ones")
    if isinstance(error, (ValueError, OSError, FloatingPointError, TypeError, ImportError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def read_texts(args: argparse.Namespace) -> list[str]:
    """The texts to predict: the arguments, or the lines of `--file` (not both); none empty."""
    if args.file is not None and args.texts:
        args.parser.error("argument --file: not allowed with texts")
    if args.file is None and not args.texts:
        args.parser.error("expected texts or --file PATH")
    if args.file is None:
        sources, texts = [f"text {i + 1}" for i in range(len(args.texts))], list(args.texts)
    else:
        name = "standard input" if args.file == "-" else args.file
        if args.file == "-":
            texts = sys.stdin.read().splitlines()
        else:
            try:
                texts = pathlib.Path(args.file).read_text(encoding="utf-8-sig").splitlines()  # a BOM is no text
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(f"--file: cannot read {args.file} as UTF-8 text: {message(error)}") from None
        if not texts:
            raise ValueError(f"--file: {name} holds no text; expected one text per line")
        sources = [f"{name}:{i + 1}" for i in range(len(texts))]
    for source, text in zip(sources, texts, strict=True):
        if not text.strip():
            raise ValueError(f"{source} is empty; expected a text with at least one word")
    return texts


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed command line; refusals raise."""
    if args.command == "train":
        config_type, train = _tasks()[args.task]
        config = config_type(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_type)})
        from flaxseq.tasks import hosts

        metrics = train(config, log=hosts.log)
        hosts.log(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=1))
        return 0
    from flaxseq.tasks import saved

    texts = read_texts(args) if args.command == "predict" else None
    run = saved.load_run(pathlib.Path(args.run))
    if args.command == "evaluate":
        print(json.dumps(run.evaluate(args.data, warn=warn), indent=1))
    elif args.command == "predict":
        for text, prediction in zip(texts, run.predict(texts, warn=warn), strict=True):
            print(f"{text}\t{prediction}")
    elif args.command == "export":
        saved.export(run, pathlib.Path(args.file), overwrite=args.overwrite)
        print(f"wrote {args.file}")
    return 0


def warn(text: str) -> None:
    print(f"flaxseq: warning: {text}", file=sys.stderr)


def entry() -> int:
    """The `flaxseq` command and `python -m flaxseq`: `main`, with malloc set first to keep freed
    memory for reuse (`flaxseq.memory`) unless `--malloc default`, so that jitted steps do not
    fault their temporaries in at every call. A process setting, so it is made here, before
    anything runs, and not in `main`, which tests call."""
    args = build_parser().parse_args()
    if args.malloc == "keep":
        keep_freed_memory()
    code = guarded(args)
    if code == 130:  # interrupted: leave at once, not through the interpreter's teardown, which can
        sys.stdout.flush()  # crash while XLA's threads are still compiling or running a step
        sys.stderr.flush()
        os._exit(code)
    return code
