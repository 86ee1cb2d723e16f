#!/usr/bin/env python
"""Augmentation at several real-set sizes: do 64 synthetic pairs help a seg net trained on 16-256 real tiles?

The protocol of issue 31 (and the fast-pairs check of issue 34), beside the single-size experiment of
``bench/augmentation_experiment.py``:

1. split the real dataset into train / held-out (``geodiff.evaluate.data.load_splits``, every held-out tile is
   scored); the first 64 tiles of the training split shuffled with ``--split-seed`` are the *donors*;
2. four pools of 64 extra pairs, built once and cached beside the results (``OUT_pools.npz``):
   ``synthetic`` (the model's images for the donors' masks), ``synthetic-fast`` (the same masks, ``quality="fast"``),
   ``synthetic-osm`` (the model's images for 64 OSM map cells of the shared extracts of other places,
   rasterized with the product's rasterizer, the OSM benchmark's areas left out) and ``real`` (the donors' own
   photos: the ceiling, what 64 more *real* tiles would give);
3. for each size N and seed s: N real tiles drawn (with s) from the training split minus the donors; the seg net
   trained with seed s on those alone (``real``) and on those + each pool (``+pool``), same steps for all arms
   (``--segnet-steps``) or as many epochs (``--segnet-epochs``: more tiles, more steps);
4. the paired change of each arm against ``real`` (same size, same seed, same real tiles): mean and a 95 %
   t-interval over seeds. With ``--segnet-epochs`` the arms with pairs also train longer than ``real``; a
   control (``--arms real --segnet-steps S`` into another ``--out``) trains the real tiles alone for as many
   steps, and ``--report --against CONTROL`` pairs every arm with it as well.

Every run is appended to ``OUT_runs.jsonl`` as it finishes, so the study resumes where it stopped and two
processes (one thread each, different ``--seeds``) can share one ``--out``; ``--report`` writes ``OUT.md`` and
``OUT.json`` from what is there::

    python bench/augmentation_sizes.py --data runs/data/dubai --pools-only --threads 2 --out runs/aug_sizes/study
    python bench/augmentation_sizes.py --data runs/data/dubai --seeds 0,2,4,6,8 --threads 1 --out runs/aug_sizes/study &
    python bench/augmentation_sizes.py --data runs/data/dubai --seeds 1,3,5,7,9 --threads 1 --out runs/aug_sizes/study &
    wait; python bench/augmentation_sizes.py --data runs/data/dubai --report --out bench/results/augmentation_sizes/study

``--report --runs A,B --steps S`` tabulates several studies' runs at exactly S seg-net steps, so arms from a
fixed-step study, a growing-budget study and a control are compared at equal steps in one table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

N_POOL = 64
POOLS = ("synthetic", "synthetic-fast", "synthetic-osm", "real")
OSM_PLACES = (
    "monaco",
    "helsinki",
    "kotka",
    "west_oakland",
    "aguascalientes",
)  # the village: one benchmark cell


def osm_cells(tile: int, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n`` OSM map cells, round-robin over the places, drawn at random among each place's eligible cells
    (the OSM benchmark's filter: >= 10 % mapped, <= half water, not at the extract's edge), its areas left out."""
    import osm_maps

    rng = np.random.default_rng(seed)
    per_place = {}
    for place in OSM_PLACES:
        class_map, grid = osm_maps.place_map(place, 1.0, REPO / "runs")
        bench = {(a.row // tile, a.col // tile) for a in osm_maps.pick_areas(place, class_map, grid, tile)}
        cells = [
            (cell, f"osm:{place}@{i},{j}")
            for i, j, cell in osm_maps.eligible_cells(class_map, tile)
            if (i, j) not in bench
        ]
        per_place[place] = [cells[k] for k in rng.permutation(len(cells))]
        print(f"{place}: {len(cells)} eligible cells", flush=True)
    picked: list[tuple[np.ndarray, str]] = []
    while len(picked) < n and any(per_place.values()):
        for place in OSM_PLACES:
            if per_place[place] and len(picked) < n:
                picked.append(per_place[place].pop())
    return np.stack([c for c, _ in picked]).astype(np.uint8), [name for _, name in picked]


def build_pools(args: argparse.Namespace, splits: dict, donors_idx: np.ndarray, tile: int) -> dict:
    from geodiff.evaluate.run import load_model, synthesize_tiles

    path = Path(f"{args.out}_pools.npz")
    if path.is_file():
        z = np.load(path)
        return {k: (z[f"{k}_images"], z[f"{k}_masks"]) for k in POOLS}
    donors = splits["train"].subset(donors_idx)
    full = load_model(args.model, "cpu", "full")
    fast = load_model(args.model, "cpu", "fast")
    osm_masks, osm_names = osm_cells(tile, N_POOL, args.split_seed)
    t0 = time.monotonic()
    pools = {
        "synthetic": (synthesize_tiles(donors.masks, full, seed=0, steps=full.default_steps), donors.masks),
        "synthetic-fast": (
            synthesize_tiles(donors.masks, fast, seed=0, steps=fast.default_steps),
            donors.masks,
        ),
        "synthetic-osm": (synthesize_tiles(osm_masks, full, seed=0, steps=full.default_steps), osm_masks),
        "real": (donors.images, donors.masks),
    }
    print(f"pools synthesized in {time.monotonic() - t0:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp, **{f"{k}_{part}": v for k, (img, m) in pools.items() for part, v in (("images", img), ("masks", m))},
        osm_names=np.array(osm_names), donor_names=np.array(donors.names),
    )  # fmt: skip
    tmp.replace(path)
    return pools


def done_runs(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_run(path: Path, rec: dict) -> None:
    with open(path, "a") as f:  # two processes share the file: one locked line at a time
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(rec) + "\n")
        fcntl.flock(f, fcntl.LOCK_UN)


def run_study(args: argparse.Namespace) -> None:
    import torch

    from geodiff.evaluate.data import Pairs, load_splits
    from geodiff.evaluate.segmentation import SegNetConfig, iou_scores, predict, train_segnet

    tile = 256
    splits = load_splits(args.data, tile=tile)
    train, test = splits["train"], splits["test"]
    order = np.random.default_rng(args.split_seed).permutation(len(train))
    donors_idx, rest_idx = order[:N_POOL], order[N_POOL:]
    pools = build_pools(args, splits, donors_idx, tile)
    if args.pools_only:
        return
    runs_path = Path(f"{args.out}_runs.jsonl")
    done = done_runs(runs_path)
    budgets = {r.get("segnet_epochs", 0) for r in done} - {args.segnet_epochs}
    if budgets:  # the runs already there would be skipped as done, though trained on another budget
        raise SystemExit(f"{runs_path} holds runs at --segnet-epochs {sorted(budgets)}: give another --out")
    have = {(r["size"], r["seed"], r["arm"]) for r in done}
    cfg = SegNetConfig(base_channels=args.segnet_base)
    sizes = [int(s) for s in args.sizes.split(",")]
    fast_sizes = {int(s) for s in args.fast_sizes.split(",") if s}
    only_arms = {a for a in args.arms.split(",") if a}
    for size in sizes:
        for seed in [int(s) for s in args.seeds.split(",")]:
            pick = np.random.default_rng([seed, size]).choice(rest_idx, size, replace=False)
            real = train.subset(pick)
            arms = {"real": real}
            for pool in POOLS:
                if pool == "synthetic-fast" and size not in fast_sizes:
                    continue
                img, m = pools[pool]
                arms[f"+{pool}"] = Pairs.concat(real, Pairs(img, m, [f"{pool}:{i}" for i in range(len(m))]))
            for arm, pairs in arms.items():
                if (size, seed, arm) in have or (only_arms and arm not in only_arms):
                    continue
                # fixed steps for every arm, or (--segnet-epochs) steps that grow with the arm's tiles
                steps = (
                    max(1, round(args.segnet_epochs * len(pairs) / 8))
                    if args.segnet_epochs
                    else args.segnet_steps
                )
                net, rec = train_segnet(
                    pairs.images, pairs.masks, config=cfg, steps=steps, batch_size=8,
                    crop=args.crop, seed=seed, device="cpu",
                )  # fmt: skip
                scores = iou_scores(predict(net, test.images), test.masks)
                append_run(runs_path, {
                    "size": size, "seed": seed, "arm": arm, "n_train": len(pairs), "miou": scores["miou"],
                    "segnet_steps": steps, "segnet_epochs": args.segnet_epochs,
                    "per_class": scores["per_class"], "train_seconds": round(rec.seconds, 1),
                    "threads": torch.get_num_threads(), "host": platform.node(),
                })  # fmt: skip
                print(f"size {size} seed {seed} {arm}: mIoU {scores['miou']:.3f}", flush=True)


def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    d = np.asarray(diffs, float)
    if len(d) < 2:
        return float(d.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def report(args: argparse.Namespace) -> None:
    from geodiff.classes import CLASS_NAMES
    from geodiff.evaluate.experiment import summarise_runs

    def steps_of(run: dict) -> int:  # runs recorded before the key trained the default --segnet-steps
        return run.get("segnet_steps", args.segnet_steps)

    bases = (args.runs or args.out).split(",")
    runs = [r for base in bases for r in done_runs(Path(f"{base}_runs.jsonl"))]
    if args.steps:  # equal steps: every arm at this many, whichever study (fixed or growing budget) ran it
        runs = [r for r in runs if steps_of(r) == args.steps]
    if not runs:
        raise SystemExit(f"no runs{f' at {args.steps} steps' if args.steps else ''} in {', '.join(bases)}")
    budgets = {r.get("segnet_epochs", 0) for r in runs}
    if len(budgets) > 1 and not args.steps:
        raise SystemExit(
            f"{', '.join(bases)} mix seg-net budgets (--segnet-epochs {sorted(budgets)}): one per --out, "
            "or pick runs at equal --steps"
        )
    by: dict[tuple, dict] = {}
    for r in runs:
        key = (r["size"], r["seed"], r["arm"])
        if key in by:
            raise SystemExit(f"two runs of size {key[0]}, seed {key[1]}, arm {key[2]} in {', '.join(bases)}")
        by[key] = r
    sizes = sorted({r["size"] for r in runs})
    arms = ["real", *(f"+{p}" for p in POOLS)]
    controls: list[str] = []
    # --against: the real arm trained at another budget (--arms real): does a gain need the pairs or the steps?
    if args.against:
        for r in done_runs(Path(f"{args.against}_runs.jsonl")):
            if r["arm"] == "real":
                name = f"real, {steps_of(r)} steps"
                by[r["size"], r["seed"], name] = r
        controls = sorted({a for (_, _, a) in by if a.startswith("real, ")})
        if not controls:
            raise SystemExit(f"no real-arm runs in {args.against}_runs.jsonl")
        arms += controls

    def paired(size: int, arm: str, against: str) -> dict | None:
        """``arm`` minus ``against`` by seed at ``size``: the runs, their mean and its 95 % interval."""
        seeds = sorted(s for (n, s, a) in by if n == size and a == arm and (size, s, against) in by)
        if not seeds:
            return None
        diffs = [by[size, s, arm]["miou"] - by[size, s, against]["miou"] for s in seeds]
        mean, lo, hi = t_interval(diffs)
        return {"seeds": seeds, "runs": diffs, "mean": mean, "ci95": [lo, hi]}

    table, lines = [], []
    for size in sizes:
        for arm in arms:
            seeds = sorted(s for (n, s, a) in by if n == size and a == arm)
            if not seeds:
                continue
            row = {
                "size": size,
                "arm": arm,
                "seeds": seeds,
                **summarise_runs([by[size, s, arm] for s in seeds]),
            }
            if arm != "real" and (change := paired(size, arm, "real")) is not None:
                row["change"] = change
            table.append(row)
    # arm against arm: synthetic pairs against as many real ones (the ceiling), the fast sampler's against the full
    between = [
        {"size": size, "arm": a, "against": b, **d}
        for size in sizes
        for a, b in (
            ("+synthetic", "+real"),
            ("+synthetic-osm", "+real"),
            ("+synthetic-fast", "+synthetic"),
            *((f"+{p}", c) for c in controls for p in POOLS if p != "synthetic-fast"),
        )
        if (d := paired(size, a, b)) is not None
    ]
    res = {
        "experiment": "augmentation by real-set size",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "setup": {
            "pool_size": N_POOL,
            "segnet_epochs": sorted(budgets) if args.steps else budgets.pop(),  # 0: fixed segnet_steps
            "segnet_steps": sorted({steps_of(r) for r in runs}),
            "segnet_base": args.segnet_base,
            "crop": args.crop,
            "split_seed": args.split_seed,
            "data": str(args.data),
            "model": str(args.model or "geodiff-default"),
        },  # fmt: skip
        "table": table,
        "between_arms": between,
        "runs": runs,
        "control_runs": [r for (n, s, a), r in by.items() if a in controls],
    }
    header = f"| real tiles | arm | seeds | mIoU mean ± std | change vs real (95 % CI) | {' | '.join(CLASS_NAMES)} |"
    lines += [header, "|---" * (5 + len(CLASS_NAMES)) + "|"]
    for row in table:
        ch = row.get("change")
        change = "" if ch is None else f"{ch['mean']:+.3f} [{ch['ci95'][0]:+.3f}, {ch['ci95'][1]:+.3f}]"
        per = " | ".join(
            "n/a" if row["per_class"][c] is None else f"{row['per_class'][c]['mean']:.3f}"
            for c in CLASS_NAMES
        )
        lines.append(f"| {row['size']} | {row['arm']} | {len(row['seeds'])} | {row['miou_mean']:.3f} ± "
                     f"{row['miou_std']:.3f} | {change} | {per} |")  # fmt: skip
    lines += [
        "",
        "| real tiles | arm | against | seeds | mIoU difference (95 % CI) |",
        "|---|---|---|---|---|",
    ]
    for d in between:
        lines.append(f"| {d['size']} | {d['arm']} | {d['against']} | {len(d['seeds'])} | {d['mean']:+.3f} "
                     f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(res, indent=2))
    Path(f"{out}_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    p.add_argument("--sizes", default="32,16,64", help="real-set sizes, in the order they are run")
    p.add_argument("--fast-sizes", default="32", help="sizes that also get the +synthetic-fast arm")
    p.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    p.add_argument("--segnet-steps", type=int, default=600, help="seg-net steps of every arm")
    p.add_argument(
        "--segnet-epochs", type=float, default=0,
        help="instead: steps = epochs x the arm's tiles / batch 8 (a budget that grows with the data)",
    )  # fmt: skip
    p.add_argument("--segnet-base", type=int, default=12)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--arms",
        default="",
        help="run only these arms (e.g. 'real': a control at another budget; default all)",
    )
    p.add_argument("--pools-only", action="store_true", help="build the pools and stop")
    p.add_argument("--report", action="store_true", help="tabulate OUT_runs.jsonl (or --runs) into OUT")
    p.add_argument(
        "--runs", default=None,
        help="with --report: the base path(s) of the runs file(s), comma-separated (default --out)",
    )  # fmt: skip
    p.add_argument(
        "--steps", type=int, default=0,
        help="with --report: only the runs trained this many seg-net steps (arms compared at equal steps)",
    )  # fmt: skip
    p.add_argument(
        "--against", default=None,
        help="with --report: the base path of a control's runs file (--arms real at another budget): every arm "
        "is also paired with its real arm",
    )  # fmt: skip
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.report:
        report(args)
    else:
        run_study(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
