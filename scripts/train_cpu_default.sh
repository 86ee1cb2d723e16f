#!/usr/bin/env bash
# Train the shipped CPU default model end to end (resumable: rerun to continue where it stopped).
#   nohup scripts/train_cpu_default.sh > runs/cpu_default.log 2>&1 &
# Stages: autoencoder (50 min), diffusion (170 min), decoder-only fine-tune (45 min; it may run beside the
# diffusion stage with one thread, which is how v2 was trained), then the decoder is swapped into the export.
# The guidance scale is chosen afterwards from `geodiff evaluate --guidance-scale` runs (see the model card).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/cpu_default.toml}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# shared cores: spinning OpenMP workers stall badly when another process holds the other core
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
[ -f runs/data/dubai/manifest.json ] || geodiff dataset build --images ../shared/data/dubai_aerial \
    --out runs/data/dubai --progress none
if [ ! -f runs/cpu_default/autoencoder/vae/config.json ]; then
    geodiff train autoencoder --config "$CONFIG" --resume --progress none
fi
geodiff train diffusion --config "$CONFIG" --resume --progress none
DECODER_CONFIG=${DECODER_CONFIG-configs/cpu_default_decoder.toml}   # DECODER_CONFIG= skips stage 3
if [ -n "$DECODER_CONFIG" ]; then
    [ -f runs/cpu_default_decoder/autoencoder/vae/config.json ] || \
        geodiff train autoencoder --config "$DECODER_CONFIG" --resume --progress none
    python scripts/finalize_model.py runs/cpu_default/model runs/data/dubai --vae runs/cpu_default_decoder/autoencoder/vae
fi
