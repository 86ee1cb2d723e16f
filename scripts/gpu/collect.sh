#!/usr/bin/env bash
# Here, after a device run: scripts/gpu/collect.sh FILES_AT CONFIG
# Reassembles the model into the config's run.output and keeps the light checkpoint for the next session.
set -euo pipefail
FILES=${1:?files_at folder of the device reply}; CONFIG=${2:?config}
cd "$(dirname "$0")/../.."
OUTPUT=$(python3 -c "from geodiff.train.config import load_config as l; print(l('$CONFIG').output_dir)")
if ls "$FILES"/model.tar.part-* >/dev/null 2>&1; then
    mkdir -p "$(dirname "$OUTPUT")" && cat "$FILES"/model.tar.part-* | tar -x -C "$(dirname "$OUTPUT")"
    echo "model -> $OUTPUT"
fi
mkdir -p runs/gpu_resume && rm -f runs/gpu_resume/light.tar.part-*
cp "$FILES"/light.tar.part-* runs/gpu_resume/ 2>/dev/null && echo "light checkpoint -> runs/gpu_resume/"
