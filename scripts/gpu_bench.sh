#!/usr/bin/env bash
# flaxseq on one NVIDIA GPU, in one call of about 6 minutes: parity with TF32 off, then the
# quick benchmark rows against PyTorch's cuDNN path (with flaxseq's own scan and its cuDNN path
# side by side on the LSTM rows). Needs a python3 with jax (CUDA), flax, optax and torch (CUDA);
# runs from the source tree, installs nothing, needs no network.
#
#   OUT=/some/dir bash scripts/gpu_bench.sh
#
# Writes to $OUT: env.txt, nvidia-smi.txt, parity.txt, bench.txt, bench.json, bench.png.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the directory for the results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU's memory
export JAX_DEFAULT_MATMUL_PRECISION=highest  # no TF32 in JAX (the tests' and cuDNN's matrix products)
export NVIDIA_TF32_OVERRIDE=0  # no TF32 in cuBLAS/cuDNN for either framework

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY - <<'PY' 2>&1 | tee "$OUT/env.txt"
import jax, torch
print("jax", jax.__version__, jax.default_backend(), jax.devices())
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY

echo "== parity on GPU (JAX on the GPU, PyTorch's reference on the CPU; cuDNN path against PyTorch on CUDA)"
start=$SECONDS
timeout 140 $PY -m pytest -q -p no:cacheprovider tests/test_speed_paths.py tests/test_layer_parity.py \
    -k "speed_paths or report_cases" > "$OUT/parity.txt" 2>&1
echo "pytest exit $? in $((SECONDS - start)) s"; tail -n 15 "$OUT/parity.txt"

echo "== benchmark: quick rows, float32, TF32 off on both sides"
start=$SECONDS
timeout 190 $PY -m parity.bench --gpu --quick --no-torch-compile --budget-scale 0.5 \
    --json "$OUT/bench.json" --png "$OUT/bench.png" > "$OUT/bench.txt" 2>&1
echo "bench exit $? in $((SECONDS - start)) s"; tail -n 45 "$OUT/bench.txt"
