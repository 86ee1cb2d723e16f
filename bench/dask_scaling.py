"""Distributed synthesis on this machine: 1 vs 2 Dask workers, and the distributed path's overhead.

In one run, on the same area, model, seed and steps:

- ``single``: :func:`geodiff.synth.synthesize` in this process (``--threads`` torch threads), and
  ``single_1``: the same with 1 thread, what each worker has;
- ``workers_1`` / ``workers_2``: :func:`geodiff.distributed.synthesize_distributed` on a fresh local cluster of
  1 and 2 worker processes (one thread each), cluster start-up included in the wall time;
- the distributed path's overhead: wall time of ``workers_1`` minus ``single_1`` (same compute, so the rest is
  the cluster start, the model load in the worker, sending features and strips, the run folder), also per task.

    python bench/dask_scaling.py [--area-km 1.0] [--steps 10] [--model DIR] [--threads 2]

Writes bench/results/distributed_<device>.json and .md. The default area is the embedded Monaco sample grown
to ``--area-km`` (features from the sample file, background elsewhere), so no download is needed.
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

import torch

from geodiff.distributed import synthesize_distributed
from geodiff.grid import BBox
from geodiff.samples import sample_area
from geodiff.settings import get_settings
from geodiff.synth import plan_synthesis, synthesize

RESULTS = Path(__file__).resolve().parent / "results"


def run(args: argparse.Namespace) -> dict:
    area = sample_area()
    w, s, e, n = area.bbox.as_tuple()
    cx, cy = (w + e) / 2, (s + n) / 2
    half_lon = args.area_km / 2 / 80.4  # ~km per degree of longitude at 43.7 N
    half_lat = args.area_km / 2 / 111.2
    box = BBox(cx - half_lon, cy - half_lat, cx + half_lon, cy + half_lat)
    # small strips so there are enough tasks for two workers
    settings = get_settings(max_strip_pixels=args.strip_pixels)
    out: dict = {
        "command": "python bench/dask_scaling.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "torch": torch.__version__,
        "area": f"{args.area_km} km x {args.area_km} km around the Monaco sample",
        "steps": args.steps,
        "threads": args.threads,
    }
    with tempfile.TemporaryDirectory() as tmp:
        opts = dict(
            vector_path=area.vector_path, model=args.model, steps=args.steps, device="cpu", settings=settings
        )
        probe = plan_synthesis(box, Path(tmp) / "probe.tif", **opts)
        out.update(
            grid=[probe.grid.width, probe.grid.height], windows=probe.windows, strips=len(probe.strips)
        )
        torch.set_num_threads(args.threads)
        t0 = time.monotonic()
        synthesize(plan_synthesis(box, Path(tmp) / "single.tif", **opts), settings=settings)
        out["single"] = {"wall_s": round(time.monotonic() - t0, 1), "threads": args.threads}
        torch.set_num_threads(1)
        t0 = time.monotonic()
        synthesize(plan_synthesis(box, Path(tmp) / "single1.tif", **opts), settings=settings)
        out["single_1"] = {"wall_s": round(time.monotonic() - t0, 1), "threads": 1}
        torch.set_num_threads(args.threads)
        for workers in (1, 2):
            t0 = time.monotonic()
            synthesize_distributed(
                plan_synthesis(box, Path(tmp) / f"w{workers}.tif", **opts), workers=workers, settings=settings
            )
            out[f"workers_{workers}"] = {"wall_s": round(time.monotonic() - t0, 1)}
    w1, w2, single = out["workers_1"]["wall_s"], out["workers_2"]["wall_s"], out["single"]["wall_s"]
    out["speedup_2_vs_1_workers"] = round(w1 / w2, 2)
    out["windows_per_s"] = {
        k: round(out["windows"] / out[k]["wall_s"], 3)
        for k in ("single", "single_1", "workers_1", "workers_2")
    }
    out["overhead_1_worker_vs_single_1_thread_s"] = round(w1 - out["single_1"]["wall_s"], 1)
    out["overhead_per_task_s"] = round(out["overhead_1_worker_vs_single_1_thread_s"] / out["strips"], 2)
    out["speedup_single_2_threads_vs_2_workers"] = round(w2 / single, 2)
    return out


def markdown(r: dict) -> str:
    return "\n".join(
        [
            "# Distributed synthesis (cpu)",
            "",
            f"- date: {r['date']}; torch {r['torch']}; host {r['host']}",
            f"- command: `{r['command']}`",
            f"- area: {r['area']}: {r['grid'][0]} x {r['grid'][1]} px, {r['windows']} windows in {r['strips']} strips "
            f"(tasks), {r['steps']} steps",
            "",
            "| run | wall time (s) | windows/s |",
            "|---|---|---|",
            f"| single process, {r['threads']} torch threads | {r['single']['wall_s']} | {r['windows_per_s']['single']} |",
            f"| single process, 1 torch thread | {r['single_1']['wall_s']} | {r['windows_per_s']['single_1']} |",
            f"| Dask, 1 worker x 1 thread | {r['workers_1']['wall_s']} | {r['windows_per_s']['workers_1']} |",
            f"| Dask, 2 workers x 1 thread | {r['workers_2']['wall_s']} | {r['windows_per_s']['workers_2']} |",
            "",
            f"- 2 vs 1 workers: {r['speedup_2_vs_1_workers']}x",
            f"- overhead of the distributed path (1 worker x 1 thread vs one process with 1 thread; cluster start, "
            f"model load, transfers and run folder included): {r['overhead_1_worker_vs_single_1_thread_s']:+} s, "
            f"{r['overhead_per_task_s']:+} s per task",
            f"- one process with {r['threads']} threads vs 2 one-thread workers on the same {r['threads']} cores: "
            f"the process is {r['speedup_single_2_threads_vs_2_workers']}x faster",
            "",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--area-km", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--strip-pixels", type=int, default=450_000)
    r = run(p.parse_args())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed_cpu.json").write_text(json.dumps(r, indent=2) + "\n")
    (RESULTS / "distributed_cpu.md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
