"""Evaluation report: ``report.json``, ``summary.md`` and PNG figures (Pillow only, no matplotlib)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from geodiff.classes import CLASSES, colorize
from geodiff.io import Transaction, folder_transaction, write_png


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def sample_grid(
    masks: Sequence[np.ndarray],
    reals: Sequence[np.ndarray],
    synthetics: Sequence[np.ndarray],
    size: int = 192,
) -> np.ndarray:
    """An (H, W, 3) uint8 grid: one row per sample, columns map | real | synthetic, with a header line."""
    n = min(len(masks), len(reals), len(synthetics))
    pad, header = 4, 16
    grid = Image.new("RGB", (3 * size + 4 * pad, header + n * (size + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for j, title in enumerate(("map", "real", "synthetic")):
        draw.text((pad + j * (size + pad), 2), title, fill=(0, 0, 0), font=_font())
    for i in range(n):
        for j, arr in enumerate((colorize(masks[i]), reals[i], synthetics[i])):
            tile = Image.fromarray(np.asarray(arr, dtype=np.uint8)).resize(
                (size, size), Image.Resampling.NEAREST
            )
            grid.paste(tile, (pad + j * (size + pad), header + pad + i * (size + pad)))
    return np.asarray(grid)


def bar_chart(
    series: Mapping[str, Mapping[str, float | None]],
    title: str = "per-class IoU",
    width: int = 640,
    height: int = 320,
) -> np.ndarray:
    """Grouped horizontal-axis bar chart (values in [0, 1]) of ``{series name: {class: value}}`` as RGB uint8.

    Bars of one class sit side by side, one colour per series; ``None`` (class absent) is drawn as "n/a".
    """
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font()
    names = list(series)
    classes = list(next(iter(series.values()))) if series else []
    colours = [(52, 101, 164), (204, 102, 0), (78, 154, 6), (117, 80, 123)]
    left, right, top, bottom = 40, 10, 28, 40
    draw.text((left, 6), title, fill=(0, 0, 0), font=font)
    plot_h = height - top - bottom
    for k in range(6):  # y grid at 0, 0.2, ..., 1
        y = top + plot_h - plot_h * k / 5
        draw.line([(left, y), (width - right, y)], fill=(220, 220, 220))
        draw.text((4, y - 6), f"{k / 5:.1f}", fill=(0, 0, 0), font=font)
    group_w = (width - left - right) / max(len(classes), 1)
    bar_w = group_w * 0.8 / max(len(names), 1)
    for ci, cls in enumerate(classes):
        x0 = left + ci * group_w + group_w * 0.1
        for si, name in enumerate(names):
            v = series[name].get(cls)
            bx = x0 + si * bar_w
            if v is None or (isinstance(v, float) and math.isnan(v)):
                draw.text((bx, top + plot_h - 12), "n/a", fill=(120, 120, 120), font=font)
                continue
            v = min(max(float(v), 0.0), 1.0)
            draw.rectangle([bx, top + plot_h * (1 - v), bx + bar_w - 2, top + plot_h], fill=colours[si % 4])
        draw.text((x0, height - bottom + 4), cls[:12], fill=(0, 0, 0), font=font)
    for si, name in enumerate(names):  # legend
        lx = left + 10 + si * 150
        draw.rectangle([lx, height - 16, lx + 10, height - 6], fill=colours[si % 4])
        draw.text((lx + 14, height - 18), name, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{digits}f}"
    return str(v)


def summary_markdown(report: Mapping[str, Any]) -> str:
    """Human summary of a report dict produced by :func:`geodiff.evaluate.run.evaluate_model`."""
    lines = ["# geodiff evaluation", ""]
    meta = report.get("meta", {})
    for key in ("model", "data", "seg_net", "steps", "seed", "n_eval_tiles", "device", "date", "command"):
        if key in meta:
            lines.append(f"- {key}: `{meta[key]}`")
    fid_ = report.get("map_fidelity")
    if fid_:
        lines += [
            "",
            "## Map fidelity (segmentation net mIoU against the input map)",
            "",
            "| images | mIoU | " + " | ".join(c.name for c in CLASSES) + " |",
            "|---|---|" + "---|" * len(CLASSES),
        ]
        for name in ("real", "synthetic"):
            r = fid_.get(name)
            if r:
                per = " | ".join(_fmt(r["per_class"].get(c.name)) for c in CLASSES)
                lines.append(f"| {name} | {_fmt(r['miou'])} | {per} |")
        lines += [
            "",
            "Synthetic mIoU close to real mIoU means the images follow the map as well as real photos do.",
        ]
    dist = report.get("distance")
    if dist:
        lines += [
            "",
            "## Distribution distance (seg-feature, not Inception)",
            "",
            f"- seg-feature KID: {_fmt(dist['seg_feature_kid'], 4)} ± {_fmt(dist['seg_feature_kid_std'], 4)}",
            f"- seg-feature FID: {_fmt(dist['seg_feature_fid'], 2)} (feature dim {dist['feature_dim']}, "
            f"{dist['n_real']} real / {dist['n_synthetic']} synthetic; FID is biased at this sample size)",
        ]
        if dist.get("real_split_kid") is not None:
            lines.append(
                f"- reference: seg-feature KID between real training and held-out tiles: "
                f"{_fmt(dist['real_split_kid'], 4)}"
            )
        if dist.get("synthetic_sharpness") is not None:
            lines.append(
                "- sharpness of the synthetic tiles (high-frequency energy, synthetic / real held-out tiles; "
                f"1.0 = as sharp): {_fmt(dist['synthetic_sharpness'])}"
            )
        if dist.get("inception_fid") is not None:
            lines.append(f"- Inception FID: {_fmt(dist['inception_fid'], 2)}")
    rec = report.get("reconstruction")
    if rec:
        lines += [
            "",
            "## Autoencoder reconstruction (held-out real tiles)",
            "",
            f"- PSNR: {_fmt(rec['psnr_db'], 2)} dB, SSIM: {_fmt(rec['ssim'])} ({rec['n_images']} tiles)",
        ]
        if "sharpness" in rec:
            lines.append(
                f"- sharpness (high-frequency energy, reconstructed / real; 1.0 = as sharp): "
                f"{_fmt(rec['sharpness'])}"
            )
    seams = report.get("seams")
    if seams:
        lines += [
            "",
            "## Seams (1.0 = invisible)",
            "",
            "| mosaic | seam ratio | boundary | interior |",
            "|---|---|---|---|",
        ]
        for name in (
            "blended",
            "blended_at_tile_boundaries",
            "independent_tiles",
            "real_mosaic_at_tile_boundaries",
        ):
            s = seams.get(name)
            if s:
                lines.append(
                    f"| {name} | {_fmt(s['ratio'])} | {_fmt(s['boundary_mean'], 2)} | "
                    f"{_fmt(s['interior_mean'], 2)} |"
                )
        if seams.get("note"):
            lines += ["", seams["note"]]
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if math.isnan(f) else ("inf" if math.isinf(f) else f)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_report(
    out_dir: str | os.PathLike[str],
    report: Mapping[str, Any],
    samples: tuple[Sequence[np.ndarray], Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    tx: Transaction | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``summary.md``, ``samples.png`` and ``per_class_iou.png`` into ``out_dir``.

    ``samples`` is ``(masks, real images, synthetic images)``. The files are published together (with ``tx``:
    staged there, published with the transaction's other files).
    """
    out = Path(out_dir)
    if tx is None:
        with Transaction(overwrite=True) as own:
            return write_report(out_dir, report, samples, own)
    tx.mkdir(out)
    paths = {"json": out / "report.json", "summary": out / "summary.md"}
    with tx.stage(paths["json"]) as tmp:
        tmp.write_text(json.dumps(_jsonable(report), indent=2))
    with tx.stage(paths["summary"]) as tmp:
        tmp.write_text(summary_markdown(report))
    if samples is not None and len(samples[0]):
        paths["samples"] = write_png(out / "samples.png", sample_grid(*samples), tx=tx)
    fid_ = report.get("map_fidelity")
    if fid_:
        series = {name: fid_[name]["per_class"] for name in ("real", "synthetic") if fid_.get(name)}
        paths["iou_chart"] = write_png(out / "per_class_iou.png", bar_chart(series), tx=tx)
    return paths


REPORT_FILES = ("report.json", "summary.md", "samples.png", "per_class_iou.png", "seams_independent_tiles.png",
                "seams_blended.png", "segnet/segnet.safetensors", "segnet/segnet.json")  # fmt: skip


def _is_report(folder: Path) -> bool:
    try:
        rep = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(rep, dict) and "map_fidelity" in rep and "meta" in rep


def report_transaction(out_dir: str | os.PathLike[str], overwrite: bool) -> Transaction:
    """Check the report folder before any work (see :func:`geodiff.io.folder_transaction`): its files are
    replaced only with ``overwrite`` and only if it holds a report geodiff wrote."""
    return folder_transaction(out_dir, REPORT_FILES, overwrite, _is_report, "an evaluation report")
