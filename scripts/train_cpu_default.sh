#!/usr/bin/env bash
# Train the shipped CPU default model end to end (resumable: rerun to continue where it stopped).
#   nohup scripts/train_cpu_default.sh > runs/cpu_default.log 2>&1 &
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
