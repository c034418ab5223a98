#!/usr/bin/env bash
# One-shot GPU check for the lent H200 (device tool): CUDA correctness tests, then the speed
# tables of issues 2-5. Each stage has its own time limit so a slow one cannot eat the rest.
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
stage tests 70 python3 -m pytest -q -x -p no:cacheprovider --device cuda tests/test_layers.py tests/test_arprior.py
stage layers 30 python3 benchmarks/layers.py --device cuda
stage train_96 150 python3 benchmarks/train_step.py --device cuda --configs 3-4-96 --batch-sizes 32 256 --repeats 5
stage train_48 50 python3 benchmarks/train_step.py --device cuda --configs 3-2-48 --batch-sizes 32 --repeats 5
stage sr 90 python3 benchmarks/sr_step.py --device cuda --repeats 5
stage translate 70 python3 benchmarks/translate_step.py --device cuda --repeats 3 --warmup 1
stage train_96_compiled 90 python3 benchmarks/train_step.py --device cuda --configs 3-4-96 --batch-sizes 32 \
  --attentions none imap --repeats 5 --no-sample --compile
echo "done $(date +%T)"
