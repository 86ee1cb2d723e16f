#!/usr/bin/env python
"""The fast sampler against the full one: seconds per 256 px tile in one run, and quality with the kept judge.

Usage::

    python bench/distill_pilot.py --data runs/data/dubai --model runs/cpu_distill/model \
        --seg-net bench/results/judge_segnet --limit 16 --threads 1 --out bench/results/distill_pilot

Timing: one 256 px tile (a single window, noise to decoded image, batch 1) with the teacher (20 DPM-Solver++
steps, guidance 2: 40 U-Net passes) and with the student (its default steps, guidance folded in: one pass a
step), alternating, ``--timing-reps`` times each; the medians and their ratio. Quality: ``geodiff evaluate``'s
protocol (:func:`geodiff.evaluate.run.evaluate_model`, seeds ``seed + i``) on ``--limit`` held-out tiles for each
arm: the teacher at full quality, the student, and the teacher itself cut to the student's budget of U-Net
passes (2 guided DPM-Solver++ steps; 4 unguided ones), which is what a few-step sampler costs without
distillation, and 4 guided steps (8 passes): the ceiling of guided distillation without step distillation
(a student with guidance folded in, sampled with 4 DPM-Solver++ steps). Writes ``<out>/results.json`` and one
evaluation report folder per arm.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

# arm name -> (quality, steps, guidance scale or None for the model's, U-Net passes per tile)
ARMS = {
    "full": ("full", 20, None, 40),
    "fast": ("fast", None, None, None),
    "teacher_dpm2_guided": ("full", 2, None, 4),
    "teacher_dpm4_unguided": ("full", 4, 1.0, 4),
    # what guided distillation alone (guidance folded in, no step distillation) can reach at 4 steps
    "teacher_dpm4_guided": ("full", 4, None, 8),
    "fast_2steps": ("fast", 2, None, 2),
    "fast_8steps": ("fast", 8, None, 8),
    "fast_guidance3": ("fast", None, 3.0, None),  # w-conditioning: the guidance scale is still a choice
    # the student with the deterministic DDIM sampler instead of LCM's re-noising one
    "fast_ddim": ("fast", None, None, None),
}


def time_tiles(models: dict, masks: np.ndarray, reps: int) -> dict[str, float]:
    """Median seconds per 256 px tile for each model, alternating so both see the same machine load."""
    from geodiff.pipeline import GeodiffPipeline

    pipes = {name: GeodiffPipeline(m) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(reps):
        for name, pipe in pipes.items():
            cmap = masks[r % len(masks)]
            t0 = time.perf_counter()
            pipe(cmap, generator=torch.Generator().manual_seed(r))
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}


def summary(rep: dict) -> dict[str, float]:
    fid, dist, seams = rep["map_fidelity"], rep["distance"], rep.get("seams", {})
    return {
        "miou_synthetic": round(fid["synthetic"]["miou"], 4),
        "miou_real": round(fid["real"]["miou"], 4),
        "fidelity_ratio": round(fid["synthetic"]["miou"] / fid["real"]["miou"], 3),
        "per_class": {k: v if v is None else round(v, 3) for k, v in fid["synthetic"]["per_class"].items()},
        "seg_feature_kid": round(dist["seg_feature_kid"], 4),
        "seg_feature_kid_std": round(dist["seg_feature_kid_std"], 4),
        "seg_feature_fid": round(dist["seg_feature_fid"], 3),
        "sharpness": round(dist["synthetic_sharpness"], 3),
        "seam_ratio_blended": round(seams["blended"]["ratio"], 3) if seams else None,
        "seam_ratio_independent": round(seams["independent_tiles"]["ratio"], 3) if seams else None,
        "seconds": rep["meta"]["seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="a model folder with student/")
    ap.add_argument("--seg-net", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timing-reps", type=int, default=5)
    ap.add_argument(
        "--arms",
        default="full,fast,teacher_dpm2_guided,teacher_dpm4_unguided",
        help=f"comma-separated, of {', '.join(ARMS)}",
    )
    ap.add_argument("--seam-size", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from geodiff.evaluate.data import load_splits
    from geodiff.evaluate.run import evaluate_model
    from geodiff.models import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = {q: load_model(args.model, device="cpu", quality=q) for q in ("full", "fast")}
    passes_fast = models["fast"].default_steps
    test = load_splits(args.data, tile=models["full"].config.tile_size)["test"]
    # runs with other --arms add to the same results.json (each run's command is kept)
    old = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    result: dict = {
        **old,
        "runs": old.get("runs", [])
        + [
            {
                "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "command": shlex.join([sys.executable, *sys.argv]),
            }
        ],
        "threads": args.threads,
        "student": vars(models["fast"].student),
    }
    result.setdefault("quality", {})
    if args.timing_reps:
        secs = time_tiles(models, test.masks[: args.timing_reps], args.timing_reps)
        result["seconds_per_tile"] = {
            "full (20 DPM-Solver++ steps, guidance 2, 40 passes)": round(secs["full"], 3),
            f"fast ({passes_fast} student steps, 1 pass each)": round(secs["fast"], 3),
            "ratio full / fast": round(secs["full"] / secs["fast"], 2),
        }
        print(json.dumps(result["seconds_per_tile"]), flush=True)
        (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    for arm in filter(None, args.arms.split(",")):  # --arms "": timing only
        quality, steps, guidance, passes = ARMS[arm]
        model = models[quality]
        steps = steps or model.default_steps
        if arm == "fast_ddim":
            from geodiff.model.student import make_student_scheduler

            ddim = functools.partial(make_student_scheduler, model.scheduler_config, "ddim")
            model.make_scheduler = lambda *_, _ddim=ddim, **__: _ddim()  # for every sampler asked for
        rep = evaluate_model(
            args.data, None, out / arm, seg_net=args.seg_net, steps=steps, limit=args.limit, seed=args.seed,
            device="cpu", model=model, guidance_scale=guidance, seam_size=args.seam_size,
        )  # fmt: skip
        vars(model).pop("make_scheduler", None)  # back to the class's own
        row = {"steps": steps, "unet_passes_per_tile": passes or steps, **summary(rep)}
        result["quality"][arm] = row
        print(arm, json.dumps(row), flush=True)
        (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
