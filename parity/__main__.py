"""`python -m parity`: the parity report. Exits non-zero when any case fails.

Each row converts a seeded PyTorch module to flaxseq, runs both on the same random inputs and
prints the worst relative error of the outputs and of the gradients (parameters, inputs and
initial states). `--all` runs the full configuration product instead of the representative set.
"""

import argparse
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)
warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")

from parity import attention, classifiers, manual_rnn, seq2seq, tagger  # noqa: E402
from parity.cases import cell_grid, layer_grid, representative_cases  # noqa: E402
from parity.compare import TOLERANCES  # noqa: E402
from parity.lockstep import LockstepCase  # noqa: E402


def report_cases() -> list:
    """The default report: every layer and cell, every model, then lockstep training."""
    cases = representative_cases()
    cases += manual_rnn.model_cases() + classifiers.model_cases() + tagger.model_cases()
    cases += seq2seq.seq2seq_cases() + attention.attention_cases()
    cases += [LockstepCase("float64"), LockstepCase("float32")]
    return cases


def all_cases() -> list:
    """`--all`: the full configuration products as well."""
    return layer_grid() + cell_grid() + report_cases()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity", description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="run the full configuration product (slow)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and loss weights")
    args = parser.parse_args(argv)

    cases = all_cases() if args.all else report_cases()
    print(f"{'case':<44} {'dtype':<8} {'output rel':>11} {'grad rel':>10} {'grad abs':>10}  result")
    failed, start = 0, time.perf_counter()
    for case in cases:
        report = case.run(seed=args.seed)
        grad = report.worst_gradient
        problems, notes = report.failures(), report.notes()
        failed += bool(problems)
        result = "FAIL" if problems else ("pass*" if notes else "pass")
        print(
            f"{case.label():<44} {case.dtype:<8} {report.worst_output.rel:>11.1e} {grad.rel:>10.1e} "
            f"{max(d.max_abs for d in report.gradients):>10.1e}  {result}"
        )
        for line in problems + notes:
            print(f"    {line}")
    limits = ", ".join(
        f"{dt}: rel <= {r:.0e}" + (f", abs <= {a:.0e}" if a else "") for dt, (r, a) in TOLERANCES.items()
    )
    print(f"\n{len(cases) - failed}/{len(cases)} passed in {time.perf_counter() - start:.0f} s ({limits})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
