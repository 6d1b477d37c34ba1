#!/usr/bin/env bash
# flaxseq on one NVIDIA GPU, in one call of at most 9 minutes: parity with TF32 off, XLA's
# compile time with and without its fusion autotuner, then the benchmark rows against PyTorch's
# cuDNN path (flaxseq's scan and its cuDNN path side by side on the LSTM rows). Needs a python3
# with jax (CUDA), flax, optax and torch (CUDA); runs from the source tree, installs nothing,
# needs no network. Each part has its own time limit and prints each row as it finishes, so a
# part that runs out of time still leaves what it measured.
#
#   OUT=/some/dir bash scripts/gpu_bench.sh
#
# Writes to $OUT: env.txt, nvidia-smi.txt, parity.txt and, per benchmark part, bench-NAME.txt
# and .json: compile-off and compile-default (the classifier LSTM's train step, flaxseq only, with
# XLA's fusion autotuner off and as it comes), classifier (every column), rows (the others).
#
# Why the compile probe: on an H100 with jax 0.11.2, the first run of this script compiled the
# TextClassifier's train step in 55 s and did not finish the classifier LSTM row in 150 s
# (`docs/performance.md`, GPU). XLA's fusion autotuner, on by default in recent versions, is the
# suspect; the rows after the probe run without it when the probe shows it compiles faster.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the directory for the results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU's memory
export JAX_DEFAULT_MATMUL_PRECISION=highest  # no TF32 in JAX (the tests' and cuDNN's matrix products)
export NVIDIA_TF32_OVERRIDE=0  # no TF32 in cuBLAS/cuDNN for either framework
NO_FUSION_AUTOTUNE=(--xla-option xla_gpu_experimental_enable_fusion_autotuner=false)

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY - <<'PY' 2>&1 | tee "$OUT/env.txt"
import flax, jax, optax, torch
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__,
      jax.default_backend(), jax.devices())
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY

echo "== parity on GPU (JAX on the GPU, PyTorch's reference on the CPU; cuDNN path against PyTorch on CUDA)"
start=$SECONDS
timeout 130 $PY -m pytest -q -p no:cacheprovider tests/test_speed_paths.py tests/test_layer_parity.py \
    -k "speed_paths or report_cases" > "$OUT/parity.txt" 2>&1
echo "pytest exit $? in $((SECONDS - start)) s"; tail -n 15 "$OUT/parity.txt"

bench() {  # bench NAME LIMIT ARGS...: one benchmark process, float32, TF32 off on both sides
    local name=$1 limit=$2; shift 2
    echo "== benchmark: $name"
    start=$SECONDS
    timeout "$limit" $PY -m parity.bench --gpu --no-torch-compile "$@" --json "$OUT/bench-$name.json" \
        > "$OUT/bench-$name.txt" 2>&1
    local rc=$?
    echo "bench exit $rc in $((SECONDS - start)) s"; sed "/^$/q" "$OUT/bench-$name.txt"  # the rows as they finished
    return $rc
}
probe=(--rows classifier-lstm --passes train --columns flaxseq --budget-scale 0.1)
options=()
if bench compile-off 70 "${probe[@]}" "${NO_FUSION_AUTOTUNE[@]}"; then
    options=("${NO_FUSION_AUTOTUNE[@]}")
fi
bench compile-default 80 "${probe[@]}"
bench classifier 110 --rows classifier-lstm --quick --budget-scale 0.5 "${options[@]}"
bench rows 140 --budget-scale 0.1 "${options[@]}" --rows batch1-lstm model-classifier classifier-gru \
    large-batch-lstm long-seq-lstm model-tagger model-seq2seq classifier-lstm-proj toy-lstm
