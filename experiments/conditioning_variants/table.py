"""The conditioning variants' table (issue 31, deliver 3), from what ``run.sh`` left in runs/variants.

    python experiments/conditioning_variants/table.py [--runs runs/variants] [--out bench/results/conditioning_variants]

Per variant and judged seed: training steps in the equal CPU budget, the held-out Dubai judge scores (synthetic
mIoU, its ratio to the real tiles' mIoU, seg-feature KID, sharpness) and the OSM benchmark (mean place mIoU on
all / picking / held-out areas, worst place). Writes ``OUT/table.md`` and ``OUT/table.json`` and keeps the
records they were made from (``OUT/records/``: evaluate's report.json, the OSM benchmark's json/md per variant,
its picture grid for the first seed) so the table can be checked without runs/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VARIANTS = [1, 2, 3, 4, 5]


def config(n: int) -> dict:
    return tomllib.loads((HERE / f"variant{n}.toml").read_text())


def collect(runs: Path) -> list[dict]:
    rows = []
    for n in VARIANTS:
        trained = runs / f"variant{n}" / "diffusion" / "time.json"
        if not trained.exists():
            continue
        time, cfg = json.loads(trained.read_text()), config(n)
        budget = cfg["diffusion"]["max_minutes"]
        if time["seconds"] < budget * 60:  # still training (time.json exists from the first checkpoint)
            print(f"variant {n}: {time['seconds'] / 60:.1f} of {budget} min trained; left out")
            continue
        for report in sorted((runs / "eval").glob(f"variant{n}_seed*/report.json")):
            seed = int(report.parent.name.rsplit("seed", 1)[1])
            ev = json.loads(report.read_text())
            osm_path = runs / "osm" / f"variant{n}_seed{seed}.json"
            osm = (
                json.loads(osm_path.read_text())["models"][f"variant{n}"][f"seed{seed}"]
                if osm_path.exists()
                else None
            )
            fid = ev["map_fidelity"]
            rows.append(
                {
                    "variant": n,
                    "conditioning": cfg["model"]["conditioning"],
                    "budget": f"{budget:g} {cfg['run'].get('budget_clock', 'wall')} min",
                    "seed": seed,
                    "steps": time["step"],
                    "train_minutes": round(time["seconds"] / 60, 1),
                    "dubai_tiles": ev["meta"]["n_eval_tiles"],
                    "guidance_scale": ev["meta"]["guidance_scale"],
                    "sampling_steps": ev["meta"]["steps"],
                    "dubai_synthetic_miou": fid["synthetic"]["miou"],
                    "dubai_real_miou": fid["real"]["miou"],
                    "dubai_fidelity_ratio": fid["synthetic"]["miou"] / fid["real"]["miou"],
                    "dubai_per_class": fid["synthetic"]["per_class"],
                    "kid": ev["distance"]["seg_feature_kid"],
                    "kid_std": ev["distance"]["seg_feature_kid_std"],
                    "sharpness": ev["distance"]["synthetic_sharpness"],
                    "osm": None
                    if osm is None
                    else {
                        split: {
                            "mean_place": osm[split]["mean_place_miou"],
                            "worst_place": osm[split]["worst_place_miou"],
                        }
                        for split in ("all", "pick", "held_out")
                    }
                    | {"places": {p: v["all"]["miou"] for p, v in osm["places"].items()}},
                }
            )
    return rows


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    head = (
        f"| variant | conditioning | seed | steps in {rows[0]['budget']} | Dubai synthetic mIoU | fidelity ratio | KID | "
        "sharpness | OSM mean place mIoU all / pick / held out | OSM worst place |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        o = r["osm"]
        osm = "–" if o is None else " / ".join(fmt(o[s]["mean_place"]) for s in ("all", "pick", "held_out"))
        worst = "–" if o is None else fmt(o["all"]["worst_place"])
        lines.append(
            f"| {r['variant']} | `{r['conditioning']}` | {r['seed']} | {r['steps']} | {fmt(r['dubai_synthetic_miou'])} "
            f"| {fmt(r['dubai_fidelity_ratio'], 2)} | {fmt(r['kid'], 4)} ± {fmt(r['kid_std'], 4)} "
            f"| {fmt(r['sharpness'], 2)} | {osm} | {worst} |"
        )
    places = sorted({p for r in rows if r["osm"] for p in r["osm"]["places"]})
    per_place = ""
    if places:
        per_place = (
            "\n\nOSM mIoU per place (all areas, pooled pixels):\n\n"
            f"| variant | seed | {' | '.join(places)} |\n|---|---|{'---|' * len(places)}\n"
            + "\n".join(
                f"| {r['variant']} | {r['seed']} | "
                + " | ".join(fmt(r["osm"]["places"].get(p)) for p in places)
                + " |"
                for r in rows
                if r["osm"]
            )
        )
    classes = list(rows[0]["dubai_per_class"]) if rows else []
    per_class = (
        "\n\nDubai synthetic IoU per class:\n\n"
        f"| variant | seed | {' | '.join(classes)} |\n|---|---|{'---|' * len(classes)}\n"
        + "\n".join(
            f"| {r['variant']} | {r['seed']} | "
            + " | ".join(fmt(r["dubai_per_class"][c]) for c in classes)
            + " |"
            for r in rows
        )
        if rows
        else ""
    )
    real = statistics.mean(r["dubai_real_miou"] for r in rows) if rows else None
    foot = (
        f"\n\nThe judge's mIoU on the same real Dubai tiles: {fmt(real)} (fidelity ratio = synthetic / real). "
        "Sampling: each model as exported ("
        f"{', '.join(sorted({str(r['sampling_steps']) for r in rows}))} DPM-Solver++ steps, guidance scale "
        f"{', '.join(sorted({str(r['guidance_scale']) for r in rows}))})."
    )
    return head + "\n".join(lines) + foot + per_place + per_class + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "variants")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "conditioning_variants")
    args = ap.parse_args(argv)
    rows = collect(args.runs)
    if not rows:
        print(f"no judged variant in {args.runs}: run experiments/conditioning_variants/run.sh first")
        return 2
    if len({r["budget"] for r in rows}) > 1:
        print(
            f"the variants' budgets differ ({sorted({r['budget'] for r in rows})}): not a comparison at equal budget"
        )
        return 2
    records = args.out / "records"
    records.mkdir(parents=True, exist_ok=True)
    for r in rows:
        name = f"variant{r['variant']}_seed{r['seed']}"
        shutil.copyfile(args.runs / "eval" / name / "report.json", records / f"{name}_dubai.json")
        for suffix in (".json", ".md") + (("_grid.jpg",) if r["seed"] == rows[0]["seed"] else ()):
            src = args.runs / "osm" / f"{name}{suffix}"
            if src.exists():
                shutil.copyfile(src, records / f"{name}_osm{suffix}")
    (args.out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "table.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
