"""The one place that reads and writes rasters (GeoTIFF via rasterio, PNG previews via Pillow).

Every output is written atomically: data goes to a temporary file beside the target and is renamed over it only
when complete, so an error or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError

from geodiff import ATTRIBUTION, __version__
from geodiff.classes import CLASSES, IGNORE, colorize
from geodiff.errors import CorruptFileError, InputNotFoundError, InvalidParameterError
from geodiff.grid import Grid

GTIFF_PROFILE = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
    "compress": "deflate",
    "predictor": 2,
    "zlevel": 6,
    "BIGTIFF": "IF_SAFER",
}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    target = Path(path)
    if target.is_dir():
        raise InvalidParameterError(
            f"output {target} is a folder: give a file name such as {target / 'out.tif'}"
        )
    if not target.parent.exists():
        raise InvalidParameterError(f"output folder {target.parent} does not exist: create it first")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the output the permissions a normal file would get.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:  # also on KeyboardInterrupt / SystemExit
        if tmp.exists():
            tmp.unlink()
        aux = tmp.with_name(tmp.name + ".aux.xml")
        if aux.exists():
            aux.unlink()


def provenance_tags(extra: Mapping[str, object] | None = None) -> dict[str, str]:
    tags = {"ATTRIBUTION": ATTRIBUTION, "SOFTWARE": f"geodiff {__version__}"}
    for k, v in (extra or {}).items():
        tags[str(k).upper()] = str(v)
    return tags


def class_table_tags() -> dict[str, str]:
    tags = {"CLASSES": ",".join(f"{c.id}:{c.name}" for c in CLASSES), "IGNORE_VALUE": str(IGNORE)}
    for c in CLASSES:
        tags[f"CLASS_{c.id}"] = c.name
    return tags


@contextlib.contextmanager
def geotiff_writer(
    path: str | os.PathLike[str],
    grid: Grid,
    count: int,
    dtype: str = "uint8",
    tags: Mapping[str, object] | None = None,
    band_descriptions: tuple[str, ...] | None = None,
    **profile: object,
) -> Iterator[rasterio.io.DatasetWriter]:
    """Open an atomic, tiled, compressed GeoTIFF for block-wise writing (``dst.write(arr, window=...)``)."""
    opts = dict(GTIFF_PROFILE)
    opts.update(profile)
    if grid.width < 256 or grid.height < 256:
        opts.pop("blockxsize"), opts.pop("blockysize")
        opts["tiled"] = False
    with atomic_path(path) as tmp:
        with rasterio.open(
            tmp,
            "w",
            width=grid.width,
            height=grid.height,
            count=count,
            dtype=dtype,
            crs=grid.crs.to_wkt(),
            transform=grid.transform,
            **opts,
        ) as dst:
            dst.update_tags(**provenance_tags(tags))
            for i, desc in enumerate(band_descriptions or (), start=1):
                dst.set_band_description(i, desc)
            yield dst


@contextlib.contextmanager
def class_map_writer(
    path: str | os.PathLike[str], grid: Grid, tags: Mapping[str, object] | None = None
) -> Iterator[rasterio.io.DatasetWriter]:
    """An atomic one-band class-map GeoTIFF (colour table, class names, attribution) for block-wise writing."""
    all_tags = {**class_table_tags(), **(tags or {})}
    with geotiff_writer(path, grid, 1, "uint8", all_tags, ("semantic class",), nodata=None) as dst:
        cmap = {c.id: (*c.color, 255) for c in CLASSES}
        cmap[IGNORE] = (0, 0, 0, 0)
        dst.write_colormap(1, cmap)
        dst.update_tags(1, **{f"CLASS_{c.id}": c.name for c in CLASSES})
        yield dst


def write_class_map(
    path: str | os.PathLike[str], class_map: np.ndarray, grid: Grid, tags: Mapping[str, object] | None = None
) -> Path:
    """Write an (H, W) uint8 class map with a colour table, class names and attribution."""
    if class_map.shape != grid.shape:
        raise ValueError(f"class map shape {class_map.shape} does not match grid shape {grid.shape}")
    with class_map_writer(path, grid, tags) as dst:
        dst.write(class_map.astype(np.uint8), 1)
    return Path(path)


def write_rgb(
    path: str | os.PathLike[str], rgb: np.ndarray, grid: Grid, tags: Mapping[str, object] | None = None
) -> Path:
    """Write an RGB uint8 image given as (3, H, W) or (H, W, 3)."""
    arr = np.asarray(rgb)
    if arr.ndim == 3 and arr.shape[-1] == 3 and arr.shape[0] != 3:
        arr = np.moveaxis(arr, -1, 0)
    if arr.shape != (3, *grid.shape):
        raise ValueError(f"RGB shape {arr.shape} does not match (3, {grid.height}, {grid.width})")
    with rgb_writer(path, grid, tags) as dst:
        dst.write(arr.astype(np.uint8))
    return Path(path)


def rgb_writer(
    path: str | os.PathLike[str], grid: Grid, tags: Mapping[str, object] | None = None
) -> contextlib.AbstractContextManager[rasterio.io.DatasetWriter]:
    """An atomic RGB GeoTIFF writer for block-wise output of large mosaics."""
    return geotiff_writer(path, grid, 3, "uint8", tags, ("red", "green", "blue"), photometric="RGB")


def read_raster(path: str | os.PathLike[str]) -> tuple[np.ndarray, Grid, dict[str, str]]:
    """Read all bands: returns (bands x H x W array, grid, dataset tags)."""
    from pyproj import CRS

    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"raster {p} does not exist")
    try:
        with rasterio.open(p) as src:
            if src.crs is None:
                raise CorruptFileError(
                    f"raster {p} has no CRS: georeference it first (e.g. gdal_edit.py -a_srs)"
                )
            grid = Grid(CRS.from_wkt(src.crs.to_wkt()), src.transform, src.width, src.height)
            return src.read(), grid, dict(src.tags())
    except RasterioIOError as exc:
        raise CorruptFileError(f"cannot read raster {p}: {exc}") from exc


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 array as PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")
    return Path(path)


def write_class_preview(path: str | os.PathLike[str], class_map: np.ndarray) -> Path:
    """A colour PNG preview of a class map (class colours from the class table)."""
    return write_png(path, colorize(class_map))
