"""Seam ratio of ``geodiff synth`` output: blended windows vs independent, non-blended tiles.

Seam ratio = mean |difference| of adjacent pixels across window edges / the same at all other offsets
(1.0 = invisible). Both runs use the same area, model, seed and steps; the only difference is blending.

    python bench/seams.py [--model DIR] [--steps 20] [--seed 0] [--device auto]

Writes bench/results/seams_<device>.json and .md (default area: the embedded Monaco sample).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
from pathlib import Path

from geodiff.evaluate.seams import seam_ratio
from geodiff.io import read_raster
from geodiff.samples import sample_area
from geodiff.synth import synthesize

RESULTS = Path(__file__).resolve().parent / "results"


def run(args: argparse.Namespace) -> dict:
    area = sample_area()
    out: dict = {
        "command": "python bench/seams.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "area": f"{area.name} {area.bbox}",
        "model": str(args.model or "default"),
        "seed": args.seed,
        "steps": args.steps,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for mode, blend in (("blended", True), ("independent_tiles", False)):
            res = synthesize(
                area.bbox,
                Path(tmp) / f"{mode}.tif",
                vector_path=area.vector_path,
                model=args.model,
                seed=args.seed,
                steps=args.steps,
                device=args.device,
                blend=blend,
            )
            rgb = read_raster(res.image_path)[0].transpose(1, 2, 0)
            rows, cols = res.plan.window_edges()
            # Both images are scored at the same positions: the edges of the independent tiles.
            if not blend:
                edges = (rows, cols)
            out[mode] = {
                "seconds": round(res.seconds, 1),
                "device": res.plan.device,
                "windows": res.plan.windows,
            }
            out[f"{mode}_rgb"] = rgb
        for mode in ("blended", "independent_tiles"):
            s = seam_ratio(out.pop(f"{mode}_rgb"), rows=edges[0], cols=edges[1])
            out[mode].update(
                seam_ratio=round(s.ratio, 3),
                boundary_mean=round(s.boundary_mean, 2),
                interior_mean=round(s.interior_mean, 2),
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    res = run(p.parse_args())
    RESULTS.mkdir(exist_ok=True)
    dev = res["blended"]["device"]
    (RESULTS / f"seams_{dev}.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [
        f"# Seam ratio ({res['date']}, {dev})",
        "",
        f"`{res['command']}`",
        "",
        f"Area: {res['area']}; model {res['model']}; seed {res['seed']}; {res['steps']} steps.",
        "",
        "| mode | seam ratio (1.0 = invisible) | boundary mean abs diff | interior mean abs diff | seconds |",
        "|---|---|---|---|---|",
    ]
    for mode in ("blended", "independent_tiles"):
        r = res[mode]
        md.append(
            f"| {mode} | {r['seam_ratio']} | {r['boundary_mean']} | {r['interior_mean']} | {r['seconds']} |"
        )
    (RESULTS / f"seams_{dev}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
