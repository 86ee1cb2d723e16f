"""Reading paired (image, mask) tiles for evaluation and the augmentation experiment.

Accepted layouts (``DATASET`` is a folder):

- ``DATASET/images/<name>.{png,jpg,tif}`` + ``DATASET/masks/<name>.{png,tif}`` (the layout ``geodiff augment``
  writes; masks hold class ids 0..4, 255 = ignore);
- the same pair of folders under ``DATASET/train``, ``DATASET/val`` and/or ``DATASET/test`` (explicit splits);
- nested ``DATASET/<part>/images`` + ``masks`` folders (e.g. the raw Dubai data, with ``colors="dubai_aerial"``);
- a dataset built by ``geodiff dataset`` (``manifest.json`` + ``tiles.npz``, :mod:`geodiff.train.dataset`),
  whose fixed validation split (whole source images) is used as the held-out split.

Without explicit splits, :func:`load_splits` makes a deterministic split by file name.
Images larger than the tile size are cut into non-overlapping tiles (the remainder is dropped).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from geodiff.classes import IGNORE, NUM_CLASSES
from geodiff.errors import DataError, InputNotFoundError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff")
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Pairs:
    """Stacked tiles: ``images`` (N, T, T, 3) uint8, ``masks`` (N, T, T) uint8, ``names`` per tile."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: np.ndarray | list[int]) -> Pairs:
        idx = list(idx)
        return Pairs(self.images[idx], self.masks[idx], [self.names[i] for i in idx])

    @staticmethod
    def concat(*parts: Pairs) -> Pairs:
        parts = tuple(p for p in parts if len(p))
        return Pairs(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.masks for p in parts]),
            [n for p in parts for n in p.names],
        )


def _read_array(path: Path, rgb: bool = False) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            arr = src.read()
        return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr[:3], 0, -1)
    with Image.open(path) as im:
        if rgb:
            return np.asarray(im.convert("RGB"))
        if im.mode == "P":  # palette PNGs store class ids as indices
            return np.asarray(im)
        return np.asarray(im.convert("RGB") if im.mode not in ("L", "I", "I;16") else im)


def _index(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in suffixes and not p.name.startswith(".")
    }


def has_pairs(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def _file_pairs(root: Path) -> list[tuple[Path, Path, str]]:
    """(image, mask, name) for ``root/images`` + ``root/masks``, or nested ``*/images`` + ``*/masks`` folders."""
    if has_pairs(root):
        imgs, msks = _index(root / "images", IMAGE_SUFFIXES), _index(root / "masks", MASK_SUFFIXES)
        missing = sorted(set(imgs) - set(msks))
        if missing:
            raise DataError(
                f"{len(missing)} images in {root / 'images'} have no mask (e.g. {missing[0]}): add masks/<name>.png"
            )
        return [(p, msks[stem], stem) for stem, p in imgs.items()]
    from geodiff.train.dataset import find_pairs  # nested layouts such as tile_N/images + tile_N/masks

    try:
        found = find_pairs(root)
    except DataError as exc:
        raise DataError(
            f"{root} has no images/ and masks/ folders: expected images/<name>.png + masks/<name>.png ({exc})"
        ) from exc
    return [(i, m, str(i.relative_to(root).with_suffix("")).replace(os.sep, "__")) for i, m in found]


def load_pairs(
    folder: str | os.PathLike[str], tile: int = 256, limit: int | None = None, colors: str | None = None
) -> Pairs:
    """Read image/mask pairs under ``folder`` into tiles of ``tile`` x ``tile`` pixels.

    ``colors`` names a colour table (:func:`geodiff.train.colors.get_table`, e.g. ``"dubai_aerial"``) for
    RGB colour masks; single-band masks are class ids already.
    """
    root = Path(folder)
    if not root.exists():
        raise InputNotFoundError(f"dataset folder {root} does not exist")
    images, masks, names = [], [], []
    for ipath, mpath, stem in _file_pairs(root):
        img, msk = _read_array(ipath, rgb=True), _read_array(mpath, rgb=colors is not None)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise DataError(f"{ipath} is not an RGB image (shape {img.shape})")
        if msk.ndim == 3:
            if colors is None:
                raise DataError(
                    f"{mpath} is a colour mask: name its colour table (--mask-colors dubai_aerial or geodiff), "
                    "or convert masks to class ids"
                )
            from geodiff.train.colors import get_table, map_colors

            msk, _ = map_colors(msk[..., :3], get_table(colors), source=str(mpath))
        if img.shape[:2] != msk.shape:
            raise DataError(f"{ipath} is {img.shape[:2]} but its mask is {msk.shape}")
        msk = msk.astype(np.uint8)
        bad = np.setdiff1d(np.unique(msk), [*range(NUM_CLASSES), IGNORE])
        if bad.size:
            raise DataError(
                f"{mpath} has values {bad.tolist()} that are not class ids 0..{NUM_CLASSES - 1} or 255"
            )
        h, w = msk.shape
        if h < tile or w < tile:
            continue  # too small for one tile: skipped, like the dataset builder does
        for r in range(0, h - tile + 1, tile):
            for c in range(0, w - tile + 1, tile):
                images.append(img[r : r + tile, c : c + tile])
                masks.append(msk[r : r + tile, c : c + tile])
                names.append(stem if (h, w) == (tile, tile) else f"{stem}_r{r}_c{c}")
                if limit is not None and len(names) >= limit:
                    return Pairs(np.stack(images), np.stack(masks), names)
    if not names:
        raise DataError(f"no image/mask pairs of at least {tile}x{tile} px found in {root}")
    return Pairs(np.stack(images), np.stack(masks), names)


def _hash_fraction(name: str) -> float:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "little") / 2**32


def load_splits(
    dataset: str | os.PathLike[str], tile: int = 256, test_fraction: float = 0.2, colors: str | None = None
) -> dict[str, Pairs]:
    """``{"train": Pairs, "test": Pairs}`` (and ``"val"`` when present) from a dataset folder.

    Explicit ``train/``/``val/``/``test/`` subfolders are used as they are (``test`` falls back to ``val``).
    Otherwise tiles are assigned by a hash of their source file name, so every tile cut from one source image
    lands in the same split (no leakage between neighbouring crops) and the split is stable across runs.
    """
    root = Path(dataset)
    if not root.exists():
        raise InputNotFoundError(f"dataset folder {root} does not exist")
    if (root / "tiles.npz").is_file() and (root / "manifest.json").is_file():
        return _load_built(root, tile)
    explicit = {s: root / s for s in SPLIT_NAMES if has_pairs(root / s)}
    if explicit:
        out = {s: load_pairs(p, tile, colors=colors) for s, p in explicit.items()}
        if "test" not in out and "val" in out:
            out["test"] = out.pop("val")
        if "train" not in out or "test" not in out:
            raise DataError(f"{root} has split folders {sorted(explicit)}: need train/ and test/ (or val/)")
        return out
    pairs = load_pairs(root, tile, colors=colors)
    source = [re.sub(r"_r\d+_c\d+$", "", n) for n in pairs.names]
    is_test = np.array([_hash_fraction(s) < test_fraction for s in source])
    if is_test.all() or not is_test.any():  # tiny datasets: fall back to every 5th tile
        is_test = np.arange(len(pairs)) % max(int(round(1 / test_fraction)), 2) == 0
    return {"train": pairs.subset(np.flatnonzero(~is_test)), "test": pairs.subset(np.flatnonzero(is_test))}


def _load_built(root: Path, tile: int) -> dict[str, Pairs]:
    """Splits of a ``geodiff dataset`` folder: split flag 0 = train, 1 = validation (held out)."""
    from geodiff.train.dataset import load_dataset

    manifest, images, masks, split = load_dataset(root)
    if images.shape[1] != tile:
        raise DataError(f"{root} has {images.shape[1]} px tiles but the model works on {tile} px tiles")
    names = list(manifest.get("tiles") or [f"tile{i}" for i in range(len(split))])
    pairs = Pairs(images, masks, names)
    train, test = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
    if not len(train) or not len(test):
        raise DataError(f"{root} needs both training and validation tiles (has {len(train)} / {len(test)})")
    return {"train": pairs.subset(train), "test": pairs.subset(test)}
