"""Diffusion training throughput: latents encoded at every step (the old loop) vs the latent cache.

Both runs use the same config, autoencoder, batch size and crop, in one process on the same machine; the only
difference is where the latents come from (``diffusion.latent_cache``). The cache's one-off build time (every
training tile encoded in its 8 orientations) is reported separately, with the step count after which it has
paid for itself.

    python bench/train_throughput.py [--config configs/cpu_default.toml] [--steps 30] [--threads 2]

Writes bench/results/train_throughput_<device>.json and .md. The autoencoder is the config's trained one
(``<run.dir>/autoencoder/vae``) or, with ``--vae``, any diffusers autoencoder folder (default: the shipped
model's).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from geodiff.settings import DEFAULT_MODEL_DIR
from geodiff.train.config import load_config
from geodiff.train.loops import AE_DIR, train_diffusion

RESULTS = Path(__file__).resolve().parent / "results"


def _steady_rate(log: Path, batch: int) -> float:
    """Samples/s over the logged steps after the first (which carries allocator and warm-up costs)."""
    rows = list(csv.DictReader(log.open()))
    first, last = rows[0], rows[-1]
    seconds = float(last["elapsed_s"]) - float(first["elapsed_s"])
    return batch * (int(last["step"]) - int(first["step"])) / max(seconds, 1e-9)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    out: dict = {
        "command": "python bench/train_throughput.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": device,
        "torch": torch.__version__,
        "threads": args.threads,
        "config": args.config,
        "steps": args.steps,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for mode, cached in (("encode_every_step", False), ("latent_cache", True)):
            cfg = load_config(Path(args.config))
            cfg.run.dir = str(Path(tmp) / mode)
            cfg.run.output = str(Path(tmp) / mode / "model")
            cfg.run.device, cfg.run.threads, cfg.run.log_every = device, args.threads, 1
            cfg.run.checkpoint_every = 10**9
            cfg.diffusion.steps, cfg.diffusion.max_minutes, cfg.diffusion.export_every = args.steps, 0, 0
            cfg.diffusion.latent_cache = cached
            cfg.diffusion.snr_gamma = 5.0  # same loss in both runs; its cost is negligible
            shutil.copytree(Path(args.vae), Path(cfg.run.dir) / AE_DIR / "vae")
            t0 = time.monotonic()
            train_diffusion(cfg)
            total = time.monotonic() - t0
            rate = _steady_rate(Path(cfg.run.dir) / "diffusion" / "log.csv", cfg.diffusion.batch_size)
            out[mode] = {"samples_per_s": round(rate, 2), "wall_s": round(total, 1)}
            out["batch_size"], out["crop_px"] = cfg.diffusion.batch_size, cfg.data.crop
        # the cache build is the wall time not spent in steps
        cached_run, plain = out["latent_cache"], out["encode_every_step"]
        steps_s = args.steps * out["batch_size"] / cached_run["samples_per_s"]
        plain_steps_s = args.steps * out["batch_size"] / plain["samples_per_s"]
        build_s = max(0.0, cached_run["wall_s"] - steps_s - (plain["wall_s"] - plain_steps_s))
        saved_per_step = (1 / plain["samples_per_s"] - 1 / cached_run["samples_per_s"]) * out["batch_size"]
        out["cache_build_s"] = round(build_s, 1)
        out["speedup"] = round(cached_run["samples_per_s"] / plain["samples_per_s"], 2)
        out["cache_pays_off_after_steps"] = round(build_s / saved_per_step) if saved_per_step > 0 else None
    return out


def markdown(r: dict) -> str:
    return "\n".join(
        [
            f"# Diffusion training throughput ({r['device']})",
            "",
            f"- date: {r['date']}; torch {r['torch']}, {r['threads']} thread(s); host {r['host']}",
            f"- command: `{r['command']}`",
            f"- config: `{r['config']}`, batch {r['batch_size']}, {r['crop_px']} px crops, {r['steps']} steps each",
            "",
            "| latents | training samples/s |",
            "|---|---|",
            f"| encoded at every step (old loop) | {r['encode_every_step']['samples_per_s']} |",
            f"| latent cache (8 orientations, cropped in latent space) | {r['latent_cache']['samples_per_s']} |",
            "",
            f"- speed-up: {r['speedup']}x; the cache took {r['cache_build_s']} s to build "
            f"(once per autoencoder), paid back after {r['cache_pays_off_after_steps']} steps",
            "",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/cpu_default.toml")
    p.add_argument("--vae", default=str(DEFAULT_MODEL_DIR / "vae"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args()
    r = run(args)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"train_throughput_{r['device']}"
    stem.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
