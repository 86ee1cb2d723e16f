"""``geodiff change``: the after image differs from BEFORE only around the edit (tiny model, tiny town)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import geodiff.change as change_mod
from geodiff.change import change_area, change_code, plan_change, synthesize_change
from geodiff.classes import BUILDING, ROAD
from geodiff.cli import main
from geodiff.errors import InvalidParameterError, ModelError
from geodiff.io import read_raster, write_class_map
from geodiff.settings import get_settings
from geodiff.synth import synthesize

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import make_tiny_model  # noqa: E402
from town import TOWN, TOWN_BBOX  # noqa: E402

FAST = dict(steps=2, device="cpu", batch_size=16)


@pytest.fixture(scope="module")
def before(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("change")
    model = make_tiny_model(root / "tiny")
    out = root / "before.tif"
    synthesize(TOWN_BBOX, out, osm_path=TOWN, model=model, seed=5, **FAST)
    return out, model


def _edited_map(before: Path, path: Path, edit) -> Path:
    mask, grid, _ = read_raster(before.with_name(before.stem + ".mask.tif"))
    new = mask[0].copy()
    edit(new)
    write_class_map(path, new, grid)
    return path


def _add_building(m: np.ndarray) -> None:
    m[40:50, 60:75] = BUILDING


def _add_road(m: np.ndarray) -> None:
    m[5:150, 100:104] = ROAD  # a long north-south road: several window rows


def _outside_and_area(before: Path, result) -> tuple[np.ndarray, np.ndarray]:
    a, _, _ = read_raster(result.image_path)
    b, _, _ = read_raster(before)
    old, _, _ = read_raster(result.plan.before_mask_path)
    new, _, _ = read_raster(result.mask_path)
    area, _ = change_area(old[0] != new[0], result.plan.margin_px)
    return np.abs(a.astype(int) - b).max(0), area


def test_only_the_changed_area_differs_and_costs_few_windows(before, tmp_path):
    src, _ = before
    edited = _edited_map(src, tmp_path / "edited.tif", _add_building)
    res = synthesize_change(src, tmp_path / "after.tif", map_path=edited, **{"device": "cpu"})
    diff, area = _outside_and_area(src, res)
    assert diff[~area].max() == 0  # bit for bit outside the change + margin
    assert diff[area].mean() > 1  # and new content inside
    assert res.windows <= 4 < res.plan.synth.layout.count
    change, _, ctags = read_raster(res.change_path)
    old, _, _ = read_raster(res.plan.before_mask_path)
    new, _, mtags = read_raster(res.mask_path)
    np.testing.assert_array_equal(change[0], change_code(old[0], new[0]))
    assert (change[0] > 0).sum() == res.changed_pixels > 0 and "CHANGE_CODES" in ctags
    assert mtags["SEED"] == "5" and mtags["CHANGE_OF"] == "before.tif"
    qml = res.change_path.with_suffix(".qml").read_text()
    assert "vegetation -&gt; building" in qml or "vegetation -> building" in qml


def test_deterministic_and_chainable(before, tmp_path):
    src, _ = before
    edited = _edited_map(src, tmp_path / "edited.tif", _add_building)
    one = synthesize_change(src, tmp_path / "a.tif", map_path=edited, device="cpu")
    two = synthesize_change(src, tmp_path / "b.tif", map_path=edited, device="cpu")
    np.testing.assert_array_equal(read_raster(one.image_path)[0], read_raster(two.image_path)[0])
    # an after image is a BEFORE too: the same map again changes nothing
    again = synthesize_change(one.image_path, tmp_path / "c.tif", map_path=edited, device="cpu")
    assert again.windows == 0
    np.testing.assert_array_equal(read_raster(again.image_path)[0], read_raster(one.image_path)[0])


def _canvas_area(res):
    from geodiff.synth import global_origin

    plan = res.plan.synth
    lay = plan.layout
    _, area = _outside_and_area(res.plan.before_path, res)
    g_row, g_col = global_origin(plan.grid)
    canvas = np.zeros((lay.height, lay.width), bool)
    r, c = g_row - lay.canvas_row, g_col - lay.canvas_col
    canvas[r : r + area.shape[0], c : c + area.shape[1]] = area
    return canvas, plan, lay.overlap // 2


def test_strips_match_a_single_strip_run(before, tmp_path):
    src, _ = before
    edited = _edited_map(src, tmp_path / "edited.tif", _add_road)
    one = synthesize_change(src, tmp_path / "one.tif", map_path=edited, device="cpu")
    many = synthesize_change(
        src,
        tmp_path / "many.tif",
        map_path=edited,
        device="cpu",
        settings=get_settings(max_strip_pixels=3000),
    )
    d_one, area = _outside_and_area(src, one)
    d_many, _ = _outside_and_area(src, many)
    assert d_one[~area].max() == 0 and d_many[~area].max() == 0
    a, b = read_raster(one.image_path)[0].astype(int), read_raster(many.image_path)[0].astype(int)
    assert max(len(change_mod._region_strips(many.plan.synth, r, get_settings(max_strip_pixels=3000)))
               for r in change_mod.change_regions(*_canvas_area(many))) > 1  # fmt: skip
    # strips see only their own rows, so the new content differs a little near strip edges, never outside
    assert np.abs(a - b).max(0)[area].mean() < 0.5 * d_one[area].mean()


def test_vector_source_after_map(before, tmp_path):
    import geopandas as gpd
    import shapely

    from geodiff.osm import load_features

    src, model = before
    feats = load_features(TOWN_BBOX, osm_path=TOWN)
    base = tmp_path / "base.geojson"
    feats.assign(**{"class": feats["class_id"]})[["class", "geometry"]].to_file(base)
    before_v = tmp_path / "before_v.tif"
    synthesize(TOWN_BBOX, before_v, vector_path=base, model=model, seed=2, **FAST)
    w, s, e, n = TOWN_BBOX
    house = shapely.box(w + 0.4 * (e - w), s + 0.4 * (n - s), w + 0.45 * (e - w), s + 0.45 * (n - s))
    edited = tmp_path / "edited.geojson"
    extra = gpd.GeoDataFrame({"class": [BUILDING]}, geometry=[house], crs="EPSG:4326")
    gpd.GeoDataFrame(
        {"class": [*feats["class_id"], BUILDING]}, geometry=[*feats.geometry, house], crs="EPSG:4326"
    ).to_file(edited)
    assert len(extra) == 1
    res = synthesize_change(before_v, tmp_path / "after.tif", vector_path=edited, device="cpu")
    diff, area = _outside_and_area(before_v, res)
    assert res.changed_pixels > 0 and diff[~area].max() == 0
    # only the edit, painted over BEFORE's map (what the QGIS algorithm sends): the same after map
    only = tmp_path / "only.geojson"
    extra.to_file(only)
    args = ["change", "--before", str(before_v), "--edits", str(only), "--out", str(tmp_path / "edits.tif")]
    assert main([*args, "--device", "cpu", "--progress", "none"]) == 0
    np.testing.assert_array_equal(read_raster(tmp_path / "edits.mask.tif")[0], read_raster(res.mask_path)[0])
    np.testing.assert_array_equal(read_raster(tmp_path / "edits.tif")[0], read_raster(res.image_path)[0])


def test_mismatched_before_is_refused_with_one_line(before, tmp_path, capsys):
    import rasterio

    src, _ = before
    edited = _edited_map(src, tmp_path / "edited.tif", _add_building)
    other_model = make_tiny_model(tmp_path / "other", seed=1)
    with pytest.raises(ModelError, match="made by the model"):
        plan_change(src, tmp_path / "x.tif", map_path=edited, model=other_model, device="cpu")
    # shifted by half a pixel: not a geodiff grid
    shifted = tmp_path / "shifted.tif"
    shifted.write_bytes(src.read_bytes())
    with rasterio.open(shifted, "r+") as ds:
        ds.transform = ds.transform @ ds.transform.translation(0.5, 0)
    assert main(["change", "--before", str(shifted), "--map", str(edited), "--out", str(tmp_path / "y.tif"),
                 "--device", "cpu", "--progress", "none"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error:") and "grid" in err and "\n" not in err
    # a --map on another grid
    small = tmp_path / "small.tif"
    mask, grid, _ = read_raster(src.with_name("before.mask.tif"))
    write_class_map(small, mask[0, 1:, 1:], grid.window(1, 1, grid.height - 1, grid.width - 1))
    with pytest.raises(InvalidParameterError, match="not a class map on --before's grid"):
        plan_change(src, tmp_path / "z.tif", map_path=small, device="cpu")
    # not a geodiff output at all
    assert main(["change", "--before", str(small), "--map", str(edited), "--out", str(tmp_path / "w.tif"),
                 "--progress", "none"]) == 2  # fmt: skip
    assert not list(tmp_path.glob("[xyzw].*"))


def test_nothing_written_on_failure_or_without_overwrite(before, tmp_path, monkeypatch):
    src, _ = before
    edited = _edited_map(src, tmp_path / "edited.tif", _add_building)
    out = tmp_path / "after.tif"

    def boom(*a, **k):
        raise RuntimeError("interrupted in the middle")

    monkeypatch.setattr(change_mod, "compute_region", boom)
    with pytest.raises(RuntimeError):
        synthesize_change(src, out, map_path=edited, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.qml", "edited.tif"]
    monkeypatch.undo()
    (tmp_path / "after.change.tif").write_bytes(b"mine")
    args = ["change", "--before", str(src), "--map", str(edited), "--out", str(out), "--progress", "none"]
    assert main([*args, "--device", "cpu"]) == 2
    assert not out.exists() and (tmp_path / "after.change.tif").read_bytes() == b"mine"
    assert main([*args, "--device", "cpu", "--overwrite"]) == 0
    assert out.exists() and (tmp_path / "after.change.tif").read_bytes()[:2] in (b"II", b"MM")
