"""Decoders between two fine-tunes of one autoencoder: PSNR and sharpness along the line between their weights.

A decoder-only adversarial fine-tune trades reconstruction PSNR for sharpness; ``geodiff.train.surgery.mix`` mixes the
weights of the decoder before (A) and after (B) it, ``(1 - alpha) * A + alpha * B``, a decoder for the same
latents without training. This measures the validation tiles' PSNR, SSIM and sharpness at each alpha, the way
the training run and the model card do:

    python bench/decoder_interpolation.py --data runs/data/dubai \
        --a runs/v3_stage1/vae --b runs/v3_texture/vae \
        --alphas 0,0.25,0.5,0.75,1 [--threads 2]

Writes bench/results/decoder_interpolation.json and .md (or ``--out BASE``). It only measures: the chosen
alpha's autoencoder is made with ``geodiff model mix-decoders A B --alpha ALPHA --out DIR``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import torch

from geodiff.model import load_autoencoder
from geodiff.train.dataset import TileDataset
from geodiff.train.loops import evaluate_autoencoder
from geodiff.train.surgery.mix import mix_decoders

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, required=True, help="a `geodiff dataset` folder (its validation split)"
    )
    ap.add_argument("--a", type=Path, required=True, help="the autoencoder before the decoder fine-tune")
    ap.add_argument("--b", type=Path, required=True, help="the autoencoder after it (same encoder)")
    ap.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="comma-separated weights of --b")
    ap.add_argument("--tiles", type=int, default=145, help="validation tiles (the training runs use 145)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "decoder_interpolation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    alphas = [float(a) for a in args.alphas.split(",")]
    val = TileDataset(args.data, "val", crop=None, augment=False)
    vae_a = load_autoencoder(args.a, dtype=torch.float32).eval()
    vae_b = load_autoencoder(args.b, dtype=torch.float32).eval()
    rows = []
    for alpha in alphas:
        vae = mix_decoders(vae_a, vae_b, alpha)
        m = evaluate_autoencoder(vae, val, torch.device("cpu"), args.tiles)
        rows.append({"alpha": alpha, **m})
        print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: r["alpha"])
    result = {
        "benchmark": "decoder_interpolation",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "host": {"platform": platform.platform(), "device": "cpu", "threads": args.threads},
        "data": str(args.data),
        "a": str(args.a),
        "b": str(args.b),
        "rows": rows,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Decoder weights mixed between two fine-tunes ({result['date']})",
        "",
        f"- command: `{result['command']}`",
        f"- A = `{args.a}`, B = `{args.b}`; decoder = (1 - alpha) A + alpha B, encoder shared",
        f"- {rows[0]['tiles']} validation tiles of `{args.data}`; CPU, {args.threads} threads",
        "",
        "| alpha | PSNR (dB) | SSIM | sharpness |",
        "|---|---|---|---|",
        *(f"| {r['alpha']} | {r['psnr_db']} | {r['ssim']} | {r['sharpness']} |" for r in rows),
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
