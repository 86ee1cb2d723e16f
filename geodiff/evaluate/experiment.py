"""The augmentation experiment: does adding synthetic pairs help a segmentation net trained on little real data?

Protocol (one call of :func:`augmentation_experiment`):

1. split the real dataset into train / held-out (:func:`geodiff.evaluate.data.load_splits`);
2. from the training split (shuffled with ``split_seed``) take ``n_real`` tiles as the small real subset, and the
   masks of the next ``n_synthetic`` *other* tiles (their real images are never used);
3. synthesize one image per such mask with the model;
4. for each training seed, train the same segmentation net for the same number of steps on (a) the real subset
   and (b) the real subset + synthetic pairs, every tile equally likely (``real+synthetic``), optionally (c) the
   same union with a set share of synthetic tiles in the batches (``real+synthetic@F``: on average a fraction F
   of every batch is synthetic, the rest real) and (d) the synthetic pairs alone;
5. report mIoU and per-class IoU on the held-out real tiles, mean and standard deviation over seeds, and each
   arm's change against the real-only arm, paired by seed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geodiff.classes import CLASS_NAMES
from geodiff.errors import InvalidParameterError
from geodiff.evaluate.data import Pairs, load_splits
from geodiff.evaluate.segmentation import SegNetConfig, iou_scores, predict, train_segnet
from geodiff.progress import ProgressCallback, report, scaled


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """mIoU mean, standard deviation and runs, and per-class IoU mean and deviation, of seg-net runs (dicts with
    ``miou`` and ``per_class``)."""
    mious = np.array([r["miou"] for r in runs])
    per: dict[str, Any] = {}
    for name in CLASS_NAMES:
        vals = [r["per_class"][name] for r in runs if r["per_class"].get(name) is not None]
        per[name] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))} if vals else None
    return {
        "miou_mean": float(mious.mean()),
        "miou_std": float(mious.std(ddof=1)) if len(mious) > 1 else 0.0,
        "miou_runs": mious.tolist(),
        "per_class": per,
    }


def _paired_change(base: list[dict[str, Any]], arm: list[dict[str, Any]]) -> dict[str, Any]:
    diffs = [b["miou"] - a["miou"] for a, b in zip(base, arm, strict=True)]
    return {
        "runs": diffs,
        "mean": float(np.mean(diffs)),
        "std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0,
    }


def augmentation_experiment(
    data: str | os.PathLike[str],
    model: Any,
    n_real: int = 32,
    n_synthetic: int = 64,
    seeds: Sequence[int] = (0, 1, 2),
    segnet_steps: int = 300,
    segnet_base: int = 12,
    crop: int = 96,
    batch_size: int = 8,
    steps: int = 20,
    guidance_scale: float | None = None,
    eval_limit: int | None = None,
    split_seed: int = 0,
    synth_seed: int = 0,
    synthetic_only: bool = False,
    synthetic_fractions: Sequence[float] = (),
    colors: str | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run the experiment and return a JSON-serialisable result dict (see the module docstring).

    ``model`` is a :class:`~geodiff.model.GeodiffModel` or a model folder; the same seg-net hyper-parameters
    (``segnet_steps``, ``segnet_base``, ``crop``, ``batch_size``) are used for every arm. Each value F of
    ``synthetic_fractions`` (0 < F < 1) adds the arm ``real+synthetic@F``.
    """
    from geodiff.evaluate.run import load_model, synthesize_tiles
    from geodiff.models import resolve_device

    t0 = time.monotonic()
    if len(seeds) < 1:
        raise InvalidParameterError("need at least one training seed")
    bad = [f for f in synthetic_fractions if not 0.0 < f < 1.0]
    if bad:
        raise InvalidParameterError(f"synthetic fractions must lie strictly between 0 and 1 (got {bad})")
    model_obj = model if not isinstance(model, (str, os.PathLike)) else load_model(model, device)
    tile = int(model_obj.config.tile_size)
    splits = load_splits(data, tile=tile, colors=colors)
    train, test = splits["train"], splits["test"]
    if n_real + n_synthetic > len(train):
        raise InvalidParameterError(
            f"n_real + n_synthetic = {n_real + n_synthetic} exceeds the {len(train)} training tiles: lower them"
        )
    order = np.random.default_rng(split_seed).permutation(len(train))
    real = train.subset(order[:n_real])
    donors = train.subset(order[n_real : n_real + n_synthetic])
    held = test if eval_limit is None else test.subset(range(min(eval_limit, len(test))))

    t_syn = time.monotonic()
    synth_images = synthesize_tiles(
        donors.masks,
        model_obj,
        seed=synth_seed,
        steps=steps,
        device=device,
        guidance_scale=guidance_scale,
        progress=scaled(progress, 0.0, 0.3),
    )
    synth_seconds = time.monotonic() - t_syn
    synthetic = Pairs(synth_images, donors.masks, [f"synthetic:{n}" for n in donors.names])

    union = Pairs.concat(real, synthetic)
    # arm -> (pairs, per-tile sampling weights or None for uniform)
    arms: dict[str, tuple[Pairs, np.ndarray | None]] = {"real": (real, None), "real+synthetic": (union, None)}
    for f in synthetic_fractions:
        weights = np.concatenate(
            [np.full(len(real), (1 - f) / len(real)), np.full(len(synthetic), f / len(synthetic))]
        )
        arms[f"real+synthetic@{f:g}"] = (union, weights)
    if synthetic_only:
        arms["synthetic"] = (synthetic, None)
    dev = torch.device(resolve_device(device))
    cfg = SegNetConfig(base_channels=segnet_base)
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
    n_runs, done = len(arms) * len(seeds), 0
    for s in seeds:
        for arm, (pairs, weights) in arms.items():
            net, rec = train_segnet(
                pairs.images,
                pairs.masks,
                config=cfg,
                steps=segnet_steps,
                batch_size=batch_size,
                crop=crop,
                seed=s,
                device=dev,
                sample_weights=weights,
            )
            scores = iou_scores(predict(net, held.images), held.masks)
            results[arm].append(
                {"seed": s, "train_seconds": round(rec.seconds, 1), "final_loss": rec.final_loss, **scores}
            )
            done += 1
            report(progress, 0.3 + 0.7 * done / n_runs, f"{arm} seed {s}: mIoU {scores['miou']:.3f}")
    return {
        "experiment": "augmentation",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "host": {
            "platform": platform.platform(),
            "device": str(dev),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "data": str(data),
        "model": model_obj.name_or_path or "in-memory",
        "setup": {
            "n_real": n_real,
            "n_synthetic": n_synthetic,
            "n_heldout": len(held),
            "n_train_split": len(train),
            "seeds": list(seeds),
            "segnet_steps": segnet_steps,
            "segnet_base_channels": segnet_base,
            "crop": crop,
            "batch_size": batch_size,
            "diffusion_steps": steps,
            "guidance_scale": model_obj.config.guidance(guidance_scale),
            "split_seed": split_seed,
            "synth_seed": synth_seed,
            "synthetic_fractions": list(synthetic_fractions),
        },
        **_tabulate(results),
        "seconds": {"synthesis": round(synth_seconds, 1), "total": round(time.monotonic() - t0, 1)},
    }


def _tabulate(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per-arm summaries and the changes against the real-only arm, paired by seed."""
    summary = {arm: summarise_runs(runs) for arm, runs in results.items()}
    gains = {arm: _paired_change(results["real"], runs) for arm, runs in results.items() if arm != "real"}
    return {
        "summary": summary,
        "miou_gain_mean": summary["real+synthetic"]["miou_mean"] - summary["real"]["miou_mean"],
        "miou_gain_paired": gains["real+synthetic"],
        "miou_change_paired": gains,
        "runs": results,
    }


def merge_results(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from runs of the same protocol with different seeds (e.g. run in parallel on several
    machines): the same data, model, device type, setup and arms are required, seeds must not repeat."""
    if len(parts) < 2:
        raise InvalidParameterError("merging needs at least two results")
    for res in parts:
        if not isinstance(res, dict) or res.get("experiment") != "augmentation" or "runs" not in res:
            raise InvalidParameterError(
                "not an augmentation experiment result (bench/augmentation_experiment.py)"
            )
    first = parts[0]

    def protocol(res: dict[str, Any]) -> dict[str, Any]:
        # the synthetic pairs depend on the device type too (CPU and CUDA sample different pixels)
        return {
            "data": res["data"],
            "model": res["model"],
            "device type": str(res["host"]["device"]).split(":")[0],
            "arms": list(res["runs"]),
            **{f"setup.{k}": v for k, v in res["setup"].items() if k != "seeds"},
        }

    want = protocol(first)
    for res in parts[1:]:
        got = protocol(res)
        if got != want:
            diff = ", ".join(
                f"{k} {want.get(k)!r} vs {got.get(k)!r}" for k in {**want, **got} if want.get(k) != got.get(k)
            )
            raise InvalidParameterError(
                f"results from {first.get('command')!r} and {res.get('command')!r} differ ({diff}): only runs "
                "of one protocol that differ in --seeds can be merged; rerun with the same options"
            )
    seeds = [s for res in parts for s in res["setup"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise InvalidParameterError(f"seeds repeat across the results ({seeds}): each seed counts once")
    results = {arm: [run for res in parts for run in res["runs"][arm]] for arm in first["runs"]}
    notes = list(dict.fromkeys(res["note"] for res in parts if res.get("note")))  # one note once
    commands = [c for res in parts for c in res.get("merged_from") or [res["command"]]]
    return {
        **{k: v for k, v in first.items() if k not in ("note", "seconds", "seconds_of_runs")},
        "date": max(res["date"] for res in parts),
        "command": " && ".join(commands),
        "merged_from": commands,
        "hosts": [h for res in parts for h in res.get("hosts") or [res["host"]]],
        **({"note": "; ".join(notes)} if notes else {}),
        "setup": {**first["setup"], "seeds": seeds},
        **_tabulate(results),
        # per merged run: they may have run at the same time, so the sum is no wall time
        "seconds_of_runs": [sec for res in parts for sec in res.get("seconds_of_runs") or [res["seconds"]]],
    }


def results_markdown(res: dict[str, Any]) -> str:
    """A short markdown table of an :func:`augmentation_experiment` result."""
    s = res["setup"]
    lines = [
        f"# Augmentation experiment ({res['date']})",
        "",
        f"- data: `{res['data']}`; model: `{res['model']}`; device: {res['host']['device']}",
        f"- real subset {s['n_real']} tiles, + {s['n_synthetic']} synthetic pairs (masks of other training tiles), "
        f"held-out {s['n_heldout']} real tiles; seeds {s['seeds']}; seg net {s['segnet_steps']} steps, "
        f"base {s['segnet_base_channels']}, crop {s['crop']}; {s['diffusion_steps']} diffusion steps, "
        f"guidance {s.get('guidance_scale', 1.0):g}",
        *(
            [f"- command: `{res['command']}`"]
            if "merged_from" not in res
            else ["- merged from the runs of:", *(f"  - `{c}`" for c in res["merged_from"])]
        ),
        *([f"- note: {res['note']}"] if res.get("note") else []),
        "",
        "| training data | mIoU mean ± std | " + " | ".join(CLASS_NAMES) + " |",
        "|---|---|" + "---|" * len(CLASS_NAMES),
    ]
    for arm, sm in res["summary"].items():
        per = " | ".join(
            "n/a" if sm["per_class"][c] is None else f"{sm['per_class'][c]['mean']:.3f}" for c in CLASS_NAMES
        )
        lines.append(f"| {arm} | {sm['miou_mean']:.3f} ± {sm['miou_std']:.3f} | {per} |")
    lines += ["", "mIoU change against the real-only arm (paired by seed):", ""]
    changes = res.get("miou_change_paired") or {"real+synthetic": res["miou_gain_paired"]}
    for arm, g in changes.items():
        lines.append(
            f"- {arm}: {g['mean']:+.3f} ± {g['std']:.3f} (runs: {', '.join(f'{v:+.3f}' for v in g['runs'])})"
        )
    if any("@" in arm for arm in changes):
        lines += ["", "`@F`: on average a fraction F of every training batch is synthetic, the rest real."]
    lines.append("")
    return "\n".join(lines)


def write_results(res: dict[str, Any], out_base: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<out_base>.json`` and ``<out_base>.md`` atomically."""
    from geodiff.evaluate.report import _jsonable
    from geodiff.io import atomic_path

    base = Path(out_base)
    paths = Path(f"{base}.json"), Path(f"{base}.md")
    with atomic_path(paths[0], overwrite=True) as tmp:
        tmp.write_text(json.dumps(_jsonable(res), indent=2))
    with atomic_path(paths[1], overwrite=True) as tmp:
        tmp.write_text(results_markdown(res))
    return paths
