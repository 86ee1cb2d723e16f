import numpy as np
import pytest
import rasterio
from pyproj import CRS

from geodiff import ATTRIBUTION
from geodiff.classes import CLASSES
from geodiff.errors import CorruptFileError, InputNotFoundError, InvalidParameterError
from geodiff.grid import BBox, grid_for_bbox
from geodiff.io import atomic_path, read_raster, write_class_map, write_class_preview, write_rgb


@pytest.fixture
def grid():
    return grid_for_bbox(BBox(370000, 4840000, 370300, 4840200, crs=CRS.from_epsg(32632)), 1.0)


def test_class_map_round_trip_with_colour_table_and_tags(tmp_path, grid):
    cm = np.random.default_rng(0).integers(0, 5, grid.shape, dtype=np.uint8)
    path = write_class_map(tmp_path / "map.tif", cm, grid, tags={"seed": 3})
    arr, g2, tags = read_raster(path)
    np.testing.assert_array_equal(arr[0], cm)
    assert g2.crs.to_epsg() == 32632 and g2.transform == grid.transform
    assert tags["ATTRIBUTION"] == ATTRIBUTION and tags["SEED"] == "3"
    assert tags["CLASSES"].startswith("0:background,1:building")
    with rasterio.open(path) as src:
        assert src.profile["compress"] == "deflate"
        assert src.colormap(1)[1][:3] == CLASSES[1].color
        assert src.descriptions == ("semantic class",)


def test_rgb_accepts_both_layouts(tmp_path, grid):
    rgb = np.random.default_rng(1).integers(0, 255, (*grid.shape, 3), dtype=np.uint8)
    write_rgb(tmp_path / "a.tif", rgb, grid)
    write_rgb(tmp_path / "b.tif", np.moveaxis(rgb, -1, 0), grid)
    a, _, _ = read_raster(tmp_path / "a.tif")
    b, _, _ = read_raster(tmp_path / "b.tif")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.moveaxis(a, 0, -1), rgb)


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path, grid):
    target = tmp_path / "out.tif"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target, overwrite=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_interrupt_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_output_errors(tmp_path, grid):
    with pytest.raises(InvalidParameterError, match="does not exist"):
        write_class_map(tmp_path / "missing" / "x.tif", np.zeros(grid.shape, np.uint8), grid)
    with pytest.raises(InvalidParameterError, match="folder"):
        write_class_map(tmp_path, np.zeros(grid.shape, np.uint8), grid)


def test_read_errors(tmp_path):
    with pytest.raises(InputNotFoundError):
        read_raster(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(CorruptFileError):
        read_raster(bad)


def test_preview_png(tmp_path):
    from PIL import Image

    cm = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    write_class_preview(tmp_path / "p.png", cm)
    img = np.asarray(Image.open(tmp_path / "p.png"))
    assert tuple(img[0, 1]) == CLASSES[1].color and tuple(img[1, 1]) == CLASSES[3].color


def test_outputs_get_normal_permissions(tmp_path, grid):
    import os
    import stat

    path = write_class_map(tmp_path / "m.tif", np.zeros(grid.shape, np.uint8), grid)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
