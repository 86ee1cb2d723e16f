"""Measure a saved model and refresh its card: AE PSNR/SSIM/sharpness on the validation split, CPU seconds per
256 px tile at 20 DPM-Solver++ steps (with the model's guidance), and a map / real / synthetic grid.

    python scripts/finalize_model.py geodiff/data/models/geodiff-default runs/data/dubai \
        [--guidance-scale S] [--threads 2] [--tiles 4] [--run-dir runs/cpu_default_detail_diffusion]

``--guidance-scale`` first sets the model's default classifier-free guidance (config.json), chosen from
``geodiff evaluate --guidance-scale`` runs. ``--card-only`` rewrites README.md from the metrics already recorded,
after card_notes.md was edited. The card's training rows come from ``--run-dir`` (the diffusion run that made the
model) or, without it, from the model's own ``training.json`` (written with every card).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geodiff.model import GeodiffModel
from geodiff.pipeline import GeodiffPipeline
from geodiff.train.card import TRAINING_FILE, read_training_record, sample_grid, write_model_card
from geodiff.train.dataset import TileDataset
from geodiff.train.loops import _load_checkpoint, evaluate_autoencoder

# metrics.json's names for the autoencoder figures (evaluate_autoencoder's keys); --card-only reads them back
AE_METRIC_NAMES = {
    "psnr_db": "autoencoder PSNR (val, dB)",
    "ssim": "autoencoder SSIM (val)",
    "sharpness": "autoencoder sharpness (val; 1.0 = as sharp as the real tiles)",
    "tiles": "validation tiles",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--eval-tiles", type=int, default=145)
    ap.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="the model's diffusion training run (default: the record in the model's training.json)",
    )
    ap.add_argument("--guidance-scale", type=float, default=None)
    ap.add_argument(
        "--card-only",
        action="store_true",
        help="only rewrite README.md (after editing card_notes.md) from the metrics.json already recorded",
    )
    ap.add_argument(
        "--vae",
        type=Path,
        default=None,
        help="swap in this autoencoder (a decoder-only fine-tune of the model's)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.card_only and (args.vae is not None or args.guidance_scale is not None):
        raise SystemExit("--card-only changes nothing in the model: drop --vae and --guidance-scale")
    recorded = recorded_autoencoder_metrics(args.model) if args.card_only else None
    run = training_record(args.model, args.run_dir)  # before anything changes: no card without it
    if recorded is not None:
        val = TileDataset(args.data, "val", crop=None, augment=False)
        model = GeodiffModel.from_pretrained(args.model)
        write_card(args.model, model, run, recorded, val.manifest)
        return
    if args.vae is not None:
        from geodiff.model import load_autoencoder

        model = GeodiffModel.from_pretrained(args.model)
        vae = load_autoencoder(args.vae)
        if (vae.config.scaling_factor, vae.config.latent_channels) != (
            model.vae.config.scaling_factor,
            model.vae.config.latent_channels,
        ):
            raise SystemExit(
                f"{args.vae} has another latent scale or channel count: only a decoder-only fine-tune may be "
                "swapped in"
            )
        model.set_autoencoder(vae)
        model.save_pretrained(args.model)
    if args.guidance_scale is not None:
        cfg_file = args.model / "config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg["guidance_scale"] = args.guidance_scale
        cfg_file.write_text(json.dumps(cfg, indent=2) + "\n")
    model = GeodiffModel.from_pretrained(args.model)
    val = TileDataset(args.data, "val", crop=None, augment=False)
    ae = evaluate_autoencoder(model.vae, val, torch.device("cpu"), args.eval_tiles)

    pipe = GeodiffPipeline(model, model.make_scheduler("dpm"))
    cmap = torch.from_numpy(val.masks[0].astype(np.int64))
    cmap[cmap == 255] = 0
    pipe(cmap, num_inference_steps=2)  # warm-up
    times = []
    for seed in range(2):
        t0 = time.perf_counter()
        pipe(cmap, num_inference_steps=20, generator=torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - t0)

    idx = np.linspace(0, len(val) - 1, args.tiles).round().astype(int)
    grid = sample_grid(model, val.images[idx], val.masks[idx], steps=20)
    Image.fromarray(grid).save(args.model / "samples.png", optimize=True)

    size = sum(p.stat().st_size for p in args.model.rglob("*") if p.is_file() and p.name != "samples.png")
    metrics = {
        **{AE_METRIC_NAMES[k]: ae[k] for k in ("psnr_db", "ssim", "sharpness")},
        "default guidance scale": model.config.guidance_scale,
        AE_METRIC_NAMES["tiles"]: ae["tiles"],
        f"CPU seconds per 256 px tile, 20 steps, {args.threads} threads"
        + (" (guided: two U-Net passes per step)" if model.config.guidance_scale > 1 else ""): round(
            min(times), 2
        ),
        "weights on disk (MB)": round(size / 1e6, 1),
        "command": f"python scripts/finalize_model.py {args.model} {args.data} --threads {args.threads}"
        + (f" --guidance-scale {args.guidance_scale:g}" if args.guidance_scale is not None else "")
        + (f" --vae {args.vae}" if args.vae is not None else ""),
    }
    (args.model / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_card(args.model, model, run, ae, val.manifest)
    print(json.dumps(metrics, indent=2))


def recorded_autoencoder_metrics(folder: Path) -> dict:
    """The autoencoder figures of an earlier full run, from its metrics.json."""
    path = folder / "metrics.json"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run without --card-only first, which measures the model")
    recorded = json.loads(path.read_text())
    return {key: recorded[name] for key, name in AE_METRIC_NAMES.items()}


def training_record(model: Path, run_dir: Path | None) -> dict:
    """Steps, time, config and starting points of the training run: from the run's time.json and checkpoint, or
    without ``run_dir`` from the model's training.json."""
    if run_dir is None:
        recorded = read_training_record(model)
        if not recorded or "step" not in recorded:
            raise SystemExit(
                f"{model / TRAINING_FILE} is missing: pass the model's diffusion training run as --run-dir"
            )
        return recorded
    times = run_dir / "diffusion" / "time.json"
    ckpt = run_dir / "diffusion" / "checkpoint.pt"
    if not (times.exists() and ckpt.exists()):  # the card's training rows and config come from there
        raise SystemExit(f"{times} or {ckpt} is missing: pass the model's training run as --run-dir")
    t = json.loads(times.read_text())
    state = _load_checkpoint(ckpt, torch.device("cpu"))
    # a run that trained on from another model (and autoencoder) says so in the card
    return {
        "step": t["step"],
        "train_seconds": t["seconds"],
        "config": state["config"],
        "pretrained": state.get("pretrained", ""),
        "autoencoder": state.get("autoencoder", ""),
    }


def write_card(folder: Path, model: GeodiffModel, run: dict, ae: dict, manifest: dict) -> None:
    """README.md from the model, the training ``run``'s record, the autoencoder figures ``ae`` and the dataset's
    ``manifest``."""
    write_model_card(folder, model, {"dataset": manifest, **run, "autoencoder_metrics": ae})


if __name__ == "__main__":
    main()
