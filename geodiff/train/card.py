"""Model cards: a README.md beside the weights saying what the model is, how it was made and how good it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from geodiff.classes import CLASSES

NOTES_FILE = "card_notes.md"
"""Hand-written sections (resolution measurement, timings, limitations) kept in the model folder and
included verbatim in every regenerated card."""

TRAINING_FILE = "training.json"
"""How the model was trained (steps, seconds, config, starting points), written with every card so the card can be
regenerated from the model folder alone after the training run's folder is gone."""
TRAINING_KEYS = ("step", "train_seconds", "config", "pretrained", "autoencoder", "note")


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def _describe_source(src: dict[str, Any]) -> str:
    if src.get("kind") == "mask_folder":
        return f"{src.get('images', '?')} image/colour-mask pairs of `{Path(src.get('path', '')).name}` (PROVENANCE.md)"
    if src.get("kind") == "orthophoto":
        return f"orthophoto `{Path(src.get('path', '')).name}` with a map from OSM/vector data"
    return str(src)


def read_training_record(folder: Path) -> dict[str, Any] | None:
    """The training record written with the model's card (``None`` for a folder made before it was kept)."""
    path = Path(folder) / TRAINING_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _student_rows(folder: Path) -> list[str]:
    """The card's line on the distilled fast sampler (``--quality fast``) when the folder has one."""
    from geodiff.model.folder import STUDENT_INFO

    path = folder / STUDENT_INFO
    if not path.is_file():
        return []
    s = json.loads(path.read_text())
    return [
        f"| fast sampler (`--quality fast`) | `{STUDENT_INFO.parent}/`: a {s.get('method', '?').upper()}-distilled "
        f"student U-Net, {s.get('steps', '?')} steps of one pass each, guidance {s.get('guidance_min', '?')}-"
        f"{s.get('guidance_max', '?')} folded in; distilled from `{s.get('teacher', '?')}` for "
        f"{s.get('train_steps', '?')} steps, {float(s.get('train_seconds', 0)) / 60:.0f} min |"
    ]


def write_model_card(folder: Path, model: Any, info: dict[str, Any]) -> Path:
    """Write ``folder/README.md`` from the model config, the dataset manifest and the recorded metrics, and
    ``folder/training.json`` from the training record in ``info`` (``TRAINING_KEYS``)."""
    folder = Path(folder)
    if "step" in info:  # a training run's record (a card written without one leaves the old record as it is)
        record = {k: info[k] for k in TRAINING_KEYS if k in info}
        (folder / TRAINING_FILE).write_text(json.dumps(record, indent=1) + "\n")
    cfg = model.config
    ds = info.get("dataset", {})
    ae = info.get("autoencoder_metrics", {})
    n_unet = sum(p.numel() for p in model.unet.parameters()) / 1e6
    n_vae = sum(p.numel() for p in model.vae.parameters()) / 1e6
    n_enc = sum(p.numel() for p in model.map_encoder.parameters()) / 1e6
    fractions = ds.get("class_fractions", {})
    class_rows = "\n".join(
        f"| {c.id} | {c.name} | #{c.color[0]:02X}{c.color[1]:02X}{c.color[2]:02X} | {fractions.get(c.name, '')} |"
        for c in CLASSES
    )
    notes = (folder / NOTES_FILE).read_text() if (folder / NOTES_FILE).exists() else ""
    lines = [
        "---",
        "license: mit",
        "library_name: diffusers",
        "tags: [geodiff, latent-diffusion, aerial-imagery, semantic-map-conditioning]",
        "---",
        "",
        f"# geodiff model: `{cfg.conditioning}` latent diffusion at {cfg.resolution_m:g} m/px",
        "",
        "A semantic-map-conditioned latent diffusion model: it turns a class map (background, building, road, "
        "water, vegetation) into a synthetic aerial image of the same area. Load it with "
        "`geodiff.load_model(folder)`; `geodiff synth` uses it by default.",
        "",
        "## Summary",
        "",
        "| item | value |",
        "|---|---|",
        f"| ground resolution | {cfg.resolution_m:g} m/px (maps must be rasterized at this resolution) |",
        f"| window | {cfg.tile_size} x {cfg.tile_size} px, latents {cfg.tile_size // model.latent_factor}^2 x "
        f"{model.latent_channels} (f{model.latent_factor}) |",
        f"| conditioning | `{cfg.conditioning}` (map embedding `{cfg.map_embedding}`, context pool {cfg.context_pool}) |",
        f"| autoencoder | {cfg.vae_type.upper()} {cfg.vae_block_channels}"
        + (f" (decoder {cfg.vae_decoder_channels})" if cfg.vae_decoder_channels else "")
        + f", {n_vae:.2f} M params |",
        f"| U-Net | {cfg.unet_block_channels}, {n_unet:.2f} M params; map encoder {n_enc:.3f} M |",
        *(
            [
                f"| started from | `{info['pretrained']}` (U-Net and map encoder trained on; "
                + (
                    f"autoencoder `{info['autoencoder']}`, the model's own grown by detail channels) |"
                    if info.get("autoencoder")
                    else "autoencoder as it was) |"
                )
            ]
            if info.get("pretrained")
            else []
        ),
        f"| noise schedule | {cfg.num_train_timesteps} steps, {cfg.beta_schedule} betas "
        f"{cfg.beta_start}-{cfg.beta_end}, {cfg.prediction_type}; sampler DPM-Solver++ 2M, 20 steps |",
        f"| classifier-free guidance | default scale {cfg.guidance_scale:g}"
        + (" (trained with map dropout)" if cfg.guidance_scale > 1 else " (off)")
        + " |",
        *_student_rows(folder),
        f"| training steps | {info.get('step', '?')} diffusion steps, {info.get('train_seconds', 0) / 60:.0f} "
        f"{'CPU ' if info.get('config', {}).get('run', {}).get('budget_clock') == 'cpu' else ''}min |",
        (
            f"| autoencoder PSNR / SSIM / sharpness (val) | {ae.get('psnr_db', '?')} dB / {ae.get('ssim', '?')} / "
            f"{ae.get('sharpness', '?')} on {ae.get('tiles', '?')} held-out tiles |"
            if ae or not info.get("pretrained")
            else f"| autoencoder PSNR / SSIM / sharpness (val) | unchanged: see the card of `{info['pretrained']}` |"
        ),
        f"| size on disk | {_size_mb(folder):.1f} MB ({cfg.storage_dtype} safetensors, shards <= 15 MB) |",
        "",
        "## Training data",
        "",
        f"Source: {_describe_source(ds.get('source', {}))}. {ds.get('num_train', '?')} training and "
        f"{ds.get('num_val', '?')} "
        f"validation tiles of {ds.get('tile_size', '?')} px; the validation split is whole source images: "
        f"{', '.join(ds.get('val_sources', []))}.",
        "",
        "| id | class | preview colour | pixel fraction in the data |",
        "|---|---|---|---|",
        class_rows,
        "",
        "## Licence",
        "",
        'Code and weights: MIT (as geodiff). Training data: "Semantic segmentation of aerial imagery" by Humans in '
        "the Loop with the Mohammed Bin Rashid Space Centre, Dubai, published as CC0 1.0 (public domain); "
        "please cite the authors.",
        "",
    ]
    measured = folder / "metrics.json"
    if measured.exists():
        m = json.loads(measured.read_text())
        lines += ["## Measured on the shipped weights", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in m.items() if k != "command"]
        if "command" in m:
            lines += ["", f"Measured with `{m['command']}`."]
        lines += [""]
    if notes:
        lines += [notes.rstrip(), ""]
    if (folder / "samples.png").exists():
        lines += [
            "## Samples",
            "",
            "Rows: map, real validation image, synthetic (20 DPM-Solver++ steps).",
            "",
            "![map / real / synthetic](samples.png)",
            "",
        ]
    lines += ["## Training config", "", "```json", json.dumps(info.get("config", {}), indent=1), "```", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path


def sample_grid(
    model: Any, images: np.ndarray, masks: np.ndarray, steps: int = 20, seed: int = 0
) -> np.ndarray:
    """An RGB grid: row 1 the maps, row 2 the real images, row 3 synthetic images for the same maps."""
    import torch

    from geodiff.classes import colorize
    from geodiff.pipeline import GeodiffPipeline

    pipe = GeodiffPipeline(model, model.make_scheduler("dpm"))
    maps = masks.copy()
    maps[maps == 255] = 0
    gen = torch.Generator().manual_seed(seed)
    synth = pipe(torch.from_numpy(maps.astype(np.int64)), num_inference_steps=steps, generator=gen).images
    rows = [
        np.concatenate(list(colorize(masks)), axis=1),
        np.concatenate(list(images), axis=1),
        np.concatenate(list(synth), axis=1),
    ]
    return np.concatenate(rows, axis=0)
