"""What the autoencoder sharpness figure asks for: sharpness at full and at half resolution.

The sharpness figure (``geodiff.evaluate.reconstruction.sharpness_ratio``: 3x3 Laplacian energy of the luminance,
reconstructions over real tiles) weighs the finest pixel scale. This puts the autoencoders next to the real tiles
blurred by small Gaussians, at full resolution and after a 2x2 box average (the detail of a 2 m/px image), on the
validation tiles:

    python bench/sharpness_scales.py --data runs/data/dubai \
        --model v2=runs/v2_model --model v3=geodiff/data/models/geodiff-default [--threads 2]

Writes bench/results/sharpness_scales.json and .md (or ``--out BASE``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from geodiff.evaluate.reconstruction import psnr_ssim, reconstruct, sharpness_ratio
from geodiff.model import GeodiffModel
from geodiff.train.dataset import TileDataset

RESULTS = Path(__file__).resolve().parent / "results"
BLURS = (0.3, 0.5, 0.7)


def half_resolution(images: np.ndarray) -> np.ndarray:
    """2x2 box average of uint8 (N, H, W, 3) images."""
    n, h, w, c = images.shape
    return images.reshape(n, h // 2, 2, w // 2, 2, c).mean((2, 4)).round().astype(np.uint8)


def measure(name: str, real: np.ndarray, other: np.ndarray) -> dict:
    return {
        "images": name,
        "psnr_db": round(psnr_ssim(real, other)["psnr_db"], 2),
        "sharpness": round(sharpness_ratio(real, other), 3),
        "sharpness_half_resolution": round(sharpness_ratio(half_resolution(real), half_resolution(other)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, required=True, help="a `geodiff dataset` folder (its validation split)"
    )
    ap.add_argument(
        "--model", action="append", default=[], metavar="NAME=DIR", help="a model folder to measure"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "sharpness_scales")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    real = TileDataset(args.data, "val", crop=None, augment=False).images
    rows = [
        measure(
            f"real tiles, Gaussian blur sigma {s} px",
            real,
            np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(s))) for x in real]),
        )
        for s in BLURS
    ]
    for spec in args.model:
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"--model {spec!r}: give NAME=DIR")
        rows.append(
            measure(f"{name} autoencoder", real, reconstruct(GeodiffModel.from_pretrained(folder), real))
        )
    result = {
        "benchmark": "sharpness_scales",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "host": {"platform": platform.platform(), "device": "cpu", "threads": args.threads},
        "data": str(args.data),
        "tiles": int(len(real)),
        "rows": rows,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Sharpness at full and half resolution ({result['date']})",
        "",
        f"- command: `{result['command']}`",
        f"- {result['tiles']} validation tiles of `{args.data}`; CPU, {args.threads} threads",
        "",
        "| images | PSNR (dB) | sharpness | sharpness at half resolution |",
        "|---|---|---|---|",
        *(
            f"| {r['images']} | {r['psnr_db']} | {r['sharpness']} | {r['sharpness_half_resolution']} |"
            for r in rows
        ),
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
