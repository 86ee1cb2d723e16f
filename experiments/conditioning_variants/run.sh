#!/usr/bin/env bash
# The seed paper's five conditioning variants at equal budget (issue 31): each U-Net trained from scratch for
# 40 minutes on one CPU thread on v3's autoencoder, two runs at a time (2 cores), then judged on the held-out
# Dubai tiles (geodiff evaluate, the kept judge) and on OSM maps (bench/osm_maps.py). Resumable: rerun it.
#   nohup experiments/conditioning_variants/run.sh > runs/variants.log 2>&1 &
# Needs runs/data/dubai and v3 at runs/cpu_default_detail_diffusion/model (scripts/train_cpu_default.sh, or
# `git archive f03f130 geodiff/data/models/geodiff-default | tar -x --strip-components=4 -C that folder`).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
HERE=experiments/conditioning_variants
train() {
    geodiff train autoencoder --config "$HERE/variant$1.toml" --progress none > /dev/null   # v3's, copied (steps = 0)
    geodiff train diffusion --config "$HERE/variant$1.toml" --resume --progress none
}
for pair in "1 2" "3 4" "5"; do
    for n in $pair; do train "$n" & done   # a finished run trains no further step
    wait
done
for n in 1 2 3 4 5; do
    for seed in 0 1000; do
        out=runs/variants/eval/variant${n}_seed$seed
        [ -f "$out/report.json" ] || geodiff evaluate --data runs/data/dubai --model "runs/variants/variant$n/model" \
            --seg-net bench/results/judge_segnet --limit 64 --device cpu --threads 2 --seed "$seed" --out "$out" \
            --progress none
    done
done
args=()
for n in 1 2 3 4 5; do args+=(--model "variant$n=runs/variants/variant$n/model"); done
python bench/osm_maps.py "${args[@]}" --seeds 0 --threads 2 --out bench/results/osm_maps/variants
