"""The one place that reads and writes rasters (GeoTIFF via rasterio, PNG previews via Pillow).

Every output is written atomically: data goes to a temporary file beside the target and is renamed over it only
when complete, so an error or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError

from geodiff.classes import CLASSES, IGNORE, colorize
from geodiff.errors import (
    CorruptFileError,
    GeodiffError,
    InputNotFoundError,
    InvalidParameterError,
    OutputError,
)
from geodiff.grid import Grid
from geodiff.provenance import provenance_tags

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


def _describe(path: Path) -> str:
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def check_output_paths(paths: Sequence[str | os.PathLike[str] | None], overwrite: bool = False) -> list[Path]:
    """Refuse outputs that cannot or must not be written, before any work starts.

    Refused: the same path twice, an existing folder, an existing non-regular file (device, pipe), an existing
    file without ``overwrite``, a missing or unwritable parent folder. Returns the paths (``None`` dropped).
    """
    out: list[Path] = []
    seen: dict[Path, Path] = {}
    for p in paths:
        if p is None:
            continue
        path = Path(p)
        key = Path(os.path.abspath(path))
        if key in seen or (key.exists() and any(key.samefile(k) for k in seen if k.exists())):
            raise InvalidParameterError(f"{path} is given for two outputs: choose a different name for each")
        seen[key] = path
        if path.is_dir():
            raise InvalidParameterError(
                f"output {path} is a folder: give a file name such as {path / 'out.tif'}"
            )
        if path.exists() or path.is_symlink():
            if path.exists() and not path.is_file():
                raise InvalidParameterError(
                    f"output {path} exists and is {_describe(path)}: geodiff only replaces regular files; "
                    "choose another name"
                )
            if not overwrite:
                raise InvalidParameterError(
                    f"{path} already exists: pass --overwrite to replace it, or choose another name"
                )
        parent = path.parent
        if not parent.is_dir():
            raise InvalidParameterError(f"output folder {parent} does not exist: create it first")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(
                f"output folder {parent} is not writable: choose another folder or fix its permissions"
            )
        out.append(path)
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``target``: replace only with ``overwrite``, else never clobber a file that
    appeared meanwhile (a hard link fails if the name exists, atomically; then the temporary name goes)."""
    if target.exists() and not target.is_file():
        raise OutputError(
            f"{target} became {_describe(target)} while geodiff was running: nothing was written"
        )
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise OutputError(
            f"{target} was created by someone else while geodiff was running: it was kept, and this run's "
            "result discarded; pass --overwrite to replace it, or choose another name"
        ) from None
    except OSError as exc:  # no hard links here (some network/FUSE filesystems): reserve the name exclusively
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise OutputError(
                f"{target} was created by someone else while geodiff was running: it was kept; pass "
                "--overwrite to replace it, or choose another name"
            ) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


_DISK_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)


def _write_failed(target: Path, exc: OSError) -> str:
    hint = (
        "; free some disk space and run again"
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        else ""
    )
    return f"writing {target} failed ({exc.strerror or exc}); nothing was written under that name{hint}"


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str],
    overwrite: bool = False,
    verify: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; publish it as ``path`` only if the block succeeds.

    Before the rename the file is flushed to disk (fsync) and, if given, ``verify(tmp)`` checks it is complete
    (e.g. a raster reopens with every block readable); a failure keeps any old file and leaves nothing new.
    An existing ``path`` is replaced only with ``overwrite``; one that appears while the block runs is kept.
    Write errors (disk full, permissions) become :class:`~geodiff.errors.OutputError`.
    """
    target = Path(path)
    check_output_paths([target], overwrite)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot create a file in {target.parent}: {exc.strerror}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except OSError as exc:  # a write inside the block hit the disk's limits
            if isinstance(exc, GeodiffError) or exc.errno not in _DISK_ERRORS:
                raise
            raise OutputError(_write_failed(target, exc)) from exc
        try:
            _fsync(tmp)
            if verify is not None:
                verify(tmp)
            # mkstemp creates 0600 files; give the output the permissions a normal file would get.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            _publish(tmp, target, overwrite)
            _fsync_dir(target.parent)
        except OSError as exc:
            if isinstance(exc, GeodiffError):
                raise
            raise OutputError(_write_failed(target, exc)) from exc
    finally:  # also on KeyboardInterrupt / SystemExit / a signal turned into an exception
        for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def class_table_tags() -> dict[str, str]:
    tags = {"CLASSES": ",".join(f"{c.id}:{c.name}" for c in CLASSES), "IGNORE_VALUE": str(IGNORE)}
    for c in CLASSES:
        tags[f"CLASS_{c.id}"] = c.name
    return tags


_QML_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n<qgis version=\"3.22\" styleCategories=\"Symbology\">\n  <pipe>\n"
_QML_TAIL = "  </pipe>\n  <blendMode>0</blendMode>\n</qgis>\n"


def class_map_qml() -> str:
    """A QGIS style: the class map as five named, coloured classes (not 256 numbered palette entries)."""
    from xml.sax.saxutils import quoteattr

    entries = "".join(
        f'        <paletteEntry value="{c.id}" color="#{c.color[0]:02x}{c.color[1]:02x}{c.color[2]:02x}" '
        f'alpha="255" label={quoteattr(c.name)}/>\n'
        for c in CLASSES
    )
    return (
        _QML_HEAD
        + '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        + "      <rasterTransparency/>\n      <colorPalette>\n"
        + entries
        + "      </colorPalette>\n    </rasterrenderer>\n"
        + _QML_TAIL
    )


def rgb_qml() -> str:
    """A QGIS style: the RGB bands shown as they are (0-255), not stretched to each band's min/max."""
    bands = "".join(
        f"      <{name}ContrastEnhancement><minValue>0</minValue><maxValue>255</maxValue>"
        f"<algorithm>NoEnhancement</algorithm></{name}ContrastEnhancement>\n"
        for name in ("red", "green", "blue")
    )
    return (
        _QML_HEAD
        + '    <rasterrenderer type="multibandcolor" redBand="1" greenBand="2" blueBand="3" opacity="1" '
        + 'alphaBand="-1" nodataColor="">\n      <rasterTransparency/>\n'
        + bands
        + "    </rasterrenderer>\n"
        + _QML_TAIL
    )


def style_path(raster: str | os.PathLike[str]) -> Path:
    """``area.mask.tif`` -> ``area.mask.qml``: the sidecar QGIS loads by itself as the layer's default style."""
    return Path(raster).with_suffix(".qml")


def write_style(raster: str | os.PathLike[str], qml: str, overwrite: bool = False) -> Path | None:
    """Write the QGIS style beside ``raster``; an existing style is replaced only with ``overwrite`` (the
    user's own styling of a file they did not ask to replace is kept). Returns the path written, if any."""
    path = style_path(raster)
    if path.exists() and not overwrite:
        return None
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(qml)
    return path


def verify_raster(path: Path, width: int, height: int, count: int) -> None:
    """Reopen a just-written raster and read every block: a full disk or a truncated write shows here, where
    GDAL's own close may only have logged it."""
    try:
        with rasterio.Env(CPL_LOG_ERRORS="OFF"), rasterio.open(path) as src:
            if (src.width, src.height, src.count) != (width, height, count):
                raise OutputError(
                    f"{path} came out {src.width} x {src.height} x {src.count} instead of {width} x {height} x "
                    f"{count}: the disk may be full"
                )
            for _, window in src.block_windows(1):
                src.read(window=window)
    except (RasterioIOError, rasterio.errors.RasterioError) as exc:
        raise OutputError(f"the written raster is incomplete ({exc}): the disk may be full") from exc


COG_OPTIONS = {"COMPRESS": "DEFLATE", "PREDICTOR": "2", "LEVEL": "6", "BIGTIFF": "IF_SAFER",
               "OVERVIEWS": "IGNORE_EXISTING"}  # fmt: skip


def cog_blocksize(grid: Grid) -> int:
    """512 px COG tiles, smaller for small rasters so they still get overviews (GDAL stops at one tile)."""
    side = min(grid.width, grid.height)
    return int(max(64, min(512, 2 ** math.floor(math.log2(max(side, 2) / 2)))))


@contextlib.contextmanager
def geotiff_writer(
    path: str | os.PathLike[str],
    grid: Grid,
    count: int,
    dtype: str = "uint8",
    tags: Mapping[str, object] | None = None,
    band_descriptions: tuple[str, ...] | None = None,
    overwrite: bool = False,
    cog: bool = False,
    overview_resampling: str = "average",
    **profile: object,
) -> Iterator[rasterio.io.DatasetWriter]:
    """Open an atomic, tiled, compressed GeoTIFF for block-wise writing (``dst.write(arr, window=...)``).

    The file appears under ``path`` only after it was closed, synced and read back complete (see
    :func:`atomic_path`); an existing file is replaced only with ``overwrite``. With ``cog`` the finished
    GeoTIFF is copied into a Cloud-Optimized GeoTIFF with internal overviews (GDAL's COG driver;
    ``overview_resampling`` "average" for imagery, "nearest" for class maps), so large areas open at once.
    """
    opts = dict(GTIFF_PROFILE)
    opts.update(profile)
    if grid.width < 256 or grid.height < 256:
        opts.pop("blockxsize"), opts.pop("blockysize")
        opts["tiled"] = False

    def verify(tmp: Path) -> None:
        verify_raster(tmp, grid.width, grid.height, count)

    with atomic_path(path, overwrite=overwrite, verify=verify) as tmp:
        stage = tmp.with_name(tmp.name + ".gtiff") if cog else tmp
        try:
            try:
                with rasterio.open(
                    stage,
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
                if cog:
                    from rasterio.shutil import copy as rio_copy

                    rio_copy(stage, tmp, driver="COG", RESAMPLING=overview_resampling.upper(),
                             BLOCKSIZE=str(cog_blocksize(grid)), **COG_OPTIONS)  # fmt: skip
            except rasterio.errors.RasterioError as exc:  # GDAL write errors (e.g. "No space left on device")
                raise OutputError(
                    f"writing {path} failed ({exc}); nothing was written under that name"
                ) from exc
        finally:
            if cog:
                for leftover in (stage, stage.with_name(stage.name + ".aux.xml")):
                    with contextlib.suppress(OSError):
                        leftover.unlink()


@contextlib.contextmanager
def class_map_writer(
    path: str | os.PathLike[str],
    grid: Grid,
    tags: Mapping[str, object] | None = None,
    overwrite: bool = False,
    style: bool = True,
    cog: bool = False,
) -> Iterator[rasterio.io.DatasetWriter]:
    """An atomic one-band class-map GeoTIFF (colour table, class names, attribution) for block-wise writing;
    a COG with nearest-neighbour overviews (class ids are not averaged) with ``cog``."""
    all_tags = {**class_table_tags(), **(tags or {})}
    with geotiff_writer(
        path, grid, 1, "uint8", all_tags, ("semantic class",), overwrite=overwrite, cog=cog,
        overview_resampling="nearest", nodata=None,
    ) as dst:  # fmt: skip
        cmap = {c.id: (*c.color, 255) for c in CLASSES}
        cmap[IGNORE] = (0, 0, 0, 0)
        dst.write_colormap(1, cmap)
        dst.update_tags(1, **{f"CLASS_{c.id}": c.name for c in CLASSES})
        yield dst
    if style:
        write_style(path, class_map_qml(), overwrite=overwrite)


def write_class_map(
    path: str | os.PathLike[str],
    class_map: np.ndarray,
    grid: Grid,
    tags: Mapping[str, object] | None = None,
    overwrite: bool = False,
    style: bool = True,
) -> Path:
    """Write an (H, W) uint8 class map with a colour table, class names, attribution and (``style``) a QGIS
    style beside it (``<name>.qml``)."""
    if class_map.shape != grid.shape:
        raise ValueError(f"class map shape {class_map.shape} does not match grid shape {grid.shape}")
    with class_map_writer(path, grid, tags, overwrite=overwrite, style=style) as dst:
        dst.write(class_map.astype(np.uint8), 1)
    return Path(path)


def write_rgb(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    grid: Grid,
    tags: Mapping[str, object] | None = None,
    overwrite: bool = False,
    style: bool = True,
) -> Path:
    """Write an RGB uint8 image given as (3, H, W) or (H, W, 3) (and, with ``style``, its QGIS style)."""
    arr = np.asarray(rgb)
    if arr.ndim == 3 and arr.shape[-1] == 3 and arr.shape[0] != 3:
        arr = np.moveaxis(arr, -1, 0)
    if arr.shape != (3, *grid.shape):
        raise ValueError(f"RGB shape {arr.shape} does not match (3, {grid.height}, {grid.width})")
    with rgb_writer(path, grid, tags, overwrite=overwrite, style=style) as dst:
        dst.write(arr.astype(np.uint8))
    return Path(path)


@contextlib.contextmanager
def rgb_writer(
    path: str | os.PathLike[str],
    grid: Grid,
    tags: Mapping[str, object] | None = None,
    overwrite: bool = False,
    style: bool = True,
    cog: bool = False,
) -> Iterator[rasterio.io.DatasetWriter]:
    """An atomic RGB GeoTIFF writer for block-wise output of large mosaics (with a 0-255 QGIS style beside it);
    a COG with average-resampled overviews with ``cog``."""
    with geotiff_writer(
        path, grid, 3, "uint8", tags, ("red", "green", "blue"), overwrite=overwrite, cog=cog,
        overview_resampling="average", photometric="RGB",
    ) as dst:  # fmt: skip
        yield dst
    if style:
        write_style(path, rgb_qml(), overwrite=overwrite)


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


def write_png(path: str | os.PathLike[str], rgb: np.ndarray, overwrite: bool = False) -> Path:
    """Write an (H, W, 3) uint8 array as PNG, atomically."""
    from PIL import Image

    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")
    return Path(path)


def write_class_preview(path: str | os.PathLike[str], class_map: np.ndarray, overwrite: bool = False) -> Path:
    """A colour PNG preview of a class map (class colours from the class table)."""
    return write_png(path, colorize(class_map), overwrite=overwrite)
