"""Edit the map, see the change: the after image of a geodiff output for an edited map.

``geodiff change --before BEFORE.tif --osm edited.osm --out AFTER.tif`` reads everything that made BEFORE from
its tags (grid, model, seed, steps, sampler, guidance) and its semantic map (the mask file its ``MASK`` tag
names), compares that map with the after map on the same grid, and

- copies BEFORE's pixels bit for bit wherever the class did not change within ``margin`` metres;
- re-synthesizes only the windows touching the changed area, by latent inpainting inside the one denoising
  loop (:class:`geodiff.pipeline.KnownRegion`): BEFORE is encoded to latents, and at every step the known part
  of the canvas is put back at that step's noise level (the same place-keyed noise a synthesis starts from), so
  the new content is denoised in the context of the old one; the latent mask is feathered over a latent cell
  or two, and the pixels are cross-faded into BEFORE over the outer half of the margin;
- writes the after image, its semantic map and a change mask (0 unchanged, ``1 + old * N + new`` where class
  ``old`` became ``new``; a QGIS style names them) in one transaction: all three appear, or none.

Changed areas far apart are separate regions (each costs about the windows it touches); a region taller than
the strip budget (``GEODIFF_MAX_STRIP_PIXELS``) is computed in strips of window rows, each strip inpainting
with the rows the previous strip finished as known content.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geodiff.classes import CLASSES, NUM_CLASSES
from geodiff.errors import CorruptFileError, InputNotFoundError, InvalidParameterError, ModelError
from geodiff.grid import BBox, Grid
from geodiff.progress import ProgressCallback, report
from geodiff.settings import Settings, get_settings
from geodiff.synth import global_origin

if TYPE_CHECKING:
    import geopandas as gpd

    from geodiff.model import GeodiffModel
    from geodiff.options import ClusterOptions
    from geodiff.synth import SynthPlan

DEFAULT_MARGIN_M = 8.0
"""Pixels farther than this from a changed class stay BEFORE's, bit for bit; the outer half is the cross-fade."""

CHANGE_UNKNOWN = 255
"""Change-mask value where the old or the new class is 255 (no class)."""

_NEEDED_TAGS = ("MODEL", "SEED", "STEPS", "SAMPLER", "BBOX", "BBOX_CRS")


def change_code(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Change-mask values: 0 where ``old == new``, ``1 + old * NUM_CLASSES + new`` where the class changed,
    255 where it changed from or to no class."""
    old, new = old.astype(np.int32), new.astype(np.int32)
    code = 1 + old * NUM_CLASSES + new
    code[(old >= NUM_CLASSES) | (new >= NUM_CLASSES)] = CHANGE_UNKNOWN
    code[old == new] = 0
    return code.astype(np.uint8)


def change_labels() -> dict[int, str]:
    """Change-mask value -> label (``"building -> road"``)."""
    labels = {0: "unchanged"}
    for a in CLASSES:
        for b in CLASSES:
            if a.id != b.id:
                labels[1 + a.id * NUM_CLASSES + b.id] = f"{a.name} -> {b.name}"
    labels[CHANGE_UNKNOWN] = "changed (from or to no class)"
    return labels


def change_tags() -> dict[str, str]:
    return {
        "CHANGE_CODES": f"0 unchanged; 1 + old * {NUM_CLASSES} + new where class old became new; 255 from/to no class",
        "CLASSES": ",".join(f"{c.id}:{c.name}" for c in CLASSES),
    }


def change_qml() -> str:
    """A QGIS style naming every change value (``building -> road``), coloured by the new class;
    unchanged is transparent."""
    from xml.sax.saxutils import quoteattr

    from geodiff.io import _QML_HEAD, _QML_TAIL

    colors = {c.id: c.color for c in CLASSES}
    entries = ['        <paletteEntry value="0" color="#000000" alpha="0" label="unchanged"/>\n']
    for value, label in change_labels().items():
        if value == 0:
            continue
        r, g, b = (
            colors.get((value - 1) % NUM_CLASSES, (255, 0, 255)) if value != CHANGE_UNKNOWN else (255, 0, 255)
        )
        entries.append(
            f'        <paletteEntry value="{value}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" '
            f"label={quoteattr(label)}/>\n"
        )
    return (
        _QML_HEAD
        + '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        + "      <rasterTransparency/>\n      <colorPalette>\n"
        + "".join(entries)
        + "      </colorPalette>\n    </rasterrenderer>\n"
        + _QML_TAIL
    )


def default_change_path(out_path: str | Path) -> Path:
    """``after.tif`` -> ``after.change.tif`` beside it."""
    out = Path(out_path)
    return out.with_name(out.stem + ".change.tif")


# ---------------------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ChangePlan:
    """What ``geodiff change`` will do; build with :func:`plan_change`, run with :func:`synthesize_change`."""

    synth: SynthPlan  # BEFORE's synthesis, re-planned from its tags (its outputs: the after image and mask)
    before_path: Path
    before_mask_path: Path
    before_tags: dict[str, str]
    change_path: Path
    margin_m: float
    map_path: Path | None = None  # a class-map GeoTIFF on BEFORE's grid (instead of synth.source)
    edits_path: Path | None = (
        None  # a vector layer of edits painted over BEFORE's map (instead of synth.source)
    )

    @property
    def margin_px(self) -> int:
        return math.ceil(self.margin_m / self.synth.grid.resolution - 1e-9)

    @property
    def outputs(self) -> list[Path]:
        return [*self.synth.outputs, self.change_path]


def _before_runtime(tags: dict[str, str], device: str) -> str:
    """The runtime that made BEFORE (its ``RUNTIME`` tag), if it can run here; else torch. The runtimes differ by
    at most a grey level and only the area around the change is drawn anew, so no user choice is overridden: one
    named with ``runtime=`` is used as given (and refused if it cannot run)."""
    from geodiff.model.onnx_runtime import check_runtime
    from geodiff.models import resolve_device

    made_with = tags.get("RUNTIME", "torch")
    try:
        return check_runtime(made_with, resolve_device(device))
    except InvalidParameterError:  # onnx on a GPU host, or without its packages; an unknown name too
        return "torch"


def _same_grid(a: Grid, b: Grid) -> bool:
    return a.shape == b.shape and a.crs == b.crs and a.transform.almost_equals(b.transform, precision=1e-6)


def _describe_grid(g: Grid) -> str:
    return (
        f"{g.width} x {g.height} px at {g.resolution:g} m/px in {g.crs.to_string()} "
        f"from ({g.transform.c:.2f}, {g.transform.f:.2f})"
    )


def _read_grid(path: Path, what: str) -> tuple[Grid, dict[str, str], int]:
    import rasterio
    from pyproj import CRS

    if not path.exists():
        raise InputNotFoundError(f"{what} {path} does not exist")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise CorruptFileError(f"{what} {path} has no CRS: it is not a geodiff output")
            grid = Grid(CRS.from_wkt(src.crs.to_wkt()), src.transform, src.width, src.height)
            return grid, dict(src.tags()), src.count
    except rasterio.errors.RasterioIOError as exc:
        raise CorruptFileError(f"cannot read {what} {path}: {exc}") from exc


def plan_change(
    before: str | Path,
    out_path: str | Path,
    *,
    change_out: str | Path | None = None,
    mask_out: str | Path | None = None,
    map_path: str | Path | None = None,
    osm_path: str | Path | None = None,
    vector_path: str | Path | None = None,
    edits_path: str | Path | None = None,
    class_field: str = "class",
    margin_m: float = DEFAULT_MARGIN_M,
    model: GeodiffModel | str | Path | None = None,
    device: str = "auto",
    batch_size: int = 8,
    overwrite: bool = False,
    settings: Settings | None = None,
    runtime: str | None = None,
) -> ChangePlan:
    """Plan the after image of ``before`` (a ``geodiff synth`` output) for an edited map.

    The after map is ``map_path`` (a class-map GeoTIFF on BEFORE's grid), ``edits_path`` (a vector layer of
    only the edited features, with ``class_field``: painted over BEFORE's map, e.g. features just drawn in QGIS)
    or a map source of the whole map (``osm_path``, ``vector_path``, neither: Overpass) rasterized like BEFORE's. ``model`` defaults to the one BEFORE names; it
    must be the model that made BEFORE (its content hash, ``MODEL_SHA256``); ``runtime`` defaults to the one that made
    BEFORE (its ``RUNTIME`` tag) where that can run here, else torch. Everything is checked here, before
    any weights or features are loaded: a BEFORE that is not a geodiff output, whose grid is not the one geodiff
    makes for its tags, or whose mask is missing or on another grid, is refused with one line.
    """
    from geodiff.io import check_output_paths, check_style_paths
    from geodiff.models import model_fingerprint, resolve_model
    from geodiff.synth import default_mask_path, plan_synthesis

    settings = settings or get_settings()
    before = Path(before)
    if not (isinstance(margin_m, int | float) and math.isfinite(margin_m) and margin_m >= 0):
        raise InvalidParameterError(f"--margin must be a number of metres >= 0, got {margin_m!r}")
    if sum(p is not None for p in (map_path, osm_path, vector_path, edits_path)) > 1:
        raise InvalidParameterError("give the after map once: one of --map, --edits, --osm, --vector")
    grid, tags, count = _read_grid(before, "--before image")
    missing = [t for t in _NEEDED_TAGS if t not in tags]
    if missing or count != 3:
        raise InvalidParameterError(
            f"--before {before} is not a geodiff synth output (it lacks the tags {', '.join(missing) or 'of RGB'}): "
            "give an image written by `geodiff synth` or `geodiff change`"
        )
    wanted = model if model is not None else tags["MODEL"]
    ref = resolve_model(wanted, settings)
    made_by = tags.get("MODEL_SHA256")
    if made_by is not None and (mine := model_fingerprint(ref)) is not None and mine != made_by:
        raise ModelError(
            f"--before {before} was made by the model {tags['MODEL']} ({made_by}), not by {ref.name} ({mine}): "
            "use the model that made it (leave --model out to use the one it names)"
        )
    if not math.isclose(grid.resolution, ref.config.resolution_m, rel_tol=1e-6):
        raise InvalidParameterError(
            f"--before {before} is at {grid.resolution:g} m/px but the model {ref.name} makes "
            f"{ref.config.resolution_m:g} m/px: it was not made by this model"
        )
    out = Path(out_path)
    mask = Path(mask_out) if mask_out is not None else default_mask_path(out)
    change = Path(change_out) if change_out is not None else default_change_path(out)
    try:
        seed, steps = int(tags["SEED"]), int(tags["STEPS"])
        guidance = float(tags["GUIDANCE_SCALE"]) if "GUIDANCE_SCALE" in tags else None
    except (ValueError, TypeError) as exc:
        raise InvalidParameterError(f"--before {before} has unreadable geodiff tags ({exc})") from exc
    t = grid.transform
    snapped = all(abs(v / grid.resolution - round(v / grid.resolution)) < 1e-6 for v in (t.c, t.f))
    if t.b != 0 or t.d != 0 or t.a != -t.e or not snapped:
        raise InvalidParameterError(
            f"--before {before} is not on a geodiff grid ({_describe_grid(grid)}, not whole pixels of the "
            "model's lattice): it was resampled or shifted; give the file geodiff wrote"
        )
    # the grid of BEFORE itself (a whole-pixel crop of a geodiff output is still one): same windows, same noise
    plan = plan_synthesis(
        BBox(*grid.bounds, crs=grid.crs), out, mask_out=mask, osm_path=osm_path, vector_path=vector_path,
        class_field=class_field, model=ref, seed=seed, steps=steps, sampler=tags["SAMPLER"],
        quality=tags.get("QUALITY", "full"), guidance_scale=guidance, device=device, batch_size=batch_size,
        runtime=runtime if runtime is not None else _before_runtime(tags, device), crs=grid.crs.to_wkt(),
        blend=tags.get("BLEND", "True") != "False", overwrite=overwrite, settings=settings,
    )  # fmt: skip
    if not _same_grid(plan.grid, grid):
        raise InvalidParameterError(
            f"--before {before} is on the grid {_describe_grid(grid)}, which geodiff does not make "
            f"({_describe_grid(plan.grid)}): give the file geodiff wrote"
        )
    mask_tag = tags.get("MASK")
    before_mask = (before.parent / mask_tag) if mask_tag else default_mask_path(before)
    mgrid, _, mcount = _read_grid(before_mask, "--before's semantic map")
    if not _same_grid(mgrid, grid) or mcount != 1:
        raise InvalidParameterError(
            f"--before's semantic map {before_mask} is not on the grid of {before}: give the pair geodiff wrote"
        )
    if map_path is not None:
        agrid, _, acount = _read_grid(Path(map_path), "--map")
        if not _same_grid(agrid, grid) or acount != 1:
            raise InvalidParameterError(
                f"--map {map_path} ({_describe_grid(agrid)}, {acount} band(s)) is not a class map on --before's "
                f"grid ({_describe_grid(grid)}): rasterize the edited map on that grid, or give --osm/--vector"
            )
    key = {Path(p).resolve() for p in (before, before_mask)}
    for p in (out, mask, change):
        if p.resolve() in key:
            raise InvalidParameterError(
                f"{p} is --before or its semantic map: write the after image elsewhere"
            )
    check_output_paths([out, mask, change], overwrite)
    check_style_paths([out, mask, change])
    return ChangePlan(
        plan,
        before,
        before_mask,
        tags,
        change,
        float(margin_m),
        Path(map_path) if map_path is not None else None,
        Path(edits_path) if edits_path is not None else None,
    )


# ---------------------------------------------------------------------------------------------------------
# the change area and the regions to compute
# ---------------------------------------------------------------------------------------------------------


def change_area(changed: np.ndarray, margin_px: int) -> tuple[np.ndarray, np.ndarray]:
    """``(area, alpha)`` for a changed-pixel mask: ``area`` = within ``margin_px`` of a change (the only pixels
    that may differ from BEFORE), ``alpha`` = the weight of the new image there (1 up to half the margin from
    the change, then a linear ramp to 0 at the margin; exactly 0 outside ``area``)."""
    from scipy import ndimage

    if not changed.any():
        return np.zeros_like(changed, bool), np.zeros(changed.shape, np.float32)
    if margin_px <= 0:
        return changed.copy(), changed.astype(np.float32)
    # distances only inside the changes' bounding box grown by the margin
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    r0, r1 = max(0, rows[0] - margin_px - 1), min(changed.shape[0], rows[-1] + margin_px + 2)
    c0, c1 = max(0, cols[0] - margin_px - 1), min(changed.shape[1], cols[-1] + margin_px + 2)
    dist = ndimage.distance_transform_edt(~changed[r0:r1, c0:c1])
    half = margin_px / 2
    alpha = np.zeros(changed.shape, np.float32)
    alpha[r0:r1, c0:c1] = np.clip((margin_px - dist) / max(half, 1e-9), 0, 1)
    area = alpha > 0
    return area, alpha


@dataclass(frozen=True)
class Region:
    """Windows ``rows[a..b] x cols[c..d]`` of the canvas layout, computed together."""

    a: int
    b: int
    c: int
    d: int

    def touches(self, o: Region) -> bool:
        return self.a <= o.b + 1 and o.a <= self.b + 1 and self.c <= o.d + 1 and o.c <= self.d + 1

    def union(self, o: Region) -> Region:
        return Region(min(self.a, o.a), max(self.b, o.b), min(self.c, o.c), max(self.d, o.d))

    @property
    def windows(self) -> int:
        return (self.b - self.a + 1) * (self.d - self.c + 1)


def _window_range(start: int, stop: int, origins: tuple[int, ...], tile: int) -> tuple[int, int]:
    """The fewest consecutive windows (indices) whose union covers canvas pixels ``[start, stop)``."""
    first = max(i for i, o in enumerate(origins) if o <= start) if start >= origins[0] else 0
    last = first
    while last + 1 < len(origins) and origins[last] + tile < stop:
        last += 1
    return first, last


def change_regions(area_canvas: np.ndarray, plan: SynthPlan, context: int) -> list[Region]:
    """The window groups to compute for a changed area (in canvas pixels): each connected part of the area,
    grown by ``context`` pixels, is covered by the fewest windows; groups that touch are merged."""
    from scipy import ndimage

    lay = plan.layout
    labels, n = ndimage.label(area_canvas, structure=np.ones((3, 3), bool))
    regions: list[Region] = []
    for sl in ndimage.find_objects(labels):
        if sl is None:
            continue
        r0, r1 = max(0, sl[0].start - context), min(lay.height, sl[0].stop + context)
        c0, c1 = max(0, sl[1].start - context), min(lay.width, sl[1].stop + context)
        regions.append(
            Region(*_window_range(r0, r1, lay.rows, lay.tile), *_window_range(c0, c1, lay.cols, lay.tile))
        )
    merged = True
    while merged:
        merged = False
        for i in range(len(regions)):
            for j in range(i + 1, len(regions)):
                if regions[i].touches(regions[j]):
                    regions[i] = regions[i].union(regions.pop(j))
                    merged = True
                    break
            if merged:
                break
    return sorted(regions, key=lambda r: (r.a, r.c))


# ---------------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ChangeResult:
    """A finished change: outputs, changed pixel count, windows computed and time."""

    image_path: Path
    mask_path: Path | None
    change_path: Path
    grid: Grid
    changed_pixels: int
    area_pixels: int
    windows: int
    seconds: float
    plan: ChangePlan
    tags: dict[str, str] = field(default_factory=dict)


def _read_rgb_window(path: Path, row: int, col: int, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 of ``path`` at bbox-grid pixels (may reach past the edges: edge-replicated)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        r0, r1 = max(0, row), min(src.height, row + height)
        c0, c1 = max(0, col), min(src.width, col + width)
        arr = np.moveaxis(src.read(window=Window(c0, r0, c1 - c0, r1 - r0)), 0, -1)
    pad = ((r0 - row, row + height - r1), (c0 - col, col + width - c1), (0, 0))
    return np.pad(arr, pad, mode="edge") if any(p for pp in pad for p in pp) else arr


def _read_band(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def encode_canvas(model: GeodiffModel, images: Any, overlap: int, batch_size: int) -> Any:
    """Images ``[1, 3, H, W]`` in [-1, 1] (H, W covered exactly by windows) -> latents ``[1, C, H/f, W/f]``,
    encoded window by window and blended with the pipeline's weights."""
    import torch

    from geodiff.pipeline import GeodiffPipeline

    pipe = GeodiffPipeline(model, scheduler=object())
    f = model.latent_factor
    _, _, h, w = images.shape
    wins, th, tw = pipe._windows(1, h, w, overlap)
    weights = pipe._weights(th, tw, overlap, f)
    z = torch.zeros(1, model.latent_channels, h // f, w // f)
    wsum = torch.zeros(1, 1, h // f, w // f)
    with torch.inference_mode():
        for i in range(0, len(wins), batch_size):
            bw = wins[i : i + batch_size]
            crops = torch.cat([pipe._crop(images, v, th, tw, 1) for v in bw]).to(model.device, model.dtype)
            lat = model.encode_images(crops).float().cpu()
            for k, v in enumerate(bw):
                pipe._crop(z, v, th, tw, f)[0] += lat[k] * weights
                pipe._crop(wsum, v, th, tw, f)[0] += weights
    return z / wsum


def latent_mask(generate: np.ndarray, f: int) -> Any:
    """Pixel mask of what to generate (H, W) -> the feathered latent mask ``[1, 1, H/f, W/f]``: 1 on every
    latent cell touching it, falling off over the next two cells."""
    import torch
    import torch.nn.functional as F

    px = torch.from_numpy(generate.astype(np.float32))[None, None]
    core = F.max_pool2d(px, f)
    grown = F.max_pool2d(core, 3, stride=1, padding=1)
    soft = F.avg_pool2d(grown, 3, stride=1, padding=1, count_include_pad=False)
    return torch.maximum(core, soft)


def _region_strips(plan: SynthPlan, region: Region, settings: Settings) -> list[tuple[int, int]]:
    from geodiff.tiling import split_rows

    lay = plan.layout
    width = lay.cols[region.d] + lay.tile - lay.cols[region.c]
    stride = lay.tile - lay.overlap
    per = max(2, settings.max_strip_pixels // max(1, width * stride))
    return [(region.a + s, region.a + e) for s, e in split_rows(region.b - region.a + 1, per)]


@dataclass
class RegionInputs:
    """What inpainting one region reads, as arrays over the region's canvas box (they travel to Dask workers):
    BEFORE's pixels (edge-replicated past its grid), the after class map, and the new image's weight
    (alpha inside the bbox, 1 outside it: no BEFORE there, generated freely)."""

    region: Region
    top: int
    left: int
    before: np.ndarray  # (h, w, 3) uint8
    after: np.ndarray  # (h, w) class ids
    alpha: np.ndarray  # (h, w) float32


def region_inputs(
    plan: SynthPlan,
    region: Region,
    before_reader: Callable[[int, int, int, int], np.ndarray],
    after_map: Callable[[int, int, int, int], np.ndarray],
    alpha_canvas: Callable[[int, int, int, int], np.ndarray],
) -> RegionInputs:
    lay = plan.layout
    top, left = lay.rows[region.a], lay.cols[region.c]
    height = lay.rows[region.b] + lay.tile - top
    width = lay.cols[region.d] + lay.tile - left
    g_row, g_col = global_origin(plan.grid)
    off_r, off_c = g_row - lay.canvas_row, g_col - lay.canvas_col  # the bbox grid inside the canvas
    return RegionInputs(
        region, top, left, before_reader(top - off_r, left - off_c, height, width),
        after_map(top, left, height, width), alpha_canvas(top, left, height, width),
    )  # fmt: skip


def compute_region(
    plan: SynthPlan,
    model: GeodiffModel,
    inputs: RegionInputs,
    settings: Settings,
    progress: ProgressCallback | None = None,
) -> tuple[int, int, np.ndarray]:
    """Inpaint one region: returns ``(canvas row, canvas col, rgb uint8 (h, w, 3))`` of the region's canvas
    (BEFORE's pixels composited with the new ones by ``alpha``)."""
    import torch

    from geodiff.noise import location_noise, place_key
    from geodiff.pipeline import GeodiffPipeline, KnownRegion
    from geodiff.synth.canvas import _canvas_generator, _step_noise

    lay, f = plan.layout, model.latent_factor
    region, top, left = inputs.region, inputs.top, inputs.left
    before, alpha = inputs.before, inputs.alpha
    width = before.shape[1]
    work = torch.from_numpy(before).float().div(127.5).sub(1).permute(2, 0, 1)[None]  # [1, 3, h, w]
    before_t = work.clone()
    alpha_t = torch.from_numpy(alpha)[None, None]
    key = place_key(plan.grid.crs)
    pipe = GeodiffPipeline(model, model.make_scheduler(plan.sampler))
    strips = _region_strips(plan, region, settings)
    done = 0  # region rows finished by earlier strips
    for s, (first, stop) in enumerate(strips):
        s_top = lay.rows[first] - top
        s_h = lay.rows[stop - 1] + lay.tile - lay.rows[first]
        keep = s_h if s == len(strips) - 1 else lay.rows[stop - 1] - lay.rows[first]
        rows = slice(s_top, s_top + s_h)
        cmap = inputs.after[s_top : s_top + s_h]
        lat_r, lat_c = (lay.canvas_row + top + s_top) // f, (lay.canvas_col + left) // f
        noise = location_noise(plan.seed, key, lat_r, lat_c, s_h // f, width // f, model.latent_channels)[
            None
        ]
        z0 = encode_canvas(model, work[:, :, rows], lay.overlap, plan.batch_size)
        generate = alpha[rows] > 0
        generate[: max(0, done - s_top)] = False  # rows an earlier strip finished are known now
        mask = latent_mask(generate, f)
        sub = None if progress is None else (lambda fr, msg, s=s: progress((s + fr) / len(strips), msg))
        out = pipe(
            cmap, num_inference_steps=plan.steps, latents=noise, guidance_scale=plan.guidance_scale,
            overlap=lay.overlap, batch_size=plan.batch_size, output_type="pt", progress=sub,
            generator=_canvas_generator(plan.seed, key, lat_r, lat_c), known=KnownRegion(z0, mask, noise),
            step_noise=_step_noise(plan.seed, key, lat_r, lat_c, s_h // f, width // f, model.latent_channels),
        )  # fmt: skip
        new = out.images[:, :, max(0, done - s_top) : keep]
        fin = slice(max(done, s_top), s_top + keep)
        a = alpha_t[:, :, fin]
        work[:, :, fin] = before_t[:, :, fin] * (1 - a) + new * a
        done = s_top + keep
    rgb = ((work[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return top, left, rgb


@dataclass
class Inpainted:
    """The changed pixels, the area around them, and the new pixels of every computed region."""

    changed: np.ndarray
    area: np.ndarray
    patches: list[tuple[int, int, np.ndarray]]  # (bbox row, bbox col, rgb uint8) of each region
    windows: int

    def paste(self, rgb: np.ndarray, row: int = 0) -> np.ndarray:
        """Put the new pixels into ``rgb`` (bbox-grid rows ``row..``, (h, W, 3) uint8, BEFORE's), in place."""
        h, width = rgb.shape[:2]
        for p_row, p_col, patch in self.patches:
            r0, r1 = max(row, p_row), min(row + h, p_row + patch.shape[0])
            c0, c1 = max(0, p_col), min(width, p_col + patch.shape[1])
            if r1 <= r0 or c1 <= c0:
                continue
            sel = self.area[r0:r1, c0:c1]
            dst = rgb[r0 - row : r1 - row, c0:c1]
            dst[sel] = patch[r0 - p_row : r1 - p_row, c0 - p_col : c1 - p_col][sel]
        return rgb


def inpaint_change(
    plan: SynthPlan,
    before_reader: Callable[[int, int, int, int], np.ndarray],
    before_map: np.ndarray,
    after_bbox: np.ndarray,
    after_map: Callable[[int, int, int, int], np.ndarray],
    margin_px: int,
    settings: Settings,
    progress: ProgressCallback | None = None,
    on_event: Callable[..., None] | None = None,
    model: GeodiffModel | None = None,
    client: Any = None,
    threads: int = 1,
) -> Inpainted:
    """The core of a change: which pixels changed class (``before_map`` vs ``after_bbox`` on the plan's grid),
    the area within ``margin_px``, and the inpainted regions. ``before_reader(row, col, h, w)`` gives BEFORE's
    uint8 pixels at bbox-grid rows/cols (edge-replicated past the grid), ``after_map(row, col, h, w)`` the after
    class map at canvas rows/cols. With a Dask ``client`` every region is a task (``threads`` torch threads
    each; the same pixels as here: a region's work does not depend on where it runs)."""
    grid, lay = plan.grid, plan.layout
    g_row, g_col = global_origin(grid)
    off_r, off_c = g_row - lay.canvas_row, g_col - lay.canvas_col
    changed = before_map != after_bbox
    area, alpha = change_area(changed, margin_px)

    def alpha_canvas(row: int, col: int, h: int, w: int) -> np.ndarray:
        out = np.ones((h, w), np.float32)
        r0, r1 = max(row, off_r), min(row + h, off_r + grid.height)
        c0, c1 = max(col, off_c), min(col + w, off_c + grid.width)
        if r1 > r0 and c1 > c0:
            out[r0 - row : r1 - row, c0 - col : c1 - col] = alpha[
                r0 - off_r : r1 - off_r, c0 - off_c : c1 - off_c
            ]
        return out

    area_canvas = np.zeros((lay.height, lay.width), bool)
    area_canvas[off_r : off_r + grid.height, off_c : off_c + grid.width] = area
    regions = change_regions(area_canvas, plan, context=lay.overlap // 2)
    windows = sum(r.windows for r in regions)
    if on_event is not None:
        on_event(event="change", changed_pixels=int(changed.sum()), regions=len(regions), windows=windows)
    # the new pixels of every region, composited into BEFORE (kept only where the area is)
    patches: list[tuple[int, int, np.ndarray]] = []
    inputs = (region_inputs(plan, r, before_reader, after_map, alpha_canvas) for r in regions)
    if regions and client is not None:
        from geodiff.distributed import change_region_tasks

        for i, (top, left, rgb) in enumerate(change_region_tasks(client, plan, inputs, settings, threads)):
            patches.append((top - off_r, left - off_c, rgb))
            report(progress, 0.05 + 0.9 * (i + 1) / len(regions), f"region {i + 1}/{len(regions)} done")
    elif regions:
        model = model if model is not None else plan.model.load(plan.device, plan.quality, plan.runtime)
        if on_event is not None:
            on_event(event="device", device=plan.device, dtype=str(model.dtype).removeprefix("torch."))
        for i, region_in in enumerate(inputs):
            sub = None if progress is None else (
                lambda fr, msg, i=i: progress(0.05 + 0.9 * (i + fr) / len(regions), msg)
            )  # fmt: skip
            top, left, rgb = compute_region(plan, model, region_in, settings, sub)
            patches.append((top - off_r, left - off_c, rgb))
    return Inpainted(changed, area, patches, windows)


def render_change(
    plan: SynthPlan,
    before_rgb: np.ndarray,
    before_map: np.ndarray,
    after_map: np.ndarray,
    margin_m: float = DEFAULT_MARGIN_M,
    model: GeodiffModel | None = None,
    settings: Settings | None = None,
) -> tuple[np.ndarray, Inpainted]:
    """In memory: the after image (H, W, 3) uint8 of ``before_rgb`` (what :func:`geodiff.synth.render` gave for
    ``plan``) for the edited class map ``after_map`` (H, W) on the plan's grid (the canvas past the grid edge
    repeats its edge). Returns ``(after_rgb, Inpainted)``; augmentation (``geodiff augment --changes``)."""
    settings = settings or get_settings()
    grid, lay = plan.grid, plan.layout
    g_row, g_col = global_origin(grid)
    off_r, off_c = g_row - lay.canvas_row, g_col - lay.canvas_col
    canvas_map = np.pad(
        after_map,
        ((off_r, lay.height - grid.height - off_r), (off_c, lay.width - grid.width - off_c)),
        mode="edge",
    )

    def before_reader(row: int, col: int, h: int, w: int) -> np.ndarray:
        r0, r1 = max(0, row), min(grid.height, row + h)
        c0, c1 = max(0, col), min(grid.width, col + w)
        pad = ((r0 - row, row + h - r1), (c0 - col, col + w - c1), (0, 0))
        return np.pad(before_rgb[r0:r1, c0:c1], pad, mode="edge")

    done = inpaint_change(
        plan, before_reader, before_map, after_map,
        lambda r, c, h, w: canvas_map[r : r + h, c : c + w], math.ceil(margin_m / grid.resolution - 1e-9),
        settings, model=model,
    )  # fmt: skip
    return done.paste(before_rgb.copy()), done


def _paint_edits(
    before_map: np.ndarray, cp: ChangePlan, settings: Settings, features: gpd.GeoDataFrame | None
) -> np.ndarray:
    """BEFORE's map with the features of ``cp.edits_path`` painted over it (where a feature is, its class)."""
    from geodiff.osm import load_features
    from geodiff.rasterize import rasterize_features

    grid = cp.synth.grid
    if features is None:
        features = load_features(
            BBox(*grid.bounds, crs=grid.crs),
            vector_path=cp.edits_path,
            class_field=cp.synth.source.class_field,
            settings=settings,
        )
    out = before_map.copy()
    if len(features) == 0:
        return out
    painted = rasterize_features(features, grid)
    # where any edit lies, whatever its class (background too: a removed building): all painted as class 1
    covered = rasterize_features(
        features.assign(class_id=1, kind=features["kind"].replace("coastline", "line")), grid
    )
    out[covered != 0] = painted[covered != 0]
    return out


def synthesize_change(
    plan_or_before: ChangePlan | str | Path,
    out_path: str | Path | None = None,
    *,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
    on_event: Callable[..., None] | None = None,
    features: gpd.GeoDataFrame | None = None,
    cluster: ClusterOptions | None = None,
    **options: Any,
) -> ChangeResult:
    """Write the after image, its semantic map and the change mask for a :class:`ChangePlan` (or
    ``before, out_path, **options`` of :func:`plan_change`). The three files (and their QGIS styles) are
    published together, or none is; outside the changed area grown by the margin the after image is BEFORE.

    ``cluster`` (:class:`~geodiff.options.ClusterOptions`): the regions around the edits as tasks on a Dask
    cluster (the same pixels as in this process); Dask's own logging goes to ``.<out>.dask.log`` beside the
    output, removed when the run succeeds."""
    import contextlib

    from rasterio.windows import Window

    from geodiff.io import Transaction, class_map_writer, geotiff_writer, rgb_writer, write_style
    from geodiff.provenance import run_tags as provenance
    from geodiff.rasterize import rasterize_features

    settings = settings or get_settings()
    if isinstance(plan_or_before, ChangePlan):
        if out_path is not None or options:
            raise InvalidParameterError(
                "give either a ChangePlan or before + out_path with options, not both"
            )
        cp = plan_or_before
    else:
        if out_path is None:
            raise InvalidParameterError("synthesize_change(before, out_path, ...): out_path is required")
        cp = plan_change(plan_or_before, out_path, settings=settings, **options)
    plan = cp.synth
    started = time.monotonic()
    grid, lay = plan.grid, plan.layout
    with Transaction(plan.overwrite) as tx:
        tx.claim(cp.outputs)
        # the after map: on the bbox grid (for the change mask) and for any canvas window (for the model)
        report(progress, 0.0, "reading the after map")
        g_row, g_col = global_origin(grid)
        off_r, off_c = g_row - lay.canvas_row, g_col - lay.canvas_col
        before_map = _read_band(cp.before_mask_path)
        if cp.map_path is not None or cp.edits_path is not None:
            if cp.map_path is not None:
                after_bbox = _read_band(cp.map_path)
            else:
                after_bbox = _paint_edits(before_map, cp, settings, features)
            canvas_map = np.pad(
                after_bbox,
                ((off_r, lay.height - grid.height - off_r), (off_c, lay.width - grid.width - off_c)),
                mode="edge",
            )

            def after_map(row: int, col: int, h: int, w: int) -> np.ndarray:
                return canvas_map[row : row + h, col : col + w]
        else:
            if features is None:
                features = plan.source.load(BBox(*plan.canvas_grid().bounds, crs=grid.crs), settings)
            after_bbox = rasterize_features(features, grid)
            feats = features

            def after_map(row: int, col: int, h: int, w: int) -> np.ndarray:
                return rasterize_features(feats, plan.canvas_grid().window(row, col, h, w))

        with contextlib.ExitStack() as stack:
            client = None
            if cluster is not None and cluster.distributed:
                from geodiff.distributed import cluster_beside

                client = stack.enter_context(cluster_beside(cluster, plan.out_path))
            elif cluster is not None:
                cluster.use_threads()
            done = inpaint_change(
                plan, lambda r, c, h, w: _read_rgb_window(cp.before_path, r, c, h, w), before_map, after_bbox,
                after_map, cp.margin_px, settings, progress, on_event, client=client,
                threads=cluster.threads_per_worker if cluster is not None else 1,
            )  # fmt: skip
        changed, area, windows = done.changed, done.area, done.windows
        # write: BEFORE's pixels everywhere, the new ones inside the area, strip by strip
        report(progress, 0.95, "writing")
        tags = {**provenance(plan), "CHANGE_OF": cp.before_path.name, "CHANGE_MARGIN_M": f"{cp.margin_m:g}",
                "CHANGED_PIXELS": str(int(changed.sum()))}  # fmt: skip
        if cp.map_path is not None or cp.edits_path is not None:
            tags["SOURCE"] = (
                f"{cp.before_mask_path.name} + {cp.edits_path}" if cp.edits_path else str(cp.map_path)
            )
        with (
            rgb_writer(plan.out_path, grid, tags, overwrite=plan.overwrite, cog=plan.cog, tx=tx) as rgb_dst,
            class_map_writer(plan.mask_path, grid, tags, overwrite=plan.overwrite, cog=plan.cog, tx=tx) as m_dst,
            geotiff_writer(
                cp.change_path, grid, 1, "uint8", {**tags, **change_tags()}, ("change",),
                overwrite=plan.overwrite, cog=plan.cog, overview_resampling="nearest", tx=tx, nodata=None,
            ) as c_dst,
        ):  # fmt: skip
            step = max(1, min(grid.height, settings.max_strip_pixels // max(1, grid.width)))
            for row in range(0, grid.height, step):
                h = min(step, grid.height - row)
                rgb = _read_rgb_window(cp.before_path, row, 0, h, grid.width)
                done.paste(rgb, row)
                window = Window(0, row, grid.width, h)
                rgb_dst.write(np.moveaxis(rgb, -1, 0), window=window)
                m_dst.write(after_bbox[row : row + h][None].astype(np.uint8), window=window)
                c_dst.write(
                    change_code(before_map[row : row + h], after_bbox[row : row + h])[None], window=window
                )
        write_style(cp.change_path, change_qml(), overwrite=plan.overwrite, tx=tx)
    report(progress, 1.0, "done")
    return ChangeResult(
        plan.out_path, plan.mask_path, cp.change_path, grid, int(changed.sum()), int(area.sum()), windows,
        time.monotonic() - started, cp, tags,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# random plausible edits (``geodiff augment --changes``)
# ---------------------------------------------------------------------------------------------------------

EDIT_KINDS = ("remove_building", "add_building", "add_road", "add_pond")
_FREE = (0, 4)  # background, vegetation: where something new may be put


def _edit_remove_building(
    m: np.ndarray, rng: np.random.Generator, res: float
) -> tuple[np.ndarray, tuple] | None:
    from scipy import ndimage

    from geodiff.classes import BUILDING

    labels, n = ndimage.label(m == BUILDING)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    ok = np.flatnonzero(sizes >= max(4, round(20 / res**2)))
    if ok.size == 0:
        return None
    k = int(rng.choice(ok)) + 1
    sl = ndimage.find_objects(labels)[k - 1]
    out = m.copy()
    out[labels == k] = 0
    return out, (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)


def _edit_box(m, rng, res, cls, lo_m, hi_m, ellipse=False):
    h_px, w_px = m.shape
    for _ in range(40):
        bh, bw = (max(2, round(float(rng.uniform(lo_m, hi_m)) / res)) for _ in range(2))
        if bh + 4 >= h_px or bw + 4 >= w_px:
            continue
        r, c = int(rng.integers(2, h_px - bh - 2)), int(rng.integers(2, w_px - bw - 2))
        if not np.isin(m[r - 2 : r + bh + 2, c - 2 : c + bw + 2], _FREE).all():
            continue
        out = m.copy()
        if ellipse:
            yy, xx = np.mgrid[:bh, :bw]
            inside = ((yy + 0.5 - bh / 2) / (bh / 2)) ** 2 + ((xx + 0.5 - bw / 2) / (bw / 2)) ** 2 <= 1
            out[r : r + bh, c : c + bw][inside] = cls
        else:
            out[r : r + bh, c : c + bw] = cls
        return out, (r, c, r + bh, c + bw)
    return None


def _edit_add_road(m: np.ndarray, rng: np.random.Generator, res: float) -> tuple[np.ndarray, tuple] | None:
    from geodiff.classes import BUILDING, ROAD, WATER

    width = max(2, round(float(rng.uniform(6, 10)) / res))
    vertical = bool(rng.integers(2))
    mm = m.T if vertical else m
    if mm.shape[0] <= width + 4:
        return None
    for _ in range(20):
        r = int(rng.integers(2, mm.shape[0] - width - 2))
        band = mm[r : r + width]
        if np.isin(band, (BUILDING, WATER)).any() or (band == ROAD).mean() > 0.5:
            continue
        out = mm.copy()
        out[r : r + width] = ROAD
        out = out.T if vertical else out
        box = (0, r, m.shape[0], r + width) if vertical else (r, 0, r + width, m.shape[1])
        return np.ascontiguousarray(out), box
    return None


def random_edit(
    class_map: np.ndarray, rng: np.random.Generator, resolution: float
) -> tuple[np.ndarray, dict]:
    """A random plausible edit of a class map: remove a building, add a building (8-20 m), add a road (6-10 m
    wide, across the map, not through buildings or water) or add a pond (10-30 m); kinds are tried in a random
    order until one fits. Returns ``(edited map, {"kind", "rows": [r0, r1], "cols": [c0, c1]})`` (``kind`` None
    when nothing fits)."""
    from geodiff.classes import BUILDING, WATER

    tries = {
        "remove_building": lambda: _edit_remove_building(class_map, rng, resolution),
        "add_building": lambda: _edit_box(class_map, rng, resolution, BUILDING, 8, 20),
        "add_road": lambda: _edit_add_road(class_map, rng, resolution),
        "add_pond": lambda: _edit_box(class_map, rng, resolution, WATER, 10, 30, ellipse=True),
    }
    for kind in rng.permutation(EDIT_KINDS):
        got = tries[str(kind)]()
        if got is not None:
            out, (r0, c0, r1, c1) = got
            return out, {"kind": str(kind), "rows": [int(r0), int(r1)], "cols": [int(c0), int(c1)]}
    return class_map.copy(), {"kind": None, "rows": None, "cols": None}
