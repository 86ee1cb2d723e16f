#!/usr/bin/env python
"""Seconds per 256 px tile with ``--runtime torch`` and ``--runtime onnx``, full and fast, in one process.

The shipped model samples the same held-out maps (random class maps when no dataset is given) through
``geodiff.evaluate.run.synthesize_tiles`` (the pipeline, the decoder included) on each runtime in turn, the arms
interleaved rep by rep; it reports the median seconds per tile, the ratio, the first call's extra seconds (ONNX:
export or loading the cached graph, session set-up) and the largest pixel difference between the runtimes::

    python bench/runtime_tiles.py --threads 2 --tiles 8 --reps 3 --out bench/results/runtime_cpu/tiles_2threads
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiles", type=int, default=8, help="tiles per timed call (one batch of 8 by default)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quality", default="full,fast")
    ap.add_argument("--out", type=Path, required=True, help="results base path (.json and .md)")
    args = ap.parse_args(argv)

    import torch

    from geodiff.evaluate.run import synthesize_tiles
    from geodiff.models import resolve_model

    sys.path.insert(0, str(REPO / "bench"))
    from run import device_name

    torch.set_num_threads(args.threads)
    masks = np.random.default_rng(0).integers(0, 5, (args.tiles, 256, 256)).astype(np.uint8)
    rows = []
    for quality in args.quality.split(","):
        models, first, images = {}, {}, {}
        for runtime in ("torch", "onnx"):
            t0 = time.perf_counter()
            m = resolve_model(args.model).load("cpu", quality, runtime)
            images[runtime] = synthesize_tiles(masks[:1], m, steps=m.default_steps)
            first[runtime] = time.perf_counter() - t0
            models[runtime] = m
        times: dict[str, list[float]] = {"torch": [], "onnx": []}
        for _ in range(args.reps):
            for runtime, m in models.items():
                t0 = time.perf_counter()
                images[runtime] = synthesize_tiles(masks, m, steps=m.default_steps)
                times[runtime].append((time.perf_counter() - t0) / args.tiles)
        diff = np.abs(images["torch"].astype(int) - images["onnx"].astype(int))
        med = {r: statistics.median(v) for r, v in times.items()}
        rows.append({
            "quality": quality, "torch_s_per_tile": med["torch"], "onnx_s_per_tile": med["onnx"],
            "speedup": med["torch"] / med["onnx"], "load_and_first_tile_s": first,
            "max_pixel_diff": int(diff.max()), "pixels_differing": float((diff > 0).mean()), "times": times,
        })  # fmt: skip
        print(rows[-1], flush=True)
    res = {
        "command": "python bench/runtime_tiles.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device_name("cpu"),
        "threads": args.threads,
        "tiles": args.tiles,
        "reps": args.reps,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(res, indent=2))
    lines = [
        "# Seconds per tile: --runtime torch vs onnx",
        "",
        f"- command: `{res['command']}`",
        f"- device: {res['device']}, {args.threads} threads; {args.tiles} tiles per call, {args.reps} reps "
        "interleaved (median)",
        "",
        "| quality | torch s/tile | onnx s/tile | speedup | load + first tile torch / onnx s | max pixel diff "
        "| pixels differing |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["load_and_first_tile_s"]
        lines.append(
            f"| {r['quality']} | {r['torch_s_per_tile']:.2f} | {r['onnx_s_per_tile']:.2f} | {r['speedup']:.2f}x | "
            f"{f['torch']:.1f} / {f['onnx']:.1f} | {r['max_pixel_diff']} | {r['pixels_differing']:.2e} |"
        )
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
