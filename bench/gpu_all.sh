#!/usr/bin/env bash
# Every GPU figure issue 14 asks for, in one prepared run on a CUDA machine (H100/H200), each step capped so
# that the whole run fits in under 10 minutes; a step that runs out of time is named and the rest go on.
#
#     bash bench/gpu_all.sh [OUTDIR]     # OUTDIR: where the logs go (default $OUT, else ./gpu-results)
#
# Wheels for what the machine's Python lacks (diffusers, transformers, pydantic, discord.py, ...) may be put in
# .whl/ beforehand: they are installed into /tmp/site without touching the machine's torch. Then copy the
# tables from the logs into docs/benchmarks.md with the card, driver and torch version from system.txt.
set -u
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$python" -c 'import torch, diffusers; print("torch", torch.__version__, "cuda", torch.version.cuda,
"diffusers", diffusers.__version__)'
} > "$out/system.txt" 2>&1
cat "$out/system.txt"
if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 2)'; then
    echo "bench/gpu_all.sh: no CUDA device is visible; run it on a GPU machine" | tee -a "$out/system.txt"
    exit 2
fi

step() {  # step NAME SECONDS COMMAND...: run it with a time cap, its output in NAME.log and on the screen
    local name="$1" limit="$2"
    shift 2
    echo "== $name (at most ${limit} s): $*"
    timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local status="${PIPESTATUS[0]}"
    if [ "$status" = 124 ] || [ "$status" = 137 ]; then
        echo "== $name: out of time after ${limit} s" | tee -a "$out/$name.log"
    elif [ "$status" != 0 ]; then
        echo "== $name: exit status $status" | tee -a "$out/$name.log"
    fi
}

# Eager against compiled SD 1.5 at 512², batches 1-16, % of peak, VRAM, compile and warm-start time.
step gpu_sd15 200 "$python" -m bench.gpu --models sd15 --runs 2
# The bot against the bare executor and the naive one-call-per-request loop, N=1 and N=8, compiled buckets.
step bot_e2e 150 "$python" -m bench.bot_e2e --gpu --compile --rounds 3
# TAESD previews at the shipped interval: goal under 2 % of generation time.
step previews 60 "$python" -m bench.previews --runs 2
# Compile scope model against blocks (cold compile, warm start, speed-up), if time is left.
step compile_scope 90 "$python" -m bench.compile_scope --batches 1,4 --runs 2
# SDXL at 1024², where VRAM allows.
step gpu_sdxl 60 "$python" -m bench.gpu --models sdxl --batches 1,2,4 --runs 1 --no-warm-start
