#!/usr/bin/env bash
# The CUDA figures in one call of the device tool (one H200; see README's benchmark section):
#   run(command="bash bench/cuda_run.sh", carry=[".whl"], timeout_s=...)
# The device image has torch, transformers, aiohttp, safetensors, tokenizers, prometheus-client;
# pydantic (and the project's transformers pin) travel as wheels in .whl/ (ignored), downloaded
# here with `pip download --python-version 3.12 ...` (the device tool's README). Everything the
# benches print lands in $OUT (OUT=/tmp/x bash bench/cuda_run.sh also runs on a CPU machine,
# with DEVICE=cpu).
set -uo pipefail
OUT=${OUT:-/tmp/bem-cuda-run}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1
  $PY -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "transformers", transformers.__version__, "gpu",
torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
} 2>&1 | tee "$OUT/env.txt"
# BEM vs bare base (Llama-70B-shaped layers on CUDA, bf16), and with the gate folded on decode.
# OVERHEAD_TIMEOUT=0 skips it (a serving-only run).
if [ "${OVERHEAD_TIMEOUT:-150}" != 0 ]; then
  timeout "${OVERHEAD_TIMEOUT:-150}" $PY bench/bench_bem_overhead.py --device "$DEVICE" --merge-decode \
    ${OVERHEAD_ARGS:-} --json "$OUT/bem_overhead.json" 2>&1 | tee "$OUT/bem_overhead.txt"
fi
# Serving: continuous vs static vs unbatched, interleaved, side-by-side ratios.
timeout "${SERVING_TIMEOUT:-330}" $PY bench/bench_runtime_serving.py --device "$DEVICE" \
  ${SERVING_ARGS:---size medium --rates 8 32 128 --mixed-requests 48} \
  --json "$OUT/serving.json" 2>&1 | tee "$OUT/serving.txt"
