#!/usr/bin/env bash
# The seed paper's five conditioning variants at equal budget (issue 31): each U-Net trained from scratch for
# 30 CPU minutes on one thread on v3's autoencoder, then judged on the held-out Dubai tiles (geodiff evaluate,
# the kept judge) and on OSM maps (bench/osm_maps.py). Two queues, one core each: A trains 1, 3, 5 and judges 5;
# B trains 2, 4 and judges 1-4 while A trains on (the budget counts CPU time, so sharing cores does not bias it).
# Resumable: rerun it; a finished step is skipped. Then `python experiments/conditioning_variants/table.py`.
#   nohup experiments/conditioning_variants/run.sh > runs/variants.log 2>&1 &
# One step alone: run.sh train N | run.sh judge N. Knobs (environment): SEEDS (default "0"), LIMIT (Dubai tiles,
# default 64), OSM_ARGS (more bench/osm_maps.py arguments, e.g. "--places monaco,kotka").
# Needs runs/data/dubai and v3 at runs/cpu_default_detail_diffusion/model (scripts/train_cpu_default.sh, or
# `git archive f03f130 geodiff/data/models/geodiff-default | tar -x --strip-components=4 -C that folder`).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
HERE=experiments/conditioning_variants
SEEDS=${SEEDS:-0}
LIMIT=${LIMIT:-64}
OSM_ARGS=${OSM_ARGS:-}

train() {
    local run=runs/variants/variant$1
    [ -f "$run/trained" ] && return
    [ -d "$run/autoencoder/vae" ] ||   # v3's, copied (steps = 0)
        geodiff train autoencoder --config "$HERE/variant$1.toml" --progress none > /dev/null
    geodiff train diffusion --config "$HERE/variant$1.toml" --resume --progress none > /dev/null
    touch "$run/trained"   # the budget is spent: judge may start (the model folder exists from the first steps)
    echo "$(date +%T) variant $1 trained"
}

judge() {
    local model=runs/variants/variant$1/model seed out
    until [ -f "runs/variants/variant$1/trained" ]; do sleep 60; done   # the other queue may still train it
    for seed in $SEEDS; do
        out=runs/variants/eval/variant${1}_seed$seed
        [ -f "$out/report.json" ] || geodiff evaluate --data runs/data/dubai --model "$model" \
            --seg-net bench/results/judge_segnet --limit "$LIMIT" --device cpu --threads 1 --seed "$seed" --out "$out" \
            --progress none
        out=runs/variants/osm/variant${1}_seed$seed
        [ -f "$out.json" ] || python bench/osm_maps.py --model "variant$1=$model" --seeds "$seed" --threads 1 \
            --out "$out" $OSM_ARGS  # word-split on purpose: several arguments
    done
    echo "$(date +%T) variant $1 judged"
}

mkdir -p runs/variants/osm runs/variants/eval
case "${1:-}" in
    train|judge) "$1" "$2"; exit ;;
    "") ;;
    *) echo "usage: run.sh [train N | judge N]" >&2; exit 2 ;;
esac
(train 1; train 3; train 5; judge 5) & a=$!
(train 2; train 4; judge 1; judge 2; judge 3; judge 4) & b=$!
rc=0; wait "$a" || rc=1; wait "$b" || rc=1   # a failed queue fails the script
exit "$rc"
