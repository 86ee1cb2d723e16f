"""Paired synthetic datasets for segmentation training: synthetic image + semantic mask tiles.

Windows come from a list of bboxes (:func:`read_windows`: a text file with one ``W,S,E,N`` per line, or a GeoJSON
of polygons whose bounds are used) or are drawn at random inside one area (:func:`random_windows`). Each window is
rasterized from its map source and synthesized ``seeds_per_window`` times.

Output layout (what torchgeo's raster datasets and segmentation_models_pytorch-style folder loaders expect)::

    OUT/images/<id>.tif|png   RGB, uint8 (GeoTIFFs are georeferenced and carry provenance tags)
    OUT/masks/<id>.tif|png    single band class ids 0..4 (names in manifest.json), same size and grid
    OUT/manifest.json         dataset description, class table, one record per sample
    OUT/manifest.csv          the same records as a table

Nothing half-written: everything goes to a hidden temporary folder beside ``OUT`` that is renamed to ``OUT`` only
after the manifest is complete; an error or interrupt removes the temporary folder.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geodiff._version import __version__
from geodiff.classes import CLASSES, IGNORE, NUM_CLASSES
from geodiff.errors import (
    CorruptFileError,
    InputNotFoundError,
    InvalidBBoxError,
    InvalidParameterError,
    OutputError,
)
from geodiff.grid import BBox, Grid, parse_bbox
from geodiff.options import ClusterOptions, Sampler, SamplingOptions, SourceOptions, options_from
from geodiff.progress import ProgressCallback, report
from geodiff.provenance import ATTRIBUTION, run_tags
from geodiff.synth import SynthPlan

FORMATS = ("tif", "png")


@dataclass
class Window:
    """One sample location: a grid and its class map (already rasterized)."""

    index: int
    grid: Grid
    class_map: np.ndarray


@dataclass
class AugmentResult:
    out_dir: Path
    n_samples: int
    manifest_json: Path
    manifest_csv: Path
    seconds: float


def read_windows(path: str | os.PathLike[str], crs: str | None = None) -> list[BBox]:
    """Bboxes from a text file (one ``W,S,E,N`` per line; ``#`` comments and blank lines skipped) or a GeoJSON.

    GeoJSON features contribute the bounds of their geometry (RFC 7946: lon/lat). ``crs`` applies to text files.
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"windows file {p} does not exist")
    if p.suffix.lower() in (".geojson", ".json"):
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{p} is not valid GeoJSON: {exc}") from exc
        import shapely.geometry

        feats = (
            data.get("features", [data] if data.get("type") == "Feature" else [])
            if isinstance(data, dict)
            else None
        )
        if not isinstance(feats, list) or not all(isinstance(f, dict) for f in feats):
            raise CorruptFileError(
                f"{p} is JSON but not GeoJSON: expected a FeatureCollection or a Feature (an object with "
                f'"features" or "geometry"), found a {type(data).__name__}; or list bboxes in a text file, '
                "one W,S,E,N per line"
            )
        out = []
        for i, f in enumerate(feats):
            if not f.get("geometry"):
                continue
            try:
                geom = shapely.geometry.shape(f["geometry"])
            except (ValueError, TypeError, AttributeError) as exc:
                raise CorruptFileError(f"{p}: feature {i} has an invalid geometry: {exc}") from exc
            out.append(parse_bbox(geom.bounds))
    else:
        out = []
        try:
            text = p.read_text()
        except UnicodeDecodeError as exc:
            raise CorruptFileError(f"{p} is not a text file of W,S,E,N lines: {exc}") from exc
        for n, line in enumerate(text.splitlines(), start=1):
            text = line.split("#")[0].strip()
            if text:
                try:
                    out.append(parse_bbox(text, crs))
                except (InvalidBBoxError, InvalidParameterError) as exc:
                    raise type(exc)(f"{p} line {n}: {exc}") from exc
    if not out:
        raise InvalidParameterError(f"{p} holds no bboxes: write one W,S,E,N per line or GeoJSON polygons")
    return out


def random_windows(
    area_map: np.ndarray, area_grid: Grid, n: int, tile: int, seed: int = 0, min_labeled: float = 0.0
) -> list[Window]:
    """``n`` random ``tile`` x ``tile`` windows inside a rasterized area (pixel-aligned with its grid).

    Windows whose fraction of non-background pixels is below ``min_labeled`` are redrawn (up to 20 n tries).
    """
    h, w = area_map.shape
    if h < tile or w < tile:
        raise InvalidParameterError(
            f"the area is {w}x{h} px, smaller than one {tile} px window: choose a larger area"
        )
    rng = np.random.default_rng(seed)
    out: list[Window] = []
    for _ in range(20 * n):
        r, c = int(rng.integers(0, h - tile + 1)), int(rng.integers(0, w - tile + 1))
        crop = area_map[r : r + tile, c : c + tile]
        if (crop != 0).mean() < min_labeled:
            continue
        out.append(Window(len(out), area_grid.window(r, c, tile, tile), crop.copy()))
        if len(out) == n:
            return out
    raise InvalidParameterError(
        f"found only {len(out)} of {n} windows with >= {min_labeled:.0%} mapped pixels: lower --min-labeled"
    )


def _sample_id(window: int, seed: int) -> str:
    return f"w{window:05d}_s{seed:04d}"


def _write_sample(
    root: Path,
    sid: str,
    rgb: np.ndarray,
    class_map: np.ndarray,
    grid: Grid,
    fmt: str,
    tags: dict[str, str],
    prefix: str = "",
) -> tuple[str, str]:
    from geodiff.io import write_class_map, write_png, write_rgb

    image_rel, mask_rel = f"{prefix}images/{sid}.{fmt}", f"{prefix}masks/{sid}.{fmt}"
    if fmt == "tif":
        # no style sidecars: loaders glob images/ and masks/, which must hold nothing but the pairs
        write_rgb(root / image_rel, rgb, grid, tags, style=False)
        write_class_map(root / mask_rel, class_map, grid, tags, style=False)
    else:
        from PIL import Image

        from geodiff.io import atomic_path

        write_png(root / image_rel, rgb)
        with atomic_path(root / mask_rel) as tmp:  # single-channel ids, not colours: what loaders expect
            Image.fromarray(class_map.astype(np.uint8), mode="L").save(tmp, format="PNG")
    return image_rel, mask_rel


MANIFEST_FORMAT = "geodiff-paired-dataset-1"


def _is_geodiff_dataset(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT else None


def check_dataset_output(out: Path, overwrite: bool) -> None:
    """Refuse an output folder geodiff must not touch, before any work starts.

    A new folder is fine; an existing one only with ``overwrite`` and only if it is empty or a dataset geodiff
    wrote (its manifest says so): then only the files of the old manifest are replaced, nothing else.
    """
    from geodiff.io import check_name_length

    check_name_length(out)  # the staging folder beside it has a longer name
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"{out} exists and is not a folder: choose a folder name for --out")
    if not out.parent.is_dir():
        raise InvalidParameterError(f"output folder {out.parent} does not exist: create it first")
    if out.exists() and any(out.iterdir()):  # an empty folder holds nothing to lose
        if not overwrite:
            raise InvalidParameterError(
                f"{out} already exists: pass --overwrite to replace it, or choose another name"
            )
        if _is_geodiff_dataset(out) is None:
            raise InvalidParameterError(
                f"{out} is not empty and not a dataset written by geodiff augment (no geodiff manifest.json): "
                "geodiff will not replace it; choose a new folder"
            )


def _finalise(tmp: Path, out: Path, overwrite: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        try:
            os.rename(tmp, out)  # atomic; replaces an empty folder, fails on one that filled up meanwhile
        except OSError as exc:
            raise OutputError(
                f"{out} appeared while geodiff was running: it was kept and this run discarded; choose another name"
            ) from exc
        return
    check_dataset_output(out, overwrite)
    from geodiff.io import Transaction

    listed = _listed_files(_is_geodiff_dataset(out) or {})
    tx = Transaction(overwrite=True)
    written: set[str] = set()
    with tx:  # all new samples and the manifests, or nothing: the old dataset stays whole until then
        for sub in sorted(p.name for p in tmp.iterdir() if p.is_dir()):
            tx.mkdir(out / sub)
            for item in sorted((tmp / sub).iterdir()):
                rel = f"{sub}/{item.name}"
                if (out / rel).exists() and rel not in listed:
                    raise InvalidParameterError(
                        f"{out / rel} is not a file of the dataset geodiff wrote (its manifest does not list "
                        "it): it was kept and nothing was changed; move it away or choose a new folder"
                    )
                tx.add(item, out / rel)
                written.add(rel)
        tx.add(tmp / "manifest.csv", out / "manifest.csv")
        tx.add(tmp / "manifest.json", out / "manifest.json")  # last: the folder is complete when it changes
    for rel in listed - written:
        with contextlib.suppress(FileNotFoundError):
            (out / rel).unlink()  # old samples the new manifest does not list


def _listed_files(manifest: dict[str, Any]) -> set[str]:
    """The sample files a geodiff manifest lists (the only ones ``--overwrite`` may replace or remove)."""
    listed = set()
    for rec in manifest.get("samples", []):
        for key in ("image", "mask", "after_image", "after_mask", "change"):
            rel = str(rec.get(key, ""))
            if rel.startswith(("images/", "masks/", *(f"{f}/" for f in CHANGE_FOLDERS))) and ".." not in rel:
                listed.add(rel)
    return listed


def generate_dataset(
    out_dir: str | os.PathLike[str],
    windows: Sequence[BBox] | None = None,
    area: BBox | None = None,
    n_windows: int = 0,
    seeds_per_window: int = 1,
    seed: int = 0,
    model: Any = None,
    osm_path: str | os.PathLike[str] | None = None,
    vector_path: str | os.PathLike[str] | None = None,
    class_field: str = "class",
    crs: str | None = None,
    steps: int | None = None,
    sampler: Sampler = "dpm",
    guidance_scale: float | None = None,
    device: str = "auto",
    batch_size: int = 8,
    fmt: Literal["tif", "png"] = "tif",
    min_labeled: float = 0.0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    client: Any = None,
    threads_per_worker: int = 1,
    *,
    quality: str | None = None,
    runtime: str = "torch",
    sampling: SamplingOptions | None = None,
    source: SourceOptions | None = None,
    cluster: ClusterOptions | None = None,
    changes: bool = False,
    margin_m: float | None = None,
) -> AugmentResult:
    """Generate a paired (synthetic image, mask) dataset in ``out_dir``.

    Each sample is what ``geodiff synth`` gives for the window's bbox and seed (the same plan and pipeline, the
    same place-keyed noise), so a sample's pixels equal a ``geodiff synth`` run of that bbox.

    Parameters
    ----------
    out_dir
        Folder to create (or an empty one). A non-empty one is refused unless ``overwrite``, and even then
        only a dataset geodiff wrote is touched (only the files its manifest lists are replaced).
    windows
        Bboxes to synthesize (each at the model's resolution); exclusive with ``area``.
    area, n_windows
        Draw ``n_windows`` random model-tile-sized windows inside ``area`` (rasterized once).
    seeds_per_window
        Samples per window, with seeds ``seed, seed + 1, ...``.
    model
        A :class:`~geodiff.model.GeodiffModel`, a model name or folder, or None for the default model.
    osm_path, vector_path, class_field, crs
        Map source and output CRS (default: UTM of each window), as for ``geodiff synth``.
    steps, sampler, guidance_scale, device, batch_size, quality, runtime
        Sampling settings, as for :func:`geodiff.synth.plan_synthesis` (``quality="fast"``: the distilled student;
        ``runtime="onnx"``: ONNX Runtime on the CPU).
    fmt
        ``"tif"`` (georeferenced GeoTIFF pairs) or ``"png"`` (plain PNG pairs).
    min_labeled
        Random windows only: minimum fraction of non-background map pixels, in [0, 1].
    overwrite
        Allow replacing a dataset geodiff wrote before.
    progress
        ``progress(fraction, message)`` callback.
    client
        A ``distributed.Client``: every sample is rendered as a task on that Dask cluster (the client reads the
        map and writes the files); see :func:`geodiff.distributed.dask_client`.
    threads_per_worker
        With ``client``: torch CPU threads in each worker's render task.
    sampling, source, cluster
        The options as values (:mod:`geodiff.options`, what the CLI passes): ``sampling`` stands for ``seed``,
        ``model``, ``steps`` ... ``batch_size``, ``source`` for ``osm_path``, ``vector_path``, ``class_field``;
        give a value or its flat arguments, not both. ``cluster`` opens the Dask cluster it names for the run
        (instead of ``client``) or, without one, sets this process's torch threads.
    changes
        Change-detection sets: each sample also gets a random plausible edit of its map
        (:func:`geodiff.change.random_edit`: remove or add a building, add a road or a pond) and the after image
        of that edit (:func:`geodiff.change.render_change`, BEFORE's pixels outside the edit + ``margin_m``), in
        ``after_images/``, ``after_masks/`` and ``changes/`` (change codes, see :mod:`geodiff.change`); the
        manifest records the edit. Runs in this process (not with ``client``).

    Returns
    -------
    AugmentResult
    """
    sampling = options_from(
        SamplingOptions, sampling, "sampling", model=model, device=device, seed=seed, steps=steps,
        sampler=sampler, guidance_scale=guidance_scale, batch_size=batch_size, quality=quality,
        runtime=runtime,
    )  # fmt: skip
    source = options_from(
        SourceOptions, source, "source", osm_path=osm_path, vector_path=vector_path, class_field=class_field
    )
    if cluster is None or not cluster.distributed:
        if cluster is not None:
            cluster.use_threads()
        return _generate(out_dir, windows, area, n_windows, seeds_per_window, sampling, source, crs, fmt,
                         min_labeled, overwrite, progress, client, threads_per_worker, changes,
                         margin_m)  # fmt: skip
    if client is not None:
        raise InvalidParameterError("give a Dask client or cluster options, not both")
    from geodiff.distributed import cluster_beside

    # Dask's own logging goes beside the dataset, hidden, and is removed when the run succeeds
    with cluster_beside(cluster, out_dir) as client:
        return _generate(out_dir, windows, area, n_windows, seeds_per_window, sampling, source, crs, fmt,
                         min_labeled, overwrite, progress, client, cluster.threads_per_worker, changes,
                         margin_m)  # fmt: skip


def _generate(
    out_dir: str | os.PathLike[str],
    windows: Sequence[BBox] | None,
    area: BBox | None,
    n_windows: int,
    seeds_per_window: int,
    sampling: SamplingOptions,
    source: SourceOptions,
    crs: str | None,
    fmt: str,
    min_labeled: float,
    overwrite: bool,
    progress: ProgressCallback | None,
    client: Any,
    threads_per_worker: int,
    changes: bool = False,
    margin_m: float | None = None,
) -> AugmentResult:
    from geodiff.models import resolve_device, resolve_model
    from geodiff.rasterize import rasterize_bbox
    from geodiff.settings import get_settings
    from geodiff.synth import plan_synthesis, render
    from geodiff.synth.plan import resolve_request

    seed, sampler, guidance_scale = sampling.seed, sampling.sampler, sampling.guidance_scale
    osm_path, vector_path, class_field = source.osm_path, source.vector_path, source.class_field
    started = time.monotonic()
    out = Path(os.path.abspath(out_dir))
    if fmt not in FORMATS:
        raise InvalidParameterError(f"unknown format {fmt!r}: use {' or '.join(FORMATS)}")
    if (windows is None) == (area is None):
        raise InvalidParameterError(
            "give either a list of windows (--windows FILE) or an area (--area W,S,E,N)"
        )
    if area is not None and n_windows < 1:
        raise InvalidParameterError("--n-windows must be >= 1 with --area")
    if seeds_per_window < 1:
        raise InvalidParameterError(f"--seeds-per-window must be >= 1, got {seeds_per_window}")
    if not 0.0 <= min_labeled <= 1.0:
        raise InvalidParameterError(f"--min-labeled is a fraction in [0, 1], got {min_labeled}")
    settings = get_settings()
    ref = resolve_model(sampling.model, settings)
    quality, steps, run_sampler = resolve_request(
        ref, sampling.quality, sampling.steps, sampler, sampling.batch_size, seed, guidance_scale
    )
    if changes and client is not None:
        raise InvalidParameterError("--changes renders in this process: leave out --workers/--scheduler")
    check_dataset_output(out, overwrite)

    dev = resolve_device(sampling.device)
    model_obj = ref.load(dev, quality, sampling.runtime)
    res, tile = model_obj.config.resolution_m, model_obj.config.tile_size
    # resolved once, for all the plans below
    resolved = dataclasses.replace(sampling, model=ref, steps=steps, device=dev, quality=quality)

    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise OutputError(
            f"cannot create a folder in {out.parent} ({exc.strerror or exc}): choose a writable folder for --out"
        ) from exc
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the final folder should get normal permissions
    try:
        for sub in ("images", "masks", *(CHANGE_FOLDERS if changes else ())):
            (tmp / sub).mkdir()
        features = None
        todo: list[tuple[BBox, str | None]]
        if area is not None:
            report(progress, 0.0, "rasterizing area")
            area_map, area_grid = rasterize_bbox(
                area,
                resolution=res,
                crs=crs,
                osm_path=osm_path,
                vector_path=vector_path,
                class_field=class_field,
            )
            picked = random_windows(area_map, area_grid, n_windows, tile, seed, min_labeled)
            # one read of the map for all windows, a window's margin beyond the area (windows see past edges)
            x0, y0, x1, y1 = area_grid.bounds
            m = tile * res
            features = source.load(BBox(x0 - m, y0 - m, x1 + m, y1 + m, crs=area_grid.crs), settings)
            grid_crs = area_grid.crs.to_wkt()
            todo = [(BBox(*w.grid.bounds, crs=area_grid.crs), grid_crs) for w in picked]
        else:
            todo = [(b, crs) for b in (windows or [])]  # windows are read lazily: output starts at once
        total = len(todo) * seeds_per_window

        def jobs() -> Iterator[tuple[int, int, SynthPlan, Any]]:
            feats = features
            for wi, (box, box_crs) in enumerate(todo):
                for k in range(seeds_per_window):
                    plan = plan_synthesis(
                        box, crs=box_crs, settings=settings, source=source,
                        sampling=dataclasses.replace(resolved, seed=seed + k),
                    )  # fmt: skip
                    if (
                        area is None and k == 0
                    ):  # a listed window: read its own canvas's map once for all seeds
                        canvas = plan.canvas_grid()
                        feats = source.load(BBox(*canvas.bounds, crs=canvas.crs), settings)
                    yield wi, seed + k, plan, feats

        if client is not None:  # each sample is a task on the Dask cluster; results come back in order
            from geodiff.distributed import render_tasks

            rendered = render_tasks(client, jobs(), threads_per_worker)
        else:
            rendered = (
                (wi, s, plan, render(plan, model_obj, feats, settings)) for wi, s, plan, feats in jobs()
            )
        records: list[dict[str, Any]] = []
        for wi, s, plan, (rgb, class_map) in rendered:
            win = Window(wi, plan.grid, class_map)
            sid = _sample_id(wi, s)
            tags = run_tags(plan)
            image_rel, mask_rel = _write_sample(tmp, sid, rgb, win.class_map, win.grid, fmt, tags)
            records.append(_record(sid, image_rel, mask_rel, win, s))
            if changes:
                records[-1].update(
                    _write_change(tmp, sid, plan, model_obj, rgb, win, fmt, tags, seed, margin_m, settings)
                )
            report(progress, len(records) / total, f"sample {len(records)}/{total}")
        _write_manifests(
            tmp,
            records,
            {
                "model": ref.name,
                "steps": steps,
                "sampler": run_sampler,
                "quality": quality,
                "guidance_scale": plan.guidance_scale if records else guidance_scale,
                "seeds_per_window": seeds_per_window,
                "image_format": fmt,
                "source": str(source),
                **({"changes": CHANGES_INFO} if changes else {}),
            },
        )
        _finalise(tmp, out, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return AugmentResult(
        out, len(records), out / "manifest.json", out / "manifest.csv", time.monotonic() - started
    )


CHANGE_FOLDERS = ("after_images", "after_masks", "changes")
CHANGES_INFO = {
    "layout": {
        "after_images": "after_images/<id>",
        "after_masks": "after_masks/<id>",
        "changes": "changes/<id>",
    },
    "change_values": "0 unchanged; 1 + old * 5 + new where class old became new; 255 from/to no class",
    "edits": "one random edit per sample (edit, edit_rows, edit_cols in pixels): remove_building, add_building, "
    "add_road, add_pond; the after image equals the image outside the changed pixels grown by the margin",
}


def _write_change(
    root: Path,
    sid: str,
    plan: SynthPlan,
    model: Any,
    rgb: np.ndarray,
    win: Window,
    fmt: str,
    tags: dict[str, object],
    seed: int,
    margin_m: float | None,
    settings: Any,
) -> dict[str, Any]:
    """A random edit of the sample's map, its after image and change mask, written beside the pair."""
    from geodiff.change import DEFAULT_MARGIN_M, change_code, random_edit, render_change

    rng = np.random.default_rng([seed, win.index, int(tags["SEED"])])  # type: ignore[call-overload]
    after_map, edit = random_edit(win.class_map, rng, win.grid.resolution)
    margin = DEFAULT_MARGIN_M if margin_m is None else margin_m
    after_rgb, done = render_change(
        plan, rgb, win.class_map, after_map, margin, model=model, settings=settings
    )
    after_tags = {**tags, "CHANGE_EDIT": edit["kind"], "CHANGE_MARGIN_M": f"{margin:g}"}
    after_rel, after_mask_rel = _write_sample(
        root, sid, after_rgb, after_map, win.grid, fmt, after_tags, "after_"
    )
    code = change_code(win.class_map, after_map)
    change_rel = f"changes/{sid}.{fmt}"
    if fmt == "tif":
        from geodiff.io import geotiff_writer

        with geotiff_writer(
            root / change_rel, win.grid, 1, "uint8", after_tags, ("change",), nodata=None
        ) as dst:
            dst.write(code[None])
    else:
        from PIL import Image

        from geodiff.io import atomic_path

        with atomic_path(root / change_rel) as tmp:
            Image.fromarray(code, mode="L").save(tmp, format="PNG")
    return {
        "after_image": after_rel,
        "after_mask": after_mask_rel,
        "change": change_rel,
        "edit": edit["kind"],
        "edit_rows": edit["rows"],
        "edit_cols": edit["cols"],
        "changed_pixels": int(done.changed.sum()),
        "changed_area_pixels": int(done.area.sum()),
    }


def _record(sid: str, image_rel: str, mask_rel: str, win: Window, seed: int) -> dict[str, Any]:
    lon_lat = win.grid.lonlat_bounds()
    counts = np.bincount(win.class_map.ravel(), minlength=256)[list(range(NUM_CLASSES)) + [IGNORE]]
    fractions = counts / win.class_map.size
    return {
        "id": sid,
        "image": image_rel,
        "mask": mask_rel,
        "window": win.index,
        "seed": seed,
        "west": lon_lat[0],
        "south": lon_lat[1],
        "east": lon_lat[2],
        "north": lon_lat[3],
        "crs": win.grid.crs.to_string(),
        "x_min": win.grid.bounds[0],
        "y_max": win.grid.bounds[3],
        "resolution_m": win.grid.resolution,
        "width": win.grid.width,
        "height": win.grid.height,
        **{f"frac_{c.name}": round(float(fractions[c.id]), 5) for c in CLASSES},
        "frac_ignore": round(float(fractions[-1]), 5),
    }


def _write_manifests(root: Path, records: list[dict[str, Any]], info: dict[str, Any]) -> None:
    manifest = {
        "format": MANIFEST_FORMAT,
        "description": "synthetic aerial images (images/) paired with the semantic maps they were generated from "
        "(masks/, class ids)",
        "layout": {"images": "images/<id>", "masks": "masks/<id>", "mask_values": "class ids; 255 = ignore"},
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASSES],
        "ignore_index": IGNORE,
        "attribution": ATTRIBUTION,
        "geodiff_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        **info,
        "n_samples": len(records),
        "samples": records,
    }
    from geodiff.io import atomic_path  # flushed and checked like every output; a full disk is one line

    with atomic_path(root / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    with atomic_path(root / "manifest.csv") as tmp, open(tmp, "w", newline="") as fh:
        if records:
            writer = csv.DictWriter(fh, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
