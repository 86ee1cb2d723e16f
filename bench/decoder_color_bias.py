"""Where an autoencoder's reconstruction error sits: a global colour cast, low frequencies, or texture.

For each autoencoder, over tiles spread evenly through the validation split: the mean RGB bias of the
reconstructions (in 0-255 units; positive = too bright), the MSE, the MSE left after removing each tile's own
mean bias, and the MSE of 8x8-block averages (the low-frequency part: colours and shading, not texture).

    python bench/decoder_color_bias.py runs/data/dubai geodiff/data/models/geodiff-default/vae \
        runs/cpu_default_decoder_wide/autoencoder/vae [--tiles 32] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geodiff.model import load_autoencoder
from geodiff.train.dataset import TileDataset
from geodiff.train.loops import reconstruct, spread_tiles


@torch.no_grad()
def error_breakdown(vae_path: Path, val: TileDataset, n_tiles: int) -> dict[str, object]:
    vae = load_autoencoder(vae_path).eval()
    idx = spread_tiles(val, n_tiles)  # the tiles evaluate_autoencoder scores
    bias, mse, mse_unbiased, mse_low = [], [], [], []
    for i in idx:
        x = val[int(i)]["image"].unsqueeze(0)
        err = (reconstruct(vae, x) - x) * 127.5
        tile_bias = err.mean(dim=(2, 3), keepdim=True)
        bias.append(tile_bias.flatten().numpy())
        mse.append(float((err**2).mean()))
        mse_unbiased.append(float(((err - tile_bias) ** 2).mean()))
        mse_low.append(float((F.avg_pool2d(err, 8) ** 2).mean()))
    b = np.array(bias)
    return {
        "tiles": len(idx),
        "mean_rgb_bias": [round(float(v), 2) for v in b.mean(0)],
        "mean_abs_rgb_bias": [round(float(v), 2) for v in np.abs(b).mean(0)],
        "mse": round(float(np.mean(mse)), 1),
        "mse_without_tile_bias": round(float(np.mean(mse_unbiased)), 1),
        "mse_low_pass_8": round(float(np.mean(mse_low)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="a dataset built by `geodiff dataset build`")
    ap.add_argument("vae", type=Path, nargs="+", help="autoencoder folders (diffusers format)")
    ap.add_argument("--tiles", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    val = TileDataset(args.data, "val", crop=None, augment=False)
    for path in args.vae:
        print(path, error_breakdown(path, val, args.tiles))


if __name__ == "__main__":
    main()
