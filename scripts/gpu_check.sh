#!/usr/bin/env bash
# The GPU checks of issue 15, item 6, on a machine with CUDA torch (python3) and the files of
# scripts/gpu_prepare.sh: the GPU tests, then benchmarks/gpu.py (faces/s per network and batch,
# and enhance-faces end to end). Logs and the JSON go to $OUT (else gpu-out/). Fails when the
# tests or the benchmark fail.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/restora-site .whl/*.whl || exit 1
export PYTHONPATH="$PWD/src:/tmp/restora-site" RESTORA_SHARED="$PWD/.gpu/shared" \
  PYTHONUNBUFFERED=1 RESTORA_HOME=/tmp/restora-home
nvidia-smi -L 2>&1 | tee "$out/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  | tee -a "$out/device.txt"
python3 -m pytest -q -p no:cacheprovider tests/models/test_gpu.py 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
# GPU_BENCH_ARGS: more arguments for the benchmark (e.g. "--batches 4 --profile 25")
# shellcheck disable=SC2086
timeout "${GPU_BENCH_TIMEOUT:-400}" python3 benchmarks/gpu.py --json "$out/gpu.json" \
  ${GPU_BENCH_ARGS:-} 2>&1 \
  | tee "$out/bench.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
