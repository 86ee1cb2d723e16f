"""Training augmentations for OSM-drawn maps: zoom and OSM-style redrawing of hand-labelled class maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geodiff.classes import BACKGROUND, BUILDING, IGNORE, ROAD, VEGETATION, WATER
from geodiff.errors import ConfigError
from geodiff.train.config import parse_config
from geodiff.train.map_augment import (
    STANDARD_ROAD_WIDTHS_M,
    MapAugment,
    augment_pair,
    osm_style,
    road_centre_lines,
    zoom,
)


def _band(width: int, size: int = 96) -> np.ndarray:
    road = np.zeros((size, size), bool)
    top = (size - width) // 2
    road[top : top + width, :] = True
    return road


@pytest.mark.parametrize(("width", "expected_m"), [(24, 22.0), (8, 7.0), (13, 14.0)])
def test_wide_road_becomes_its_centre_line_at_the_nearest_standard_width(
    width: int, expected_m: float
) -> None:
    assert expected_m in STANDARD_ROAD_WIDTHS_M
    lines = road_centre_lines(_band(width), resolution_m=1.0)
    # away from the tile's ends, every column is one run of the standard width, centred on the old band
    cols = lines[:, 20:-20]
    widths = cols.sum(0)
    assert abs(np.median(widths) - expected_m) <= 1.5
    centre = np.mean([np.nonzero(c)[0].mean() for c in cols.T])
    assert abs(centre - (96 - 1) / 2) <= 1.0


def test_road_widths_scale_with_resolution() -> None:
    # the same 8 m road at 0.5 m/px is 16 px wide and snaps to 7 m = 14 px
    lines = road_centre_lines(_band(16), resolution_m=0.5)
    assert abs(np.median(lines[:, 20:-20].sum(0)) - 14) <= 1.5


def test_osm_style_keeps_buildings_over_roads_and_ignore_as_it_was() -> None:
    m = np.full((96, 96), BACKGROUND, np.uint8)
    m[40:56, :] = ROAD  # a 16 px road crossing
    m[30:50, 10:40] = BUILDING  # a building over part of it
    m[0:10, 0:10] = IGNORE
    out = osm_style(m, np.random.default_rng(0), drop_prob=0.0)
    assert (out[m == IGNORE] == IGNORE).all()
    # the building is kept (squared, not dropped) and no road pixel was painted on it
    assert (out[32:48, 12:38] == BUILDING).all()
    # road pixels the narrower centre line no longer covers became background, not another class
    lost = (m == ROAD) & (out != ROAD) & (m != BUILDING)
    assert lost.any() and (out[lost] == BACKGROUND).all()


def test_osm_style_drops_whole_features_and_small_ones() -> None:
    m = np.full((96, 96), BACKGROUND, np.uint8)
    m[5:25, 5:25] = BUILDING
    m[5:25, 60:80] = VEGETATION
    m[60:80, 5:25] = WATER
    m[90:92, 90:92] = BUILDING  # 4 px: a shed, never mapped
    kept = osm_style(m, np.random.default_rng(0), drop_prob=0.0)
    assert (kept[90:92, 90:92] != BUILDING).all()
    assert (kept[10:20, 10:20] == BUILDING).all() and (kept[10:20, 65:75] == VEGETATION).all()
    dropped = osm_style(m, np.random.default_rng(0), drop_prob=1.0)
    for r, c, cls in ((10, 10, BUILDING), (10, 65, VEGETATION), (65, 10, WATER)):
        assert dropped[r, c] in (BACKGROUND, IGNORE) and not (dropped == cls).any()


def test_osm_style_is_a_function_of_the_generator() -> None:
    rng = np.random.default_rng(3)
    m = rng.integers(0, 5, (64, 64)).astype(np.uint8).repeat(2, 0).repeat(2, 1)
    a = osm_style(m, np.random.default_rng(7))
    b = osm_style(m, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, m)


def test_zoom_resamples_a_larger_or_smaller_square_to_the_crop() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, (256, 256)).astype(np.uint8)
    mask[:8] = IGNORE
    for scale in (0.7, 1.0, 1.6, 5.0):
        img, m = zoom(image, mask, 96, scale, np.random.default_rng(1))
        assert img.shape == (96, 96, 3) and m.shape == (96, 96)
        assert img.flags.writeable and m.flags.writeable
        assert set(np.unique(m)) <= set(np.unique(mask))  # nearest neighbour: no averaged ids
    # scale 1 is a plain crop: the pixels are the tile's own
    img, m = zoom(image, mask, 96, 1.0, np.random.default_rng(1))
    r, c = np.random.default_rng(1).integers(0, 256 - 96 + 1, size=2)
    np.testing.assert_array_equal(img, image[r : r + 96, c : c + 96])


def test_augment_pair_applies_nothing_at_zero_probability() -> None:
    image = np.zeros((256, 256, 3), np.uint8)
    mask = np.zeros((256, 256), np.uint8)
    assert augment_pair(image, mask, 96, MapAugment(), np.random.default_rng(0)) is None
    out = augment_pair(image, mask, 96, MapAugment(zoom_prob=1.0), np.random.default_rng(0))
    assert out is not None and out[0].shape == (96, 96, 3)


@pytest.fixture
def built_dataset(tmp_path):
    from geodiff.train.dataset import Tile, write_dataset

    rng = np.random.default_rng(0)
    tiles = []
    for k in range(3):
        mask = np.full((64, 64), BACKGROUND, np.uint8)
        mask[20:36, :] = ROAD
        mask[4 + k : 18, 40:60] = BUILDING
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        tiles.append(Tile(image, mask, f"src{k}", 0, 0))
    write_dataset(tmp_path / "ds", tiles, {"src2"}, {"resolution_m": 1.0})
    return tmp_path / "ds"


def test_dataset_batches_with_map_augment(built_dataset) -> None:
    from geodiff.train.dataset import TileDataset

    plain = TileDataset(built_dataset, "train", crop=32)
    inactive = TileDataset(built_dataset, "train", crop=32, map_augment=MapAugment())
    styled = TileDataset(
        built_dataset, "train", crop=32, map_augment=MapAugment(zoom_prob=1.0, osm_style_prob=1.0)
    )
    draw = [ds.sample(4, torch.Generator().manual_seed(5)) for ds in (plain, inactive, styled)]
    # inactive settings leave the random stream and so the batches exactly as before
    assert torch.equal(draw[0]["image"], draw[1]["image"])
    assert torch.equal(draw[0]["class_map"], draw[1]["class_map"])
    assert not torch.equal(draw[0]["image"], draw[2]["image"])
    again = styled.sample(4, torch.Generator().manual_seed(5))
    assert torch.equal(again["image"], draw[2]["image"]) and torch.equal(
        again["class_map"], draw[2]["class_map"]
    )
    assert draw[2]["image"].shape == (4, 3, 32, 32)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"zoom_prob": 1.5}, "zoom_prob"),
        ({"osm_style_prob": -0.1}, "osm_style_prob"),
        ({"zoom_min": 2.0, "zoom_max": 1.0}, "zoom_min"),
        ({"zoom_min": 0.0}, "zoom_min"),
    ],
)
def test_config_rejects_bad_augment_settings(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"data": {"path": "runs/data/x", **data}})
