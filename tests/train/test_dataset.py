"""``geodiff dataset build``: colour-mask folders, orthophoto + vector, the torch Dataset, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geodiff.classes import BUILDING, IGNORE, ROAD, WATER
from geodiff.errors import DataError, InputNotFoundError
from geodiff.train.colors import DUBAI_AERIAL, map_colors
from geodiff.train.dataset import TileDataset, build_from_mask_folder, load_dataset

from mask_folder import make_folder


def test_build_from_generated_mask_folder(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", n=4, size=(600, 300))
    m = build_from_mask_folder(src, tmp_path / "ds", tile_size=128, val_fraction=0.25)
    assert m["num_tiles"] == 4 * 4 * 2 and m["num_val"] == 8
    assert m["resolution_m"] > 0 and len(m["classes"]) == 5
    manifest, images, masks, split = load_dataset(tmp_path / "ds")
    assert images.shape == (32, 128, 128, 3) and masks.shape == (32, 128, 128)
    assert set(np.unique(masks)) <= {0, BUILDING, ROAD, WATER, IGNORE}
    assert (
        json.loads((tmp_path / "ds" / "manifest.json").read_text())["val_sources"] == manifest["val_sources"]
    )
    # the validation split is fixed: rebuilding gives the same one
    m2 = build_from_mask_folder(src, tmp_path / "ds2", tile_size=128, val_fraction=0.25)
    assert m2["val_sources"] == m["val_sources"]

    ds = TileDataset(tmp_path / "ds", "train", crop=64)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["class_map"].shape == (64, 64)
    assert -1 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    val = TileDataset(tmp_path / "ds", "val", crop=None, augment=False)
    assert len(val) == 8 and len(ds) == 24


def test_augmentation_keeps_image_and_map_aligned(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", n=1, size=(128, 128), noise=False)
    # make the image equal to the mask so any misalignment shows
    mask = np.asarray(Image.open(src / "tile_1" / "masks" / "part_0.png"))
    Image.fromarray(mask).save(src / "tile_1" / "images" / "part_0.png")
    (src / "tile_1" / "images" / "part_0.jpg").unlink()
    build_from_mask_folder(src, tmp_path / "ds", tile_size=128, val_fraction=0.0)
    ds = TileDataset(tmp_path / "ds", "all", crop=96)
    for _ in range(8):
        item = ds[0]
        img = ((item["image"] + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.uint8)
        # tiles are stored as JPEG, so edges blur: compare by nearest colour
        ids, _ = map_colors(img, DUBAI_AERIAL, tolerance=60, max_unknown_fraction=1.0)
        assert (ids == item["class_map"].numpy()).mean() > 0.95


def test_unknown_colours_reported(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", n=1)
    mask = np.asarray(Image.open(src / "tile_1" / "masks" / "part_0.png")).copy()
    mask[:50] = (10, 250, 10)
    Image.fromarray(mask).save(src / "tile_1" / "masks" / "part_0.png")
    with pytest.raises(DataError, match="#0AFA0A"):
        build_from_mask_folder(src, tmp_path / "ds")


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        build_from_mask_folder(tmp_path / "absent", tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images/ folder"):
        build_from_mask_folder(tmp_path / "empty", tmp_path / "ds")
    src = make_folder(tmp_path / "a", n=2)
    (src / "tile_1" / "masks" / "part_1.png").unlink()
    with pytest.raises(DataError, match="no mask.*part_1"):
        build_from_mask_folder(src, tmp_path / "ds")
    src = make_folder(tmp_path / "b", n=1)
    Image.new("RGB", (100, 100)).save(src / "tile_1" / "masks" / "part_0.png")
    with pytest.raises(DataError, match="must match"):
        build_from_mask_folder(src, tmp_path / "ds")
    src = make_folder(tmp_path / "c", n=1)
    for f in (src / "tile_1" / "images").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no images"):
        build_from_mask_folder(src, tmp_path / "ds")
    shutil.rmtree(src / "tile_1" / "masks")
    with pytest.raises(DataError, match="masks"):
        build_from_mask_folder(src, tmp_path / "ds")
    with pytest.raises(DataError, match="not a geodiff dataset"):
        TileDataset(tmp_path / "c")


@pytest.mark.shared_data
def test_build_from_real_dubai_images(dubai_aerial: Path, tmp_path: Path) -> None:
    src = tmp_path / "dubai" / "tile_2"
    for sub in ("images", "masks"):
        (src / sub).mkdir(parents=True)
    for name in ("image_part_001", "image_part_002"):
        shutil.copy(dubai_aerial / "tile_2" / "images" / f"{name}.jpg", src / "images")
        shutil.copy(dubai_aerial / "tile_2" / "masks" / f"{name}.png", src / "masks")
    m = build_from_mask_folder(tmp_path / "dubai", tmp_path / "ds", val_fraction=0.5)
    assert m["num_tiles"] == 4 and m["num_val"] == 2  # 509x544 px -> 1x2 tiles of 256 per image
    assert m["unknown_colors_as_ignore"] == {}
    assert sum(v for k, v in m["class_fractions"].items()) == pytest.approx(1, abs=0.01)


def test_build_from_orthophoto_and_vector(tmp_path: Path) -> None:
    import geopandas as gpd
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import box

    # a 0.5 m/px UTM orthophoto of 300 x 300 m, resampled to 1 m/px
    x0, y0 = 500_000.0, 2_770_300.0
    rgb = np.random.default_rng(0).integers(0, 255, (3, 600, 600), dtype=np.uint8)
    tif = tmp_path / "ortho.tif"
    with rasterio.open(
        tif,
        "w",
        driver="GTiff",
        width=600,
        height=600,
        count=3,
        dtype="uint8",
        crs="EPSG:32640",
        transform=from_origin(x0, y0, 0.5, 0.5),
    ) as dst:
        dst.write(rgb)
    feats = gpd.GeoDataFrame(
        {"class": ["building", "water"]},
        geometry=[box(x0 + 20, y0 - 120, x0 + 120, y0 - 20), box(x0 + 150, y0 - 290, x0 + 290, y0 - 150)],
        crs="EPSG:32640",
    ).to_crs("EPSG:4326")
    vec = tmp_path / "feats.geojson"
    feats.to_file(vec, driver="GeoJSON")
    from geodiff.train.dataset import build_from_orthophoto

    m = build_from_orthophoto(
        tif, tmp_path / "ds", vector_path=vec, resolution_m=1.0, tile_size=128, val_fraction=0.25
    )
    assert m["resolution_m"] == 1.0 and m["num_tiles"] >= 4
    _, images, masks, _ = load_dataset(tmp_path / "ds")
    assert (masks == BUILDING).any() and (masks == WATER).any()


def test_cli_build(tmp_path: Path) -> None:
    from geodiff.cli import main

    src = make_folder(tmp_path / "src", n=2)
    args = ["dataset", "build", "--images", str(src), "--out", str(tmp_path / "ds"), "--progress", "none"]
    assert main(args + ["--val-fraction", "0.5"]) == 0
    assert (tmp_path / "ds" / "manifest.json").exists()
    assert main(args) == 2  # exists: refused without --overwrite
    assert main(args + ["--overwrite"]) == 0
    assert main(["dataset", "build", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 3
