"""``geodiff change`` on the embedded sample area: an added building and an added road.

For each edit of BEFORE's semantic map (a class-map GeoTIFF on its grid, i.e. ``geodiff change --map``):

- max |after - before| outside the changed pixels grown by the margin (must be 0);
- the judge's (bench/results/judge_segnet) IoU of the new class on the changed pixels, and its mIoU over the
  re-synthesized area, for the after image, BEFORE (the map edit not applied) and a naive paste of an
  independent run (the after map synthesized with another seed, pasted into the same area);
- the seam ratio across the area's boundary (geodiff.evaluate.seams.mask_seam_ratio; 1.0 = invisible) for the
  after image and the naive paste;
- time and windows, against the whole-area synthesis of BEFORE.

    python bench/change.py [--model NAME] [--steps 20] [--seed 0] [--device auto] [--threads 2] [--workers 2]

Writes bench/results/change/change_<device>.json, .md and change.png (before | after | change mask).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from geodiff.change import change_area, synthesize_change
from geodiff.classes import BUILDING, ROAD, colorize
from geodiff.evaluate.seams import mask_seam_ratio
from geodiff.evaluate.segmentation import iou_scores, load_segnet, predict
from geodiff.io import read_raster, write_class_map
from geodiff.options import ClusterOptions
from geodiff.samples import sample_area
from geodiff.synth import global_origin, synthesize, synthesize_map

RESULTS = Path(__file__).resolve().parent / "results"
JUDGE = RESULTS / "judge_segnet"


def _free_spot(mask: np.ndarray, h: int, w: int) -> tuple[int, int]:
    """Top-left of the h x w block (away from the edges) with the most open land (background, vegetation):
    where a planner could put a building or a road (not in the sea)."""
    busy = ~np.isin(mask, (0, 4)).astype(bool)
    busy = busy.astype(np.float64)
    ii = np.pad(busy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    best, where = np.inf, (0, 0)
    for r in range(40, mask.shape[0] - h - 40, 8):
        for c in range(40, mask.shape[1] - w - 40, 8):
            s = ii[r + h, c + w] - ii[r, c + w] - ii[r + h, c] + ii[r, c]
            if s < best:
                best, where = s, (r, c)
    return where


def edits(mask: np.ndarray, res: float) -> dict[str, tuple[np.ndarray, int]]:
    """name -> (edited map, new class): a 16 m x 12 m building and an 8 m x 100 m road in free spots."""
    out = {}
    bh, bw = round(12 / res), round(16 / res)
    r, c = _free_spot(mask, bh + 8, bw + 8)
    m = mask.copy()
    m[r + 4 : r + 4 + bh, c + 4 : c + 4 + bw] = BUILDING
    out["add_building"] = (m, BUILDING)
    rh, rw = round(100 / res), round(8 / res)
    r, c = _free_spot(mask, rh, rw + 8)
    m = mask.copy()
    m[r : r + rh, c + 4 : c + 4 + rw] = ROAD
    out["add_road"] = (m, ROAD)
    return out


def _crop(area: np.ndarray, pad: int) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(area.any(1)), np.flatnonzero(area.any(0))
    return (
        slice(max(0, rows[0] - pad), min(area.shape[0], rows[-1] + pad + 1)),
        slice(max(0, cols[0] - pad), min(area.shape[1], cols[-1] + pad + 1)),
    )


def run(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    area_info = sample_area()
    judge = load_segnet(JUDGE)
    out: dict = {
        "command": "python bench/change.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "torch_threads": torch.get_num_threads(),
        "area": f"{area_info.name} {area_info.bbox}",
        "model": str(args.model or "default"),
        "seed": args.seed,
        "steps": args.steps,
        "edits": {},
    }
    picture = []
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        cpu0 = time.process_time()
        before = synthesize(
            area_info.bbox, tmp / "before.tif", vector_path=area_info.vector_path, model=args.model,
            seed=args.seed, steps=args.steps, device=args.device,
        )  # fmt: skip
        out["before"] = {
            "seconds": round(before.seconds, 1),
            "cpu_seconds": round(time.process_time() - cpu0, 1),
            "windows": before.plan.windows,
            "size": [before.grid.width, before.grid.height],
            "device": before.plan.device,
        }
        b_rgb = read_raster(before.image_path)[0].transpose(1, 2, 0)
        b_mask = read_raster(before.mask_path)[0][0]
        plan = before.plan
        model = plan.model.load(plan.device)
        # --workers: the regions as tasks on a local Dask cluster (1 thread each); the outside must stay exact
        cluster = ClusterOptions(workers=args.workers, threads=1) if args.workers else None
        for name, (new_map, new_class) in edits(b_mask, before.grid.resolution).items():
            map_path = write_class_map(tmp / f"{name}.map.tif", new_map, before.grid)
            t0, cpu0 = time.monotonic(), time.process_time()
            res = synthesize_change(before.image_path, tmp / f"{name}.tif", map_path=map_path, device=args.device,
                                    model=plan.model, cluster=cluster)  # fmt: skip
            seconds, cpu_seconds = time.monotonic() - t0, time.process_time() - cpu0
            a_rgb = read_raster(res.image_path)[0].transpose(1, 2, 0)
            changed = b_mask != new_map
            area, _ = change_area(changed, res.plan.margin_px)
            diff_outside = int(np.abs(a_rgb.astype(int) - b_rgb)[~area].max())
            # naive paste: the after map synthesized independently (another seed), pasted into the same area
            rs, cs = _crop(area, 64)
            g_row, g_col = global_origin(before.grid)
            indep = synthesize_map(
                new_map[rs, cs], model, seed=args.seed + 1, steps=args.steps, device=args.device,
                origin=(g_row + rs.start, g_col + cs.start), place=before.grid.crs.to_string(),
            )  # fmt: skip
            paste = b_rgb.copy()
            sub = paste[rs, cs]
            sub[area[rs, cs]] = indep[area[rs, cs]]
            row = {"changed_pixels": int(changed.sum()), "area_pixels": int(area.sum()),
                   "windows": res.windows, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
                   "max_abs_diff_outside": diff_outside}  # fmt: skip
            for label, img in (("after", a_rgb), ("before", b_rgb), ("naive_paste", paste)):
                pred = predict(judge, img[rs, cs][None])[0]
                sel = changed[rs, cs]
                hit = float((pred[sel] == new_class).mean())
                miou = iou_scores(pred[area[rs, cs]], new_map[rs, cs][area[rs, cs]])["miou"]
                row[label] = {"new_class_hit_rate": round(hit, 3), "area_miou": round(miou, 3)}
                if label != "before":
                    row[label]["seam_ratio"] = round(mask_seam_ratio(img[rs, cs], area[rs, cs]).ratio, 3)
            out["edits"][name] = row
            print(name, json.dumps(row), flush=True)
            if name == "add_building":
                rs2, cs2 = _crop(area, 40)
                c_rgb = colorize(new_map[rs2, cs2])
                c_rgb[~changed[rs2, cs2]] //= 4
                picture = [b_rgb[rs2, cs2], a_rgb[rs2, cs2], c_rgb]
    if picture:
        from PIL import Image

        h = max(p.shape[0] for p in picture)
        gap = np.full((h, 4, 3), 255, np.uint8)
        strip = np.concatenate(
            [x for p in picture for x in (np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0))), gap)][:-1], 1
        )
        img = Image.fromarray(strip)
        img = img.resize((img.width * 2, img.height * 2), Image.NEAREST)
        (RESULTS / "change").mkdir(parents=True, exist_ok=True)
        if not args.workers:  # the README's picture comes from the single-process run
            img.save(RESULTS / "change" / "change.png", optimize=True)
    return out


def to_markdown(r: dict) -> str:
    lines = [
        f"# geodiff change on the sample area ({r['date']}, {r['out_device'] if 'out_device' in r else r['before']['device']})",
        "",
        f"`{r['command']}`; model {r['model']}, seed {r['seed']}, {r['steps']} steps, {r['torch_threads']} torch threads.",
        f"BEFORE: {r['before']['size'][0]} x {r['before']['size'][1]} px, {r['before']['windows']} windows, "
        f"{r['before']['seconds']} s wall, {r['before']['cpu_seconds']} s CPU (the machine is shared: CPU time is "
        "the fairer cost).",
        "",
        "| edit | changed px | area px | windows | wall s | CPU s | max diff outside | new-class hit (after / before / paste) "
        "| area mIoU (after / before / paste) | seam ratio (after / paste) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in r["edits"].items():
        lines.append(
            f"| {name} | {e['changed_pixels']} | {e['area_pixels']} | {e['windows']} | {e['seconds']} | "
            f"{e['cpu_seconds']} | "
            f"{e['max_abs_diff_outside']} | {e['after']['new_class_hit_rate']} / {e['before']['new_class_hit_rate']} / "
            f"{e['naive_paste']['new_class_hit_rate']} | {e['after']['area_miou']} / {e['before']['area_miou']} / "
            f"{e['naive_paste']['area_miou']} | {e['after']['seam_ratio']} / {e['naive_paste']['seam_ratio']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="inpaint on a local Dask cluster of N workers")
    args = p.parse_args()
    r = run(args)
    folder = RESULTS / "change"
    folder.mkdir(parents=True, exist_ok=True)
    dev = r["before"]["device"].split(":")[0]
    name = f"change_{dev}" + (f"_workers{args.workers}" if args.workers else "")
    (folder / f"{name}.json").write_text(json.dumps(r, indent=2) + "\n")
    (folder / f"{name}.md").write_text(to_markdown(r))
    print(to_markdown(r))


if __name__ == "__main__":
    main()
