#!/usr/bin/env bash
# Train the shipped CPU default model (v3) end to end (resumable: rerun to continue where it stopped).
#   nohup scripts/train_cpu_default.sh > runs/cpu_default.log 2>&1 &
# v2's stages: autoencoder (50 min), diffusion (170 min), decoder-only fine-tune (45 min; it may run beside the
# diffusion stage with one thread, which is how v2 was trained), then the decoder is swapped into the export
# (runs/cpu_default/model). v3's stages on top: four detail latent channels for the autoencoder (40 min), then
# v2's U-Net trained on to denoise all eight (130 min), a texture decoder (30 min) mixed with stage 1's decoder
# -> runs/cpu_default_detail_diffusion/model. Only `geodiff` commands: each surgery step is one
# (`geodiff train autoencoder` with the config's autoencoder.stage, `geodiff model mix-decoders`,
# `geodiff model finalize`); bench/decoder_interpolation.py measured the mix's alpha beforehand.
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
    geodiff model finalize runs/cpu_default/model runs/data/dubai --vae runs/cpu_default_decoder/autoencoder/vae
fi
DETAIL=${DETAIL-1}   # DETAIL= stops at v2
if [ -n "$DETAIL" ]; then
    [ -f runs/cpu_default_detail/autoencoder/vae/config.json ] || \
        geodiff train autoencoder --config configs/cpu_default_detail.toml --resume --progress none
    geodiff train diffusion --config configs/cpu_default_detail_diffusion.toml --resume --progress none
    [ -f runs/cpu_default_detail_texture/autoencoder/vae/config.json ] || \
        geodiff train autoencoder --config configs/cpu_default_detail_texture.toml --resume --progress none
    # the shipped decoder: stage 1's and the texture decoder's weights mixed 1:4 (bench/results/decoder_interpolation.md)
    if [ ! -f runs/cpu_default_detail_mix/vae/config.json ]; then
        mkdir -p runs/cpu_default_detail_mix
        geodiff model mix-decoders runs/cpu_default_detail/autoencoder/vae \
            runs/cpu_default_detail_texture/autoencoder/vae --alpha 0.8 --out runs/cpu_default_detail_mix/vae
    fi
    geodiff model finalize runs/cpu_default_detail_diffusion/model runs/data/dubai \
        --run-dir runs/cpu_default_detail_diffusion --guidance-scale 2 --vae runs/cpu_default_detail_mix/vae
fi
