#!/usr/bin/env bash
# One-shot GPU check for the lent H200 (device tool): CUDA correctness tests, then the speed
# tables of issues 2-5 and 11. Each stage has its own time limit so a slow one cannot eat the rest
# (585 s in all, under the device's 600 s per command).
# Logs go to ${OUT:-/tmp/attnflow-device}/STAGE.txt.
set -u
OUT=${OUT:-/tmp/attnflow-device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # packages missing on the device image (mlxtend)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD
fi
stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T))"
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  tail -n 30 "$OUT/$name.txt"
  echo "=== $name exit $rc"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
stage tests 90 python3 -m pytest -q -x -p no:cacheprovider --device cuda tests/layers/test_layers.py \
  tests/priors/test_autoregressive.py tests/test_nn.py tests/test_core.py
stage layers 30 python3 benchmarks/layers.py --device cuda
stage train_96 120 python3 benchmarks/train_step.py --device cuda --configs 3-4-96 --batch-sizes 32 256 --repeats 5
stage sr 60 python3 benchmarks/sr_step.py --device cuda --repeats 5
# achieved FLOP rates (issue 11 item 4: img/s beside TFLOP/s)
stage flops_96_b32 45 python3 benchmarks/flops.py --device cuda --preset cifar10-3-4-96-none --batch 32
stage flops_96_b256 60 python3 benchmarks/flops.py --device cuda --preset cifar10-3-4-96-none --batch 256
stage flops_sr11_b16 45 python3 benchmarks/flops.py --device cuda --preset celeba-sr-8x-1-1-none --batch 16
# the device guard: host synchronisations left in a training step, and its time against the host guard
stage step_sync 45 python3 benchmarks/step_sync.py --device cuda --preset cifar10-3-4-96-none --batch 32
stage train_96_compiled 90 python3 benchmarks/train_step.py --device cuda --configs 3-4-96 --batch-sizes 32 \
  --attentions none imap --repeats 5 --no-sample --compile
echo "done $(date +%T)"
