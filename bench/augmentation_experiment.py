#!/usr/bin/env python
"""Augmentation experiment: seg net trained on a small real subset vs that subset + synthetic pairs.

Reproduce (CPU, small scale, as recorded in bench/results/augmentation_cpu.*)::

    python bench/augmentation_experiment.py --data DATASET --model geodiff/data/models/geodiff-default \
        --n-real 32 --n-synthetic 64 --seeds 0,1,2 --out bench/results/augmentation_cpu

DATASET is a `geodiff dataset` folder or images/ + masks/ folders (see geodiff.evaluate.data).
Use --tiny-model to check the plumbing with a tiny randomly initialised model (results meaningless).
The protocol is documented in geodiff/evaluate/experiment.py.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def tiny_model():  # noqa: ANN201 - a test helper, not API
    """A tiny randomly initialised model (256 px tiles) built through the model API, for plumbing checks."""
    import torch

    from geodiff.model import GeodiffModel, ModelConfig

    cfg = ModelConfig(
        tile_size=256, vae_block_channels=[8, 8, 8], vae_norm_groups=4, latent_channels=4,
        unet_block_channels=[16, 16], unet_attention_levels=[False, True], unet_norm_groups=4,
        attention_head_dim=8, map_encoder_channels=[8, 8], map_cond_channels=4, context_dim=16,
        storage_dtype="float32",
    )  # fmt: skip
    torch.manual_seed(0)
    return GeodiffModel(cfg).eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="real (image, mask) dataset")
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the default model)")
    p.add_argument("--tiny-model", action="store_true", help="use a tiny random model (plumbing check only)")
    p.add_argument("--n-real", type=int, default=32)
    p.add_argument("--n-synthetic", type=int, default=64)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--segnet-steps", type=int, default=300)
    p.add_argument("--segnet-base", type=int, default=12)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--steps", type=int, default=20, help="diffusion sampling steps")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: the model's")
    p.add_argument("--eval-limit", type=int, default=None, help="at most this many held-out tiles")
    p.add_argument("--synthetic-only", action="store_true", help="also train on synthetic pairs alone")
    p.add_argument(
        "--synthetic-fractions",
        default="",
        help="comma-separated shares F of synthetic tiles per batch; each adds the arm real+synthetic@F",
    )
    p.add_argument("--mask-colors", default=None, help="colour table of RGB colour masks, e.g. dubai_aerial")
    p.add_argument(
        "--note", default=None, help="free text recorded with the results (e.g. model training state)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "augmentation_cpu",
        help="results base path (.json and .md are written)",
    )
    args = p.parse_args(argv)

    import torch

    from geodiff.evaluate.experiment import augmentation_experiment, results_markdown, write_results
    from geodiff.progress import TqdmProgress

    if args.threads:
        torch.set_num_threads(args.threads)
    from geodiff.models import resolve_model

    ref = None if args.tiny_model else resolve_model(args.model)
    model = tiny_model() if ref is None else ref.load(args.device)
    progress = TqdmProgress("augmentation experiment")
    res = augmentation_experiment(
        args.data, model, n_real=args.n_real, n_synthetic=args.n_synthetic,
        seeds=[int(s) for s in args.seeds.split(",")], segnet_steps=args.segnet_steps,
        segnet_base=args.segnet_base, crop=args.crop, steps=args.steps, guidance_scale=args.guidance_scale,
        eval_limit=args.eval_limit,
        synthetic_only=args.synthetic_only,
        synthetic_fractions=[float(f) for f in args.synthetic_fractions.split(",") if f.strip()], colors=args.mask_colors, device=args.device, progress=progress,
    )  # fmt: skip
    progress.close()
    res["command"] = " ".join(
        shlex.quote(a) for a in ["python", "bench/augmentation_experiment.py", *(argv or sys.argv[1:])]
    )
    if args.note:
        res["note"] = args.note
    if args.tiny_model:
        res["model"] = "tiny random model (plumbing check; results meaningless)"
    paths = write_results(res, args.out)
    print(results_markdown(res))
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
