#!/usr/bin/env python
"""geodiff benchmarks: synthesis throughput, fraction of roofline, CPU seconds per tile, rasterization time.

Usage::

    python bench/run.py                      # shipped model, or its architecture randomly initialised if absent
    python bench/run.py --model DIR --area-px 1024 --ref-tiles 2 --threads 2

Writes ``bench/results/<device>.json`` and ``.md`` with the device, the date and the exact command.

What is measured
----------------
- default synthesis: ``synthesize_map`` at the default steps/sampler/batch/precision (DPM-Solver++ 20 steps,
  batch 8, bf16 on CUDA / fp32 on CPU, 64 px blended overlap) on an ``area_px`` square map; reported as 256x256
  output tiles/s and km^2/min at the model's resolution.
- naive reference: 1000 DDPM ancestral steps, one 256 px tile at a time, fp32, no overlap. On CPU only
  ``--ref-probe-steps`` U-Net calls are timed and scaled to 1000 steps (labelled ``extrapolated``); on a GPU
  ``--ref-tiles`` tiles are run in full.
- roofline: U-Net / decoder FLOPs per call counted with ``torch.utils.flop_counter.FlopCounterMode``, times the
  number of calls, divided by wall time and by the measured peak dense-matmul FLOP/s of the device in the same
  dtype.
- CPU seconds per tile (process CPU time, all threads) for the default synthesis.
- rasterization of the full Monaco extract at 0.5 m/px (skipped if ../shared/data/osm/monaco-*.osm.pbf is absent).

Throughput does not depend on trained weights, so a randomly initialised model with the shipped architecture
gives the same timings as the trained one (the results say which was used).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from geodiff.settings import DEFAULT_MODEL_DIR  # noqa: E402  (after the sys.path line)

MONACO = REPO.parent / "shared" / "data" / "osm" / "monaco-2021-12-03.osm.pbf"
MONACO_BBOX = (7.4090, 43.7230, 7.4400, 43.7520)  # used when the file header has no bbox


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def peak_matmul_flops(device: str, dtype: Any, n: int = 2048, seconds: float = 2.0) -> float:
    """Measured dense matmul FLOP/s (square n x n) in ``dtype`` on ``device``: the roofline's compute roof."""
    import torch

    if device.startswith("cuda"):
        n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def count_flops(model: Any, batch: int) -> dict[str, float]:
    """FLOPs of one U-Net call (``batch`` windows), one conditioning call and one decode call."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    tile, f = model.config.tile_size, model.latent_factor
    maps = torch.zeros(batch, tile, tile, dtype=torch.long, device=model.device)
    lat = torch.randn(
        batch, model.latent_channels, tile // f, tile // f, device=model.device, dtype=model.dtype
    )
    t = torch.full((batch,), 500, device=model.device, dtype=torch.long)
    out = {}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            cond = model.condition(maps)
        out["condition"] = float(fc.get_total_flops())
        with FlopCounterMode(display=False) as fc:
            model.predict_noise(lat, t, cond)
        out["unet"] = float(fc.get_total_flops())
        with FlopCounterMode(display=False) as fc:
            model.decode_latents(lat)
        out["decode"] = float(fc.get_total_flops())
    return out


def bench_default(
    model: Any, area_px: int, steps: int, batch: int, device: str, repeats: int
) -> dict[str, Any]:
    """Default blended synthesis of an ``area_px`` square map; best of ``repeats`` after one warm-up."""
    import numpy as np

    from geodiff.synth import synthesize_map, window_overlap
    from geodiff.tiling import layout_for

    rng = np.random.default_rng(0)
    class_map = (
        rng.integers(0, 5, (area_px // 16, area_px // 16)).repeat(16, 0).repeat(16, 1).astype(np.uint8)
    )
    tile = model.config.tile_size
    lay = layout_for(0, 0, area_px, area_px, tile, window_overlap(tile, model.latent_factor, True))
    synthesize_map(class_map[:tile, :tile], model, steps=2, device=device, batch_size=batch)  # warm-up
    best_wall, cpu = math.inf, math.inf
    for _ in range(repeats):
        _sync(device)
        c0, t0 = time.process_time(), time.perf_counter()
        synthesize_map(class_map, model, steps=steps, device=device, batch_size=batch)
        _sync(device)
        wall = time.perf_counter() - t0
        if wall < best_wall:
            best_wall, cpu = wall, time.process_time() - c0
    tiles = area_px * area_px / 256**2
    km2 = area_px * area_px * model.config.resolution_m**2 / 1e6
    return {
        "area_px": area_px, "windows": lay.count, "steps": steps, "sampler": "dpm", "batch_size": batch,
        "seconds": best_wall, "tiles_per_s": tiles / best_wall, "km2_per_min": km2 / (best_wall / 60),
        "cpu_seconds_per_tile": cpu / tiles, "unet_calls": steps * math.ceil(lay.count / batch),
        "decode_calls": math.ceil(lay.count / batch),
    }  # fmt: skip


def bench_reference(model: Any, device: str, probe_steps: int, tiles: int, full: bool) -> dict[str, Any]:
    """Naive reference: DDPM ancestral sampling, 1000 steps, batch 1, fp32, one tile at a time."""
    import torch

    ref = model.to(device=device, dtype=torch.float32)
    tile, f = ref.config.tile_size, ref.latent_factor
    sched = ref.make_scheduler("ddpm")
    sched.set_timesteps(1000, device=device)
    maps = torch.zeros(1, tile, tile, dtype=torch.long, device=device)
    g = torch.Generator(device="cpu").manual_seed(0)
    n_steps = 1000 if full else probe_steps
    timesteps = sched.timesteps[:n_steps]
    per_tile = []
    with torch.inference_mode():
        for _ in range(tiles if full else 1):
            lat = torch.randn(1, ref.latent_channels, tile // f, tile // f, generator=g).to(device)
            cond = ref.condition(maps)
            ref.predict_noise(lat, timesteps[0], cond)  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            for t in timesteps:
                eps = ref.predict_noise(lat, t, cond)
                lat = sched.step(eps, t, lat, generator=g).prev_sample
            _sync(device)
            t_steps = time.perf_counter() - t0
            t0 = time.perf_counter()
            ref.decode_latents(lat)
            _sync(device)
            t_dec = time.perf_counter() - t0
            per_tile.append(t_steps * (1000 / n_steps) + t_dec)
    sec = min(per_tile)
    return {
        "steps": 1000, "sampler": "ddpm", "batch_size": 1, "dtype": "float32", "timed_steps": n_steps,
        "extrapolated": not full, "seconds_per_tile": sec, "tiles_per_s": 1 / sec,
        "km2_per_min": (256 * 256 * ref.config.resolution_m**2 / 1e6) / (sec / 60),
    }  # fmt: skip


def bench_rasterize(resolution: float) -> dict[str, Any] | None:
    if not MONACO.is_file():
        return None
    from geodiff.classes import CLASS_NAMES
    from geodiff.grid import parse_bbox
    from geodiff.rasterize import rasterize_bbox

    bbox = MONACO_BBOX
    try:
        import osmium

        box = osmium.io.Reader(str(MONACO), osmium.osm.osm_entity_bits.NOTHING).header().box()
        if box.valid():
            bbox = (box.bottom_left.lon, box.bottom_left.lat, box.top_right.lon, box.top_right.lat)
    except Exception:  # noqa: BLE001 - header bbox is a convenience; the fixed Monaco bbox is fine
        pass
    t0 = time.perf_counter()
    class_map, grid = rasterize_bbox(parse_bbox(bbox), resolution=resolution, osm_path=MONACO)
    sec = time.perf_counter() - t0
    return {
        "file": MONACO.name, "bbox": list(bbox), "resolution_m": resolution, "width": grid.width,
        "height": grid.height, "megapixels": grid.width * grid.height / 1e6, "seconds": sec,
        "km2": grid.width * grid.height * resolution**2 / 1e6,
        "class_fractions": {n: round(float((class_map == i).mean()), 4) for i, n in enumerate(CLASS_NAMES)},
    }  # fmt: skip


def load_bench_model(model_dir: Path, config: Path | None, device: str, dtype: Any) -> tuple[Any, str]:
    """The trained model if ``model_dir`` exists, else its architecture (``[model]`` of a train config) at random."""
    import tomllib

    import torch

    from geodiff.model import GeodiffModel, ModelConfig

    if (model_dir / "config.json").is_file():
        return GeodiffModel.from_pretrained(str(model_dir), device=device, dtype=dtype), str(model_dir)
    torch.manual_seed(0)
    if config is not None and config.is_file():
        fields = tomllib.loads(config.read_text()).get("model", {})
        name = config.relative_to(REPO) if config.is_relative_to(REPO) else config
        desc = f"random init of the architecture in {name}"
    else:
        fields, desc = {}, "random init of the default ModelConfig"
    model = GeodiffModel(ModelConfig(**fields)).to(device=device, dtype=dtype).eval()
    return model, f"{desc} ({model_dir.name} not found; timings do not depend on weights)"


def markdown(res: dict[str, Any]) -> str:
    d, r = res["default"], res["reference"]
    lines = [
        f"# geodiff benchmark: {res['device_name']} ({res['device']})",
        "",
        f"- date: {res['date']}; torch {res['torch']}, {res['threads']} CPU thread(s)",
        f"- command: `{res['command']}`",
        f"- model: {res['model']} ({res['resolution_m']} m/px, {res['tile_size']} px windows)",
        "",
        "| run | steps | batch | dtype | 256 px tiles/s | km^2/min | note |",
        "|---|---|---|---|---|---|---|",
        f"| default (blended, {d['area_px']} px map) | {d['steps']} dpm | {d['batch_size']} | {res['dtype']} | "
        f"{d['tiles_per_s']:.3g} | {d['km2_per_min']:.3g} | measured |",
        f"| naive reference | 1000 ddpm | 1 | float32 | {r['tiles_per_s']:.3g} | {r['km2_per_min']:.3g} | "
        + (f"extrapolated from {r['timed_steps']} timed steps" if r["extrapolated"] else "measured")
        + " |",
        "",
        f"- speed-up of the default over the naive reference: {d['tiles_per_s'] / r['tiles_per_s']:.0f}x",
        f"- CPU seconds per 256 px tile (default): {d['cpu_seconds_per_tile']:.2f}",
        f"- U-Net: {res['flops']['unet_per_window'] / 1e9:.2f} GFLOP per window-step, decoder "
        f"{res['flops']['decode_per_window'] / 1e9:.2f} GFLOP per window; measured peak matmul "
        f"{res['peak_flops'] / 1e12:.3g} TFLOP/s ({res['dtype']}); default run achieved "
        f"{res['achieved_flops'] / 1e12:.3g} TFLOP/s = {100 * res['roofline_fraction']:.1f}% of that roof",
    ]
    ras = res.get("rasterize")
    if ras:
        lines.append(
            f"- rasterize {ras['file']} at {ras['resolution_m']} m/px: {ras['width']} x {ras['height']} px "
            f"({ras['km2']:.1f} km^2) in {ras['seconds']:.1f} s"
        )
    else:
        why = "--skip-rasterize" if "rasterize" not in res else f"{MONACO.name} not found"
        lines.append(f"- rasterization benchmark skipped ({why})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument(
        "--config",
        type=Path,
        default=REPO / "configs" / "cpu_default.toml",
        help="train config whose [model] architecture is used when --model does not exist",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--area-px", type=int, default=512, help="side of the square map for the default run")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--ref-probe-steps", type=int, default=10, help="CPU: timed DDPM steps, scaled to 1000")
    p.add_argument("--ref-tiles", type=int, default=2, help="GPU: reference tiles run in full")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--skip-rasterize", action="store_true")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)

    import torch

    from geodiff.models import device_dtype, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = device_dtype(device)
    model, model_desc = load_bench_model(args.model, args.config, device, dtype)
    print(f"device {device} ({device_name(device)}), dtype {dtype}, model: {model_desc}", file=sys.stderr)

    flops = count_flops(model, 1)
    default = bench_default(model, args.area_px, args.steps, args.batch_size, device, args.repeats)
    windows = default["windows"]
    work = (flops["unet"] * args.steps + flops["decode"] + flops["condition"]) * windows
    peak = peak_matmul_flops(device, dtype)
    full_ref = device.startswith("cuda")
    reference = bench_reference(model, device, args.ref_probe_steps, args.ref_tiles, full_ref)
    res: dict[str, Any] = {
        "device": device,
        "device_name": device_name(device),
        "dtype": str(dtype).removeprefix("torch."),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", "bench/run.py", *(argv or sys.argv[1:])]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": model_desc,
        "resolution_m": model.config.resolution_m,
        "tile_size": model.config.tile_size,
        "default": default,
        "reference": reference,
        "flops": {"unet_per_window": flops["unet"], "decode_per_window": flops["decode"],
                  "condition_per_window": flops["condition"], "default_run_total": work},
        "peak_flops": peak,
        "achieved_flops": work / default["seconds"],
        "roofline_fraction": work / default["seconds"] / peak,
        "notes": [
            "CPU reference timings are extrapolated from a few timed DDPM steps (see reference.timed_steps)"
            if not full_ref else "reference run in full on the GPU",
            "the CPU is shared with other processes while this runs; timings are upper bounds on cost",
        ],
    }  # fmt: skip
    if not args.skip_rasterize:
        res["rasterize"] = bench_rasterize(0.5)
    slug = "cpu" if device == "cpu" else re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{slug}.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out_dir / f"{slug}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
