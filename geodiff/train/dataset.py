"""Training datasets: cut (image, class map) tiles, store them compactly, serve them augmented.

A built dataset is one folder::

    tiles.npz       JPEG-encoded RGB tiles and PNG-encoded class-id tiles, concatenated byte blobs + offsets
    manifest.json   source, resolution, class table, tile names, the fixed validation split, statistics

Two sources: folders of images + colour masks (``build_from_mask_folder``) and a georeferenced orthophoto plus
an OSM/vector source rasterized with geodiff's own rasterizer (``build_from_orthophoto``).
"""

from __future__ import annotations

import io
import json
import math
import random
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geodiff.classes import CLASSES, IGNORE, NUM_CLASSES
from geodiff.errors import DataError, InputNotFoundError, InvalidParameterError
from geodiff.progress import ProgressCallback, report
from geodiff.settings import DEFAULT_RESOLUTION_M, TILE_SIZE
from geodiff.train.colors import get_table, map_colors
from geodiff.train.map_augment import MapAugment, augment_pair

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
DATASET_FORMAT = "geodiff-tiles/1"


@dataclass
class Tile:
    image: np.ndarray  # (T, T, 3) uint8
    mask: np.ndarray  # (T, T) uint8 class ids, 255 = ignore
    source: str
    row: int
    col: int


# ----------------------------------------------------------------------------------------------------------
# writing / reading the compact format
# ----------------------------------------------------------------------------------------------------------


def _encode(array: np.ndarray, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(array).save(buf, "JPEG", quality=quality)
    else:
        Image.fromarray(array).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def _blob(chunks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    return np.frombuffer(b"".join(chunks), dtype=np.uint8), offsets


def write_dataset(
    out: Path,
    tiles: Iterable[Tile],
    val_sources: set[str],
    info: dict[str, Any],
    jpeg_quality: int = 90,
    tx: Any = None,
) -> dict[str, Any]:
    """Write ``tiles.npz`` + ``manifest.json`` into ``out``, published together; returns the manifest.

    ``tx``: the :class:`geodiff.io.Transaction` of :func:`dataset_transaction` taken when the run started;
    without one the folder's dataset is replaced (only a dataset geodiff wrote)."""
    tx = tx if tx is not None else dataset_transaction(out, overwrite=True)

    imgs, masks, names, split = [], [], [], []
    hist = np.zeros(256, dtype=np.int64)
    for t in tiles:
        imgs.append(_encode(t.image, "JPEG", jpeg_quality))
        masks.append(_encode(t.mask, "PNG", 0))
        names.append(f"{t.source}@{t.row},{t.col}")
        split.append(1 if t.source in val_sources else 0)
        hist += np.bincount(t.mask.ravel(), minlength=256)
    if not imgs:
        raise DataError(
            "no usable tiles were cut: images are smaller than the tile size or entirely unlabeled"
        )
    if not any(split) and val_sources:
        raise DataError("the validation split is empty; lower val_fraction's granularity or add more images")
    ib, io_ = _blob(imgs)
    mb, mo = _blob(masks)
    tx.mkdir(out)
    with tx:  # both files or neither
        with tx.stage(out / "tiles.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    images=ib,
                    image_offsets=io_,
                    masks=mb,
                    mask_offsets=mo,
                    split=np.array(split, np.uint8),
                )
        total = int(hist.sum())
        manifest = {
            "format": DATASET_FORMAT,
            **info,
            "tile_size": int(tiles_size(imgs[0])),
            "num_tiles": len(imgs),
            "num_train": len(imgs) - int(sum(split)),
            "num_val": int(sum(split)),
            "val_sources": sorted(val_sources),
            "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASSES],
            "ignore": IGNORE,
            "class_fractions": {c.name: round(float(hist[c.id]) / total, 4) for c in CLASSES}
            | {"ignore": round(float(hist[IGNORE]) / total, 4)},
            "tiles": names,
        }
        with tx.stage(out / "manifest.json") as tmp:
            Path(tmp).write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n")
    return manifest


DATASET_FILES = ("tiles.npz", "manifest.json")


def _is_dataset(folder: Path) -> bool:
    try:
        return json.loads((folder / "manifest.json").read_text()).get("format") == DATASET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def dataset_transaction(out: str | Path, overwrite: bool) -> Any:
    """Check the dataset folder ``out`` before any work (see :func:`geodiff.io.folder_transaction`): its
    ``tiles.npz`` and ``manifest.json`` are replaced only with ``overwrite`` and only if geodiff wrote them."""
    from geodiff.io import folder_transaction  # here, so training needs no GDAL stack (GPU machines lack it)

    return folder_transaction(out, DATASET_FILES, overwrite, _is_dataset, "a dataset")


def check_resolution(resolution_m: float) -> None:
    if not (math.isfinite(resolution_m) and resolution_m > 0):
        raise InvalidParameterError(
            f"--resolution must be a positive number of metres per pixel, got {resolution_m}"
        )


def tiles_size(jpeg: bytes) -> int:
    return Image.open(io.BytesIO(jpeg)).size[0]


def load_dataset(path: str | Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """Decode a built dataset: ``(manifest, images [N,T,T,3] uint8, masks [N,T,T] uint8, split [N])``."""
    path = Path(path)
    if not (path / "manifest.json").is_file() or not (path / "tiles.npz").is_file():
        raise DataError(
            f"{path} is not a geodiff dataset (needs manifest.json and tiles.npz); build one with "
            "`geodiff dataset build --images DIR --out DIR`"
        )
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path / 'manifest.json'} is corrupt ({exc}): build the dataset again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise DataError(
            f"{path}: unknown dataset format {manifest.get('format')!r}; expected {DATASET_FORMAT}"
        )
    try:
        with np.load(path / "tiles.npz", allow_pickle=False) as z:
            ib, io_, mb, mo, split = (
                z["images"],
                z["image_offsets"],
                z["masks"],
                z["mask_offsets"],
                z["split"],
            )
        n = len(split)
        t = manifest["tile_size"]
        images = np.empty((n, t, t, 3), np.uint8)
        masks = np.empty((n, t, t), np.uint8)
        for i in range(n):
            images[i] = np.asarray(Image.open(io.BytesIO(ib[io_[i] : io_[i + 1]].tobytes())).convert("RGB"))
            masks[i] = np.asarray(Image.open(io.BytesIO(mb[mo[i] : mo[i + 1]].tobytes())))
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path / 'tiles.npz'} is corrupt or does not match its manifest ({type(exc).__name__}: {exc}): "
            "build the dataset again with `geodiff dataset build`"
        ) from exc
    return manifest, images, masks, split


# ----------------------------------------------------------------------------------------------------------
# source (a): image + colour-mask folders
# ----------------------------------------------------------------------------------------------------------


def find_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs under ``root``: every ``images/`` folder with a sibling ``masks/`` folder."""
    if not root.is_dir():
        raise InputNotFoundError(f"training data folder {root} does not exist")
    image_dirs = sorted(p for p in root.rglob("images") if p.is_dir())
    if root.name == "images":
        image_dirs = [root]
    if not image_dirs:
        raise DataError(
            f"{root}: no images/ folder found; expected <dir>/images/*.jpg with <dir>/masks/*.png"
        )
    pairs, missing = [], []
    for idir in image_dirs:
        mdir = idir.parent / "masks"
        images = sorted(p for p in idir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not mdir.is_dir():
            raise DataError(f"{idir} has no sibling masks/ folder ({mdir} is missing)")
        for img in images:
            cands = [mdir / (img.stem + s) for s in MASK_SUFFIXES]
            mask = next((c for c in cands if c.is_file()), None)
            if mask is None:
                missing.append(str(img.relative_to(root)))
            else:
                pairs.append((img, mask))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{root}: {len(missing)} image(s) have no mask of the same name in masks/: {shown}")
    if not pairs:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found in its images/ folders")
    return pairs


def _cut(
    image: np.ndarray, mask: np.ndarray, source: str, tile: int, stride: int, max_ignore: float
) -> Iterator[Tile]:
    h, w = mask.shape
    if h < tile or w < tile:
        return
    # centre the grid of windows so the margins are shared evenly
    rows = list(range((h - tile) % stride // 2, h - tile + 1, stride))
    cols = list(range((w - tile) % stride // 2, w - tile + 1, stride))
    for r in rows:
        for c in cols:
            m = mask[r : r + tile, c : c + tile]
            if (m == IGNORE).mean() > max_ignore:
                continue
            yield Tile(
                np.ascontiguousarray(image[r : r + tile, c : c + tile]), np.ascontiguousarray(m), source, r, c
            )


def _pick_val(sources: list[str], val_fraction: float, seed: int) -> set[str]:
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = max(1, round(len(sources) * val_fraction)) if val_fraction > 0 and len(sources) > 1 else 0
    return set(random.Random(seed).sample(sorted(sources), n))


def build_from_mask_folder(
    src: str | Path,
    out: str | Path,
    colors: str = "dubai_aerial",
    resolution_m: float = DEFAULT_RESOLUTION_M,
    tile_size: int = TILE_SIZE,
    stride: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    tolerance: int = 24,
    max_ignore_fraction: float = 0.5,
    jpeg_quality: int = 90,
    progress: ProgressCallback | None = None,
    tx: Any = None,
) -> dict[str, Any]:
    """Cut ``tile_size`` tiles from ``src/**/images/*`` + ``masks/*`` colour masks into the dataset ``out``.

    The validation split is a fixed set of whole source images (no spatial leakage), chosen with ``seed``.
    Returns the manifest.
    """
    src, out = Path(src), Path(out)
    check_resolution(resolution_m)
    table = get_table(colors)
    pairs = find_pairs(src)
    sources = [str(img.relative_to(src)) for img, _ in pairs]
    val = _pick_val(sources, val_fraction, seed)
    unknown_total: dict[str, int] = {}

    def tiles() -> Iterator[Tile]:
        for k, ((img_path, mask_path), name) in enumerate(zip(pairs, sources, strict=True)):
            report(progress, k / len(pairs), f"cutting {name}")
            try:
                image = np.asarray(Image.open(img_path).convert("RGB"))
                rgb = np.asarray(Image.open(mask_path).convert("RGB"))
            except OSError as exc:
                raise DataError(f"cannot read {img_path} or {mask_path}: {exc}") from exc
            if image.shape[:2] != rgb.shape[:2]:
                raise DataError(
                    f"{img_path.name}: image is {image.shape[1]}x{image.shape[0]} px but its mask {mask_path} is "
                    f"{rgb.shape[1]}x{rgb.shape[0]} px; masks must match their images pixel for pixel"
                )
            ids, unknown = map_colors(rgb, table, tolerance=tolerance, source=str(mask_path))
            for color, n in unknown.items():
                key = "#{:02X}{:02X}{:02X}".format(*color)
                unknown_total[key] = unknown_total.get(key, 0) + n
            yield from _cut(image, ids, name, tile_size, stride or tile_size, max_ignore_fraction)

    info = {
        "source": {"kind": "mask_folder", "path": str(src), "colors": colors, "images": len(pairs)},
        "resolution_m": float(resolution_m),
        "unknown_colors_as_ignore": unknown_total,
    }
    manifest = write_dataset(out, tiles(), val, info, jpeg_quality, tx)
    report(progress, 1.0, f"{manifest['num_tiles']} tiles written to {out}")
    return manifest


# ----------------------------------------------------------------------------------------------------------
# source (b): orthophoto GeoTIFF + OSM/vector features
# ----------------------------------------------------------------------------------------------------------


def build_from_orthophoto(
    image: str | Path,
    out: str | Path,
    osm_path: str | Path | None = None,
    vector_path: str | Path | None = None,
    class_field: str = "class",
    resolution_m: float = DEFAULT_RESOLUTION_M,
    crs: str | None = None,
    tile_size: int = TILE_SIZE,
    stride: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    max_ignore_fraction: float = 0.5,
    jpeg_quality: int = 90,
    progress: ProgressCallback | None = None,
    tx: Any = None,
) -> dict[str, Any]:
    """Tiles from a georeferenced orthophoto resampled to ``resolution_m`` and its map rasterized from OSM/vector.

    The orthophoto is warped (bilinear) onto a north-up grid in ``crs`` (default: the UTM zone of its centre);
    the class map comes from :func:`geodiff.osm.load_features` + :func:`geodiff.rasterize.rasterize_features`
    on the same grid, so image and map align pixel for pixel. The validation split is a fixed set of
    ``val_fraction`` of the tile-grid rows/column blocks (whole blocks of 4x4 tiles, to limit leakage).
    """
    import rasterio
    from rasterio.warp import Resampling, reproject

    from geodiff.grid import BBox, grid_for_bbox, parse_crs
    from geodiff.osm import load_features
    from geodiff.rasterize import rasterize_features

    image, out = Path(image), Path(out)
    check_resolution(resolution_m)
    if not image.is_file():
        raise InputNotFoundError(f"orthophoto {image} does not exist")
    if osm_path is None and vector_path is None:
        raise DataError(
            "an orthophoto dataset needs --osm FILE or --vector FILE for the class map of the same area"
        )
    report(progress, 0.0, "reading orthophoto")
    try:
        src = rasterio.open(image)
    except Exception as exc:
        raise DataError(f"cannot open {image} as a raster: {exc}") from exc
    with src:
        if src.crs is None:
            raise DataError(
                f"{image} is not georeferenced (no CRS); it needs a GeoTIFF with a CRS and transform"
            )
        if src.count < 3:
            raise DataError(f"{image} has {src.count} band(s); an RGB orthophoto needs at least 3")
        bbox = BBox(*src.bounds, crs=parse_crs(src.crs.to_wkt()))
        grid = grid_for_bbox(bbox, resolution_m, crs=crs)
        rgb = np.zeros((3, grid.height, grid.width), np.float32)
        valid = np.zeros((grid.height, grid.width), np.float32)
        for b in range(3):
            reproject(
                source=rasterio.band(src, b + 1),
                destination=rgb[b],
                dst_transform=grid.transform,
                dst_crs=grid.crs,
                resampling=Resampling.bilinear,
                dst_nodata=np.nan,
            )
        valid = np.isfinite(rgb).all(0)
        dtype = src.dtypes[0]
    if dtype != "uint8":  # stretch 16-bit / float imagery to 8 bits by the 0.5-99.5 percentiles
        lo, hi = np.nanpercentile(rgb[:, valid], [0.5, 99.5]) if valid.any() else (0.0, 1.0)
        rgb = (rgb - lo) / max(hi - lo, 1e-6) * 255
    img8 = np.nan_to_num(rgb, nan=0).clip(0, 255).round().astype(np.uint8).transpose(1, 2, 0)
    report(progress, 0.3, "loading features")
    features = load_features(
        BBox(*grid.lonlat_bounds()),
        osm_path=osm_path,
        vector_path=vector_path,
        class_field=class_field,  # type: ignore[call-arg]
    )
    report(progress, 0.5, "rasterizing")
    class_map = np.asarray(rasterize_features(features, grid), dtype=np.uint8).copy()
    class_map[~valid] = IGNORE  # outside the orthophoto footprint
    stride = stride or tile_size
    cut = list(_cut(img8, class_map, image.name, tile_size, stride, max_ignore_fraction))
    # blocks of 4x4 tiles are the unit of the validation split
    block = 4 * tile_size
    for t in cut:
        t.source = f"{image.name}#block{t.row // block},{t.col // block}"
    blocks = sorted({t.source for t in cut})
    val = _pick_val(blocks, val_fraction, seed) if len(blocks) > 1 else set()
    if not val and cut and val_fraction > 0:
        # a small orthophoto: hold out whole tiles instead
        rng = random.Random(seed)
        for t in cut:
            t.source = f"{image.name}@{t.row},{t.col}"
        val = set(
            rng.sample(
                [t.source for t in cut], max(1, math.floor(len(cut) * val_fraction)) if len(cut) > 1 else 0
            )
        )
    info = {
        "source": {
            "kind": "orthophoto",
            "path": str(image),
            "osm": str(osm_path) if osm_path else None,
            "vector": str(vector_path) if vector_path else None,
            "crs": grid.crs.to_string(),
        },
        "resolution_m": float(resolution_m),
    }
    manifest = write_dataset(out, cut, val, info, jpeg_quality, tx)
    report(progress, 1.0, f"{manifest['num_tiles']} tiles written to {out}")
    return manifest


# ----------------------------------------------------------------------------------------------------------
# torch dataset
# ----------------------------------------------------------------------------------------------------------


class TileDataset:
    """In-memory (image, class map) tiles: ``{"image": [3,S,S] float in [-1,1], "class_map": [S,S] long}``.

    Index it for single tiles (``ds[i]``, a ``torch.utils.data.Dataset``), or draw whole training batches
    from a generator with :meth:`sample` (what the training loops do: reproducible and resumable).

    Parameters
    ----------
    path
        A dataset folder (``manifest.json`` + ``tiles.npz``).
    split
        ``"train"``, ``"val"`` or ``"all"``.
    crop
        Random crop side (train) or centre crop (``augment=False``); ``None`` keeps whole tiles.
    augment
        Random crops and one of the 8 rotations/flips (aerial imagery has no preferred orientation).
    map_augment
        With ``augment``: zoom and OSM-style map redrawing (:mod:`geodiff.train.map_augment`); ``None`` = off.
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        crop: int | None = None,
        augment: bool = True,
        map_augment: MapAugment | None = None,
    ) -> None:
        manifest, images, masks, sp = load_dataset(path)
        if split not in ("train", "val", "all"):
            raise DataError(f"split must be train, val or all, got {split!r}")
        keep = np.ones(len(sp), bool) if split == "all" else (sp == (1 if split == "val" else 0))
        if not keep.any():
            raise DataError(f"{path}: the {split} split is empty")
        self.manifest = manifest
        self.split = split
        self.images, self.masks = images[keep], masks[keep]
        self.crop = crop
        self.augment = augment
        self.map_augment = map_augment if map_augment is not None and map_augment.active else None
        t = self.images.shape[1]
        if crop is not None and not 0 < crop <= t:
            raise DataError(f"crop {crop} must be between 1 and the tile size {t}")

    def __len__(self) -> int:
        return len(self.images)

    def _item(self, i: int, generator: Any = None) -> dict[str, Any]:
        import torch

        from geodiff.train.symmetry import NUM_DIHEDRAL, dihedral

        img, m = self.images[i], self.masks[i]
        t = img.shape[0]
        styled = None
        if self.augment and self.map_augment is not None:
            # a numpy stream drawn from the torch generator keeps batches reproducible and resumable
            seed = int(torch.randint(2**62, (1,), generator=generator))
            styled = augment_pair(
                img,
                m,
                self.crop,
                self.map_augment,
                np.random.default_rng(seed),
                self.manifest["resolution_m"],
            )
        if styled is not None:
            img, m = styled
        elif self.crop is not None and self.crop < t:
            if self.augment:
                r, c = torch.randint(0, t - self.crop + 1, (2,), generator=generator).tolist()
            else:
                r = c = (t - self.crop) // 2
            img, m = img[r : r + self.crop, c : c + self.crop], m[r : r + self.crop, c : c + self.crop]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(127.5).sub(1)
        cmap = torch.from_numpy(np.ascontiguousarray(m)).long()
        if self.augment:
            k = int(torch.randint(NUM_DIHEDRAL, (1,), generator=generator))
            x, cmap = dihedral(x, k).contiguous(), dihedral(cmap, k).contiguous()
        return {"image": x, "class_map": cmap}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._item(i)

    def sample(self, batch_size: int, generator: Any) -> dict[str, Any]:
        """A random batch (tiles drawn with replacement, crops and orientations) from a ``torch.Generator``."""
        import torch

        idx = torch.randint(len(self), (batch_size,), generator=generator).tolist()
        items = [self._item(i, generator) for i in idx]
        return {key: torch.stack([it[key] for it in items]) for key in ("image", "class_map")}


def check_num_classes(manifest: dict[str, Any]) -> None:
    n = len(manifest.get("classes", []))
    if n != NUM_CLASSES:
        raise DataError(
            f"dataset has {n} classes but geodiff has {NUM_CLASSES}; rebuild it with this version"
        )
