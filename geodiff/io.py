"""The one place that reads and writes rasters (GeoTIFF via rasterio, PNG previews via Pillow).

Every output is written atomically: data goes to a temporary file beside the target and is renamed over it only
when complete, so an error or Ctrl-C never leaves a half-written file under the final name. Outputs of several
files (image + mask + styles, a dataset's tiles + manifest) go through one :class:`Transaction`: all or none.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import stat
import tempfile
import uuid
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
        check_name_length(path)
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


# what geodiff's temporary and backup names add to an output's name (".NAME.XXXXXXXX.partial.aux.xml")
_TEMP_NAME_EXTRA = 32


def check_name_length(path: str | os.PathLike[str]) -> None:
    """Refuse a file name too long for its folder's file system, with room for geodiff's temporary names."""
    path = Path(path)
    try:
        name_max = os.pathconf(path.parent if str(path.parent) else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    size = len(os.fsencode(path.name))
    if size + _TEMP_NAME_EXTRA > name_max:
        raise InvalidParameterError(
            f"output name {path.name[:40]}... is {size} bytes long: the folder takes names of at most "
            f"{name_max} bytes and geodiff writes to a temporary name {_TEMP_NAME_EXTRA} bytes longer first; "
            f"choose a name of at most {name_max - _TEMP_NAME_EXTRA} bytes"
        )


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


_DISK_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)
_NO_HARD_LINKS = (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK)


def _write_failed(target: Path, exc: OSError) -> str:
    hint = (
        "; free some disk space and run again"
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        else ""
    )
    return f"writing {target} failed ({exc.strerror or exc}); nothing was written under that name{hint}"


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file a name holds now (device, inode), or None: tells our file from one that appeared meanwhile."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _normal_permissions(path: Path) -> None:
    """mkstemp creates 0600 files; give the output the permissions a normal file would get."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _taken(target: Path) -> OutputError:
    return OutputError(
        f"{target} was created by someone else while geodiff was running: it was kept, and this run's "
        "result discarded; pass --overwrite to replace it, or choose another name"
    )


class _Entry:
    """One file of a transaction: a finished temporary file and the name it is published under."""

    def __init__(self, tmp: Path, target: Path, replace: bool, old: tuple[int, int] | None, optional: bool):
        self.tmp, self.target, self.optional = tmp, target, optional
        self.replace, self.old = replace, old  # replace only the file that was there when the run started
        self.ours = {_identity(tmp)}  # what the name holds once published by us (undo removes only that)
        self.backup: Path | None = None
        self.published = False


class Transaction:
    """Outputs of several files published as one unit.

    Each file is written beside its final name (:meth:`stage`), flushed and verified; :meth:`commit` then
    renames them all. A failure or interrupt before the last rename removes every new file and puts every
    replaced one back, so the names hold either all old or all new files. An existing file is replaced only
    with ``overwrite`` and only if it is the one that was there when its name was claimed (:meth:`claim`,
    else when staging began): a file that appears or changes during the run is kept and the commit refused.
    Use it as a context manager (commits on success, discards on error)."""

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._entries: list[_Entry] = []
        self._claimed: dict[Path, tuple[int, int] | None] = {}
        self._temps: list[Path] = []
        self._made: list[Path] = []

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def _key(self, path: Path) -> Path:
        return Path(os.path.abspath(path))

    def claim(self, paths: Sequence[str | os.PathLike[str]], check: bool = True) -> None:
        """Check output names at the start of a run (``check``) and remember which files they hold (see class
        doc)."""
        for path in check_output_paths(list(paths), self.overwrite) if check else map(Path, paths):
            self._claimed[self._key(path)] = _identity(path)

    def mkdir(self, folder: str | os.PathLike[str]) -> Path:
        """Create an output folder (and missing parents) that :meth:`discard` removes again if it stays empty."""
        folder = Path(folder)
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the folder {folder}: {exc.strerror or exc}") from exc
        self._made.extend(missing)  # deepest first: removed in this order
        return folder

    def _old(self, target: Path) -> tuple[int, int] | None:
        key = self._key(target)
        if key in self._claimed:
            return self._claimed[key]
        return _identity(target)

    def _refuse_twice(self, target: Path) -> None:
        key = self._key(target)
        if any(self._key(e.target) == key for e in self._entries):
            raise InvalidParameterError(
                f"{target} is given for two outputs: choose a different name for each"
            )

    @contextlib.contextmanager
    def stage(
        self,
        path: str | os.PathLike[str],
        verify: Callable[[Path], None] | None = None,
        optional: bool = False,
    ) -> Iterator[Path]:
        """Yield a temporary path beside ``path`` to write; when the block ends it is flushed, verified
        (``verify(tmp)``, e.g. every raster block readable) and queued for :meth:`commit`.

        ``optional``: a sidecar (QGIS style) that is skipped, not an error, when its name is taken.
        Write errors (disk full, permissions) become :class:`~geodiff.errors.OutputError`.
        """
        target = Path(path)
        self._refuse_twice(target)
        if self._key(target) not in self._claimed:
            check_output_paths([target], self.overwrite or optional)
        old = self._old(target)
        try:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        except OSError as exc:
            raise OutputError(f"cannot create a file in {target.parent}: {exc.strerror or exc}") from exc
        os.close(fd)
        tmp = Path(name)
        self._temps.append(tmp)
        try:
            yield tmp
            _fsync(tmp)
            if verify is not None:
                verify(tmp)
            _normal_permissions(tmp)
        except OSError as exc:  # a write hit the disk's limits: remove this file now, the rest on discard
            self._drop(tmp)
            if isinstance(exc, GeodiffError) or exc.errno not in _DISK_ERRORS:
                raise
            raise OutputError(_write_failed(target, exc)) from exc
        except BaseException:
            self._drop(tmp)
            raise
        replace = self.overwrite and old is not None
        self._entries.append(_Entry(tmp, target, replace, old, optional))

    def add(self, tmp: Path, path: str | os.PathLike[str], replace: bool | None = None) -> None:
        """Queue a file already written elsewhere (a staging folder) for publishing as ``path``.

        ``replace`` (default ``overwrite``): whether the file now under ``path`` may be replaced. Refused at
        once if ``tmp`` is on another filesystem, where a rename cannot be atomic."""
        target = Path(path)
        self._refuse_twice(target)
        parent = target.parent
        if parent.is_dir() and os.stat(tmp).st_dev != os.stat(parent).st_dev:
            raise OutputError(
                f"{target.parent} is on another filesystem than the staging folder {tmp.parent}: nothing was "
                "changed; write the output into a folder of the same filesystem"
            )
        old = self._old(target)
        self._temps.append(tmp)
        allowed = self.overwrite if replace is None else replace
        self._entries.append(_Entry(tmp, target, allowed and old is not None, old, optional=False))

    def _drop(self, tmp: Path) -> None:
        for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def commit(self) -> None:
        """Publish every staged file; on any failure put every name back as it was and re-raise."""
        try:
            for entry in self._entries:
                self._check_name(entry)
            for entry in self._entries:
                self._publish(entry)
        except BaseException as exc:  # also KeyboardInterrupt and SIGTERM turned into an exception
            self._undo()
            self.discard()
            if isinstance(exc, OSError) and not isinstance(exc, GeodiffError):
                failed = next((e.target for e in self._entries if not e.published), self._entries[-1].target)
                raise OutputError(_write_failed(failed, exc)) from exc
            raise
        for entry in self._entries:
            if entry.backup is not None:
                with contextlib.suppress(OSError):
                    entry.backup.unlink()
        self.discard()
        for folder in {e.target.parent for e in self._entries}:
            _fsync_dir(folder)

    def discard(self) -> None:
        """Remove every temporary file (published ones are hard links or already renamed)."""
        for tmp in self._temps:
            self._drop(tmp)
        self._temps.clear()
        if not any(e.published for e in self._entries):
            for folder in self._made:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty: what appeared there meanwhile is kept

    def _check_name(self, entry: _Entry) -> None:
        """Refuse before the first rename what would be refused at a later one: nothing half-published."""
        target = entry.target
        now = _identity(target)
        if now is not None and not target.is_file() and not target.is_symlink():
            raise OutputError(
                f"{target} became {_describe(target)} while geodiff was running: nothing was written"
            )
        if now is not None and now != entry.old and not entry.optional:
            raise _taken(target)
        if now is not None and not entry.replace and not entry.optional:
            raise _taken(target)

    def _publish(self, entry: _Entry) -> None:
        tmp, target = entry.tmp, entry.target
        if entry.replace and _identity(target) == entry.old:
            entry.backup = Path(f"{tmp}.old")
            try:
                os.link(target, entry.backup)
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                os.rename(target, entry.backup)  # no hard links here: the name is absent for a moment
            entry.published = True  # from here on, undo puts the backup back
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)  # fails if the name exists, atomically
        except FileExistsError:
            if entry.optional:
                return  # the user's own style is kept
            raise _taken(target) from None
        except OSError as exc:  # no hard links here (some network/FUSE filesystems): reserve the name
            if exc.errno not in _NO_HARD_LINKS:
                raise
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                if entry.optional:
                    return
                raise _taken(target) from None
            entry.ours.add(_identity(target))
            entry.published = True
            os.replace(tmp, target)
            return
        entry.published = True

    def _undo(self) -> None:
        for entry in reversed(self._entries):
            if not entry.published:
                continue
            with contextlib.suppress(OSError):
                if entry.backup is not None:
                    if _identity(entry.target) == _identity(entry.backup):
                        entry.backup.unlink()  # the old file is still there (rename of a hard link is a no-op)
                    else:
                        os.replace(entry.backup, entry.target)
                elif _identity(entry.target) in entry.ours:
                    entry.target.unlink()
            entry.published = False


def folder_transaction(
    out: str | os.PathLike[str],
    names: Sequence[str],
    overwrite: bool,
    ours: Callable[[Path], bool],
    what: str,
) -> Transaction:
    """A transaction for the files ``names`` of the output folder ``out``, checked before any work.

    The folder follows the rules of file outputs: its files are replaced only with ``overwrite`` and only if
    the folder holds ``what`` geodiff wrote (``ours(out)``); other files in it are never touched, and a file
    that appears under one of the names during the run is kept (the commit is refused).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"--out {out} exists and is {'a file' if out.is_file() else _describe(out)}: "
                                    f"give a folder for {what}")  # fmt: skip
    if not out.parent.is_dir():
        raise InvalidParameterError(f"output folder {out.parent} does not exist: create it first")
    present = [n for n in names if (out / n).exists() or (out / n).is_symlink()]
    if present and not overwrite:
        raise InvalidParameterError(
            f"{out} already holds {', '.join(present)}: pass --overwrite to replace, or choose another --out"
        )
    if present and not ours(out):
        raise InvalidParameterError(
            f"{out} holds {', '.join(present)} but not {what} written by geodiff: geodiff will not replace "
            "them; choose another --out"
        )
    writable = out if out.exists() else out.parent
    if not os.access(writable, os.W_OK | os.X_OK):
        raise OutputError(
            f"output folder {writable} is not writable: choose another folder or fix its permissions"
        )
    tx = Transaction(overwrite)
    tx.claim([out / n for n in names], check=False)
    return tx


@contextlib.contextmanager
def staged(
    tx: Transaction | None,
    path: str | os.PathLike[str],
    overwrite: bool = False,
    verify: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """Stage ``path`` in ``tx``, or, without one, publish it alone when the block ends (:func:`atomic_path`)."""
    if tx is not None:
        with tx.stage(path, verify) as tmp:
            yield tmp
    else:
        with atomic_path(path, overwrite, verify) as tmp:
            yield tmp


def publish_folder(tmp: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Swap the complete folder ``tmp`` in as ``dest`` (same parent folder): its files are flushed first, an old
    ``dest`` is moved aside before the rename and removed after it, so ``dest`` never holds a half-written or
    half-deleted folder (an interruption between the two renames leaves the old one under a hidden name)."""
    tmp, dest = Path(tmp), Path(dest)
    for p in tmp.rglob("*"):
        if p.is_file() and not p.is_symlink():
            _fsync(p)
    for d in (*(p for p in tmp.rglob("*") if p.is_dir()), tmp):
        _fsync_dir(d)
    old = None
    try:
        if os.path.lexists(dest):
            old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(dest, old)
        os.rename(tmp, dest)
    except BaseException:  # also Ctrl-C and SIGTERM: the old folder goes back under its name
        if old is not None and not os.path.lexists(dest):
            with contextlib.suppress(OSError):
                os.rename(old, dest)
        raise
    _fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


@contextlib.contextmanager
def staged_folder(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a free name beside ``dest`` to build a folder under (the block creates it); when the block ends it
    is published as ``dest`` (:func:`publish_folder`, replacing an old one whole); on any error or interrupt
    it is removed and ``dest`` is left as it was. Write errors (disk full, permissions) become
    :class:`~geodiff.errors.OutputError`."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        publish_folder(tmp, dest)
    except OSError as exc:
        if isinstance(exc, GeodiffError) or exc.errno not in _DISK_ERRORS:
            raise
        raise OutputError(_write_failed(dest, exc)) from exc
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str],
    overwrite: bool = False,
    verify: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; publish it as ``path`` only if the block succeeds.

    A :class:`Transaction` of one file: flushed, verified (``verify(tmp)``), then renamed; a failure keeps
    any old file and leaves nothing new. An existing ``path`` is replaced only with ``overwrite``; one that
    appears while the block runs is kept. Write errors (disk full, permissions) become
    :class:`~geodiff.errors.OutputError`.
    """
    with Transaction(overwrite) as tx, tx.stage(path, verify) as tmp:
        yield tmp


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


def write_style(
    raster: str | os.PathLike[str], qml: str, overwrite: bool = False, tx: Transaction | None = None
) -> Path | None:
    """Write the QGIS style beside ``raster`` (in ``tx``, published with the raster); an existing style is
    replaced only with ``overwrite`` (the user's own styling of a file they did not ask to replace is kept).
    Returns the path written, if any."""
    path = style_path(raster)
    if path.exists() and not overwrite:
        return None
    if tx is not None:
        with tx.stage(path, optional=True) as tmp:
            tmp.write_text(qml)
        return path
    with Transaction(overwrite) as own, own.stage(path, optional=True) as tmp:
        tmp.write_text(qml)
    return path


def check_style_paths(rasters: Sequence[str | os.PathLike[str] | None]) -> None:
    """Refuse rasters whose QGIS styles would share one file (``z.tif`` and ``z.tiff``: both ``z.qml``)."""
    seen: dict[Path, Path] = {}
    for raster in rasters:
        if raster is None:
            continue
        key = Path(os.path.abspath(style_path(raster)))
        if key in seen:
            raise InvalidParameterError(
                f"{seen[key]} and {raster} would share one QGIS style file {style_path(raster)}: give them "
                "names that differ before the extension"
            )
        seen[key] = Path(raster)


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
    tx: Transaction | None = None,
    **profile: object,
) -> Iterator[rasterio.io.DatasetWriter]:
    """Open an atomic, tiled, compressed GeoTIFF for block-wise writing (``dst.write(arr, window=...)``).

    The file appears under ``path`` only after it was closed, synced and read back complete (see
    :func:`atomic_path`); an existing file is replaced only with ``overwrite``. With ``cog`` the finished
    GeoTIFF is copied into a Cloud-Optimized GeoTIFF with internal overviews (GDAL's COG driver;
    ``overview_resampling`` "average" for imagery, "nearest" for class maps), so large areas open at once.
    With ``tx`` the file is only staged: it is published with the transaction's other files.
    """
    opts = dict(GTIFF_PROFILE)
    opts.update(profile)
    if grid.width < 256 or grid.height < 256:
        opts.pop("blockxsize"), opts.pop("blockysize")
        opts["tiled"] = False

    def verify(tmp: Path) -> None:
        verify_raster(tmp, grid.width, grid.height, count)

    with staged(tx, path, overwrite, verify) as tmp:
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
    tx: Transaction | None = None,
) -> Iterator[rasterio.io.DatasetWriter]:
    """An atomic one-band class-map GeoTIFF (colour table, class names, attribution) for block-wise writing;
    a COG with nearest-neighbour overviews (class ids are not averaged) with ``cog``. Its style and the
    GeoTIFF are published together (in ``tx``, with the transaction's other files)."""
    if tx is None:
        with (
            Transaction(overwrite) as own,
            class_map_writer(path, grid, tags, overwrite, style, cog, own) as dst,
        ):
            yield dst
        return
    all_tags = {**class_table_tags(), **(tags or {})}
    with geotiff_writer(
        path, grid, 1, "uint8", all_tags, ("semantic class",), overwrite=overwrite, cog=cog,
        overview_resampling="nearest", tx=tx, nodata=None,
    ) as dst:  # fmt: skip
        cmap = {c.id: (*c.color, 255) for c in CLASSES}
        cmap[IGNORE] = (0, 0, 0, 0)
        dst.write_colormap(1, cmap)
        dst.update_tags(1, **{f"CLASS_{c.id}": c.name for c in CLASSES})
        yield dst
    if style:
        write_style(path, class_map_qml(), overwrite=overwrite, tx=tx)


def write_class_map(
    path: str | os.PathLike[str],
    class_map: np.ndarray,
    grid: Grid,
    tags: Mapping[str, object] | None = None,
    overwrite: bool = False,
    style: bool = True,
    tx: Transaction | None = None,
) -> Path:
    """Write an (H, W) uint8 class map with a colour table, class names, attribution and (``style``) a QGIS
    style beside it (``<name>.qml``); with ``tx`` staged, to be published with the transaction."""
    if class_map.shape != grid.shape:
        raise ValueError(f"class map shape {class_map.shape} does not match grid shape {grid.shape}")
    with class_map_writer(path, grid, tags, overwrite=overwrite, style=style, tx=tx) as dst:
        dst.write(class_map.astype(np.uint8), 1)
    return Path(path)


def write_rgb(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    grid: Grid,
    tags: Mapping[str, object] | None = None,
    overwrite: bool = False,
    style: bool = True,
    tx: Transaction | None = None,
) -> Path:
    """Write an RGB uint8 image given as (3, H, W) or (H, W, 3) (and, with ``style``, its QGIS style); with
    ``tx`` staged, to be published with the transaction."""
    arr = np.asarray(rgb)
    if arr.ndim == 3 and arr.shape[-1] == 3 and arr.shape[0] != 3:
        arr = np.moveaxis(arr, -1, 0)
    if arr.shape != (3, *grid.shape):
        raise ValueError(f"RGB shape {arr.shape} does not match (3, {grid.height}, {grid.width})")
    with rgb_writer(path, grid, tags, overwrite=overwrite, style=style, tx=tx) as dst:
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
    tx: Transaction | None = None,
) -> Iterator[rasterio.io.DatasetWriter]:
    """An atomic RGB GeoTIFF writer for block-wise output of large mosaics (with a 0-255 QGIS style beside it,
    published together; in ``tx``, with the transaction's other files); a COG with average-resampled
    overviews with ``cog``."""
    if tx is None:
        with Transaction(overwrite) as own, rgb_writer(path, grid, tags, overwrite, style, cog, own) as dst:
            yield dst
        return
    with geotiff_writer(
        path, grid, 3, "uint8", tags, ("red", "green", "blue"), overwrite=overwrite, cog=cog,
        overview_resampling="average", tx=tx, photometric="RGB",
    ) as dst:  # fmt: skip
        yield dst
    if style:
        write_style(path, rgb_qml(), overwrite=overwrite, tx=tx)


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


def write_png(
    path: str | os.PathLike[str], rgb: np.ndarray, overwrite: bool = False, tx: Transaction | None = None
) -> Path:
    """Write an (H, W, 3) uint8 array as PNG, atomically (with ``tx``: staged in it)."""
    from PIL import Image

    with staged(tx, path, overwrite) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")
    return Path(path)


def write_class_preview(
    path: str | os.PathLike[str],
    class_map: np.ndarray,
    overwrite: bool = False,
    tx: Transaction | None = None,
) -> Path:
    """A colour PNG preview of a class map (class colours from the class table)."""
    return write_png(path, colorize(class_map), overwrite=overwrite, tx=tx)
