#!/usr/bin/env bash
# Runs ON the lent GPU machine, from the repository root: bash scripts/gpu/train.sh CONFIG MINUTES
# Trains the next stage for MINUTES (resumable), then packs the model + a light checkpoint into $OUT.
set -euo pipefail
CONFIG=${1:?config}; MINUTES=${2:-8}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site
if [ -d .whl ] && ! python3 -c "import diffusers" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
RUN_DIR=$(python3 -c "from geodiff.train.config import load_config as l; print(l('$CONFIG').run_dir)")
OUTPUT=$(python3 -c "from geodiff.train.config import load_config as l; print(l('$CONFIG').output_dir)")
# a light checkpoint carried back from an earlier session
if [ ! -d "$RUN_DIR" ] && ls runs/gpu_resume/light.tar.part-* >/dev/null 2>&1; then
    mkdir -p "$RUN_DIR" && cat runs/gpu_resume/light.tar.part-* | tar -x -C "$RUN_DIR"
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
geo() { python3 -c "import sys; from geodiff.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
if [ ! -f "$RUN_DIR/autoencoder/vae/config.json" ]; then
    geo train autoencoder --config "$CONFIG" --resume --max-minutes "$MINUTES" --progress none
else
    geo train diffusion --config "$CONFIG" --resume --max-minutes "$MINUTES" --progress none
fi
# pack into <= 15 MiB parts ($OUT takes 8 files, 64 MiB): the model folder (fp16 EMA weights) by default,
# or with PACK=light a light checkpoint (bf16 weights + EMA, no optimizer moments) to resume in a later session
if [ -n "${OUT:-}" ]; then
    if [ "${PACK:-model}" = light ]; then
        python3 scripts/gpu/light_checkpoint.py "$RUN_DIR" /tmp/light
        tar -c -C /tmp/light . | split -b 15M - "$OUT/light.tar.part-"
    elif [ -d "$OUTPUT" ]; then
        tar -c -C "$(dirname "$OUTPUT")" "$(basename "$OUTPUT")" | split -b 15M - "$OUT/model.tar.part-"
    fi
    ls -la "$OUT"
fi
