"""The last step of a recipe (``geodiff model finalize``): swap in a decoder, set the default guidance, measure the
model and write its card.

:func:`finalize_model` measures a saved model: autoencoder PSNR/SSIM/sharpness on the validation split, CPU
seconds per 256 px tile at 20 DPM-Solver++ steps (with the model's guidance), and a map / real / synthetic grid
(``samples.png``); it records them in ``metrics.json`` and rewrites ``README.md`` from them, the hand-written
``card_notes.md`` and the training record (``training.json``, or the diffusion run's folder). With
``card_only`` it measures nothing and rewrites ``README.md`` from the figures already recorded, after
``card_notes.md`` was edited.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geodiff.errors import ConfigError, InputNotFoundError, InvalidParameterError, ModelError
from geodiff.model import GeodiffModel, ModelConfig, load_autoencoder
from geodiff.train.card import TRAINING_FILE, read_training_record, sample_grid, write_model_card
from geodiff.train.dataset import TileDataset

# metrics.json's names for the autoencoder figures (evaluate_autoencoder's keys); card_only reads them back
AE_METRIC_NAMES = {
    "psnr_db": "autoencoder PSNR (val, dB)",
    "ssim": "autoencoder SSIM (val)",
    "sharpness": "autoencoder sharpness (val; 1.0 = as sharp as the real tiles)",
    "tiles": "validation tiles",
}


def swap_autoencoder(model_dir: str | Path, vae_dir: str | Path) -> None:
    """Replace the autoencoder of the model folder ``model_dir`` by ``vae_dir``: a decoder-only fine-tune (or a
    decoder mix) of the model's own, with the same latent scale and channels."""
    model = GeodiffModel.from_pretrained(model_dir)
    vae = load_autoencoder(vae_dir)
    if (vae.config.scaling_factor, vae.config.latent_channels) != (
        model.vae.config.scaling_factor,
        model.vae.config.latent_channels,
    ):
        raise ModelError(
            f"{vae_dir} has another latent scale or channel count: only a decoder-only fine-tune may be swapped in"
        )
    model.set_autoencoder(vae)
    model.save_pretrained(model_dir)


def set_guidance_scale(model_dir: str | Path, scale: float) -> None:
    """Make ``scale`` the model's default classifier-free guidance (its ``config.json``, validated)."""
    path = Path(model_dir) / "config.json"
    cfg = ModelConfig.load(path).to_dict()
    ModelConfig.from_dict({**cfg, "guidance_scale": scale}, where=str(path)).save(path)  # the config's checks


def recorded_autoencoder_metrics(model_dir: str | Path) -> dict[str, Any]:
    """The autoencoder figures of an earlier full finalize, from the model's metrics.json."""
    path = Path(model_dir) / "metrics.json"
    if not path.exists():
        raise InputNotFoundError(
            f"{path} does not exist: run without --card-only first, which measures the model"
        )
    recorded = json.loads(path.read_text())
    return {key: recorded[name] for key, name in AE_METRIC_NAMES.items()}


def training_record(model_dir: str | Path, run_dir: str | Path | None) -> dict[str, Any]:
    """Steps, time, config and starting points of the training run: from the run's time.json and checkpoint,
    or without ``run_dir`` from the model's training.json."""
    from geodiff.train.loops import DIFF_DIR, load_checkpoint

    if run_dir is None:
        recorded = read_training_record(Path(model_dir))
        if not recorded or "step" not in recorded:
            raise InputNotFoundError(
                f"{Path(model_dir) / TRAINING_FILE} is missing: pass the model's diffusion training run as --run-dir"
            )
        return recorded
    times = Path(run_dir) / DIFF_DIR / "time.json"
    ckpt = Path(run_dir) / DIFF_DIR / "checkpoint.pt"
    if not (times.exists() and ckpt.exists()):  # the card's training rows and config come from there
        raise InputNotFoundError(f"{times} or {ckpt} is missing: pass the model's training run as --run-dir")
    t = json.loads(times.read_text())
    state = load_checkpoint(ckpt, torch.device("cpu"))
    # a run that trained on from another model (and autoencoder) says so in the card
    return {
        "step": t["step"],
        "train_seconds": t["seconds"],
        "config": state["config"],
        "pretrained": state.get("pretrained", ""),
        "autoencoder": state.get("autoencoder", ""),
    }


def write_card(
    folder: Path, model: GeodiffModel, run: dict[str, Any], ae: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """README.md from the model, the training ``run``'s record, the autoencoder figures ``ae`` and the dataset's
    ``manifest``."""
    write_model_card(folder, model, {"dataset": manifest, **run, "autoencoder_metrics": ae})


def _time_fast_sampler(model_dir: Path, cmap: torch.Tensor) -> tuple[int, float] | None:
    """(steps, best seconds of two) of the folder's distilled student on one window; None without one."""
    from geodiff.model.student import has_student
    from geodiff.pipeline import GeodiffPipeline

    if not has_student(model_dir):
        return None
    fast = GeodiffModel.from_pretrained(model_dir, quality="fast")
    return fast.default_steps, _seconds_per_tile(GeodiffPipeline(fast), cmap, fast.default_steps, warmup=1)


def _seconds_per_tile(pipe: Any, cmap: torch.Tensor, steps: int, warmup: int) -> float:
    """Best of two timed syntheses of one window at ``steps`` (after one of ``warmup`` steps), rounded."""
    pipe(cmap, num_inference_steps=warmup)
    times = []
    for seed in range(2):
        t0 = time.perf_counter()
        pipe(cmap, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - t0)
    return round(min(times), 2)


def finalize_command(
    model_dir: Path, data: Path, threads: int, guidance_scale: float | None, vae: Path | None
) -> str:
    """The command line recorded in metrics.json."""
    return (
        f"geodiff model finalize {model_dir} {data} --threads {threads}"
        + (f" --guidance-scale {guidance_scale:g}" if guidance_scale is not None else "")
        + (f" --vae {vae}" if vae is not None else "")
    )


def finalize_model(
    model_dir: str | Path,
    data: str | Path,
    *,
    vae: str | Path | None = None,
    guidance_scale: float | None = None,
    card_only: bool = False,
    run_dir: str | Path | None = None,
    threads: int = 2,
    tiles: int = 4,
    eval_tiles: int = 145,
) -> dict[str, Any]:
    """Finalize the model folder ``model_dir`` against the dataset ``data`` (its validation split); returns the
    metrics recorded in ``metrics.json`` (with ``card_only``: those already there, unchanged).

    In order: swap in the autoencoder ``vae`` (:func:`swap_autoencoder`), set the default ``guidance_scale``
    (:func:`set_guidance_scale`), measure, write ``samples.png``, ``metrics.json`` and the card.
    """
    from geodiff.pipeline import GeodiffPipeline
    from geodiff.train.loops import evaluate_autoencoder

    model_dir, data = Path(model_dir), Path(data)
    if card_only and (vae is not None or guidance_scale is not None):
        raise InvalidParameterError(
            "--card-only changes nothing in the model: drop --vae and --guidance-scale"
        )
    if tiles < 1 or eval_tiles < 1:
        raise ConfigError("--tiles and --eval-tiles must be at least 1")
    torch.set_num_threads(threads)
    recorded = recorded_autoencoder_metrics(model_dir) if card_only else None
    run = training_record(model_dir, run_dir)  # before anything changes: no card without it
    if recorded is not None:
        val = TileDataset(data, "val", crop=None, augment=False)
        write_card(model_dir, GeodiffModel.from_pretrained(model_dir), run, recorded, val.manifest)
        return json.loads((model_dir / "metrics.json").read_text())
    if vae is not None:
        swap_autoencoder(model_dir, vae)
    if guidance_scale is not None:
        set_guidance_scale(model_dir, guidance_scale)
    model = GeodiffModel.from_pretrained(model_dir)
    val = TileDataset(data, "val", crop=None, augment=False)
    ae = evaluate_autoencoder(model.vae, val, torch.device("cpu"), eval_tiles)

    cmap = torch.from_numpy(val.masks[0].astype(np.int64))
    cmap[cmap == 255] = 0
    full_seconds = _seconds_per_tile(GeodiffPipeline(model, model.make_scheduler("dpm")), cmap, 20, warmup=2)
    fast_seconds = _time_fast_sampler(model_dir, cmap)

    from PIL import Image

    idx = np.linspace(0, len(val) - 1, tiles).round().astype(int)
    grid = sample_grid(model, val.images[idx], val.masks[idx], steps=20)
    Image.fromarray(grid).save(model_dir / "samples.png", optimize=True)

    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file() and p.name != "samples.png")
    metrics = {
        **{AE_METRIC_NAMES[k]: ae[k] for k in ("psnr_db", "ssim", "sharpness")},
        "default guidance scale": model.config.guidance_scale,
        AE_METRIC_NAMES["tiles"]: ae["tiles"],
        f"CPU seconds per 256 px tile, 20 steps, {threads} threads"
        + (" (guided: two U-Net passes per step)" if model.config.guidance_scale > 1 else ""): full_seconds,
        **(
            {
                f"CPU seconds per 256 px tile, --quality fast: {fast_seconds[0]} student steps, one U-Net pass "
                f"each, {threads} threads": fast_seconds[1]
            }
            if fast_seconds
            else {}
        ),
        "weights on disk (MB)": round(size / 1e6, 1),
        "command": finalize_command(
            model_dir, data, threads, guidance_scale, None if vae is None else Path(vae)
        ),
    }
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_card(model_dir, model, run, ae, val.manifest)
    return metrics
