"""End-to-end synthesis on CPU with a tiny random model on the hand-made tiny town."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geodiff.cli import main
from geodiff.errors import AreaTooLargeError, InvalidParameterError, ModelError
from geodiff.evaluate.seams import seam_ratio
from geodiff.grid import BBox, grid_for_bbox, parse_bbox
from geodiff.io import read_raster
from geodiff.rasterize import rasterize_bbox
from geodiff.synth import plan_synthesis, synthesize, synthesize_map

from tiny_model import make_tiny_model
from town import TOWN
from town import TOWN_BBOX as TOWN_BOUNDS

TOWN_BBOX = parse_bbox(TOWN_BOUNDS)
FAST = dict(steps=3, device="cpu", batch_size=16)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def town_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "town.tif"
    result = synthesize(TOWN_BBOX, out, osm_path=TOWN, model=tiny_model, seed=5, **FAST)
    return result


def test_outputs_are_georeferenced_exactly(town_run, tiny_model):
    rgb, g, tags = read_raster(town_run.image_path)
    mask, gm, mtags = read_raster(town_run.mask_path)
    expected = grid_for_bbox(TOWN_BBOX, 2.0)
    assert rgb.shape == (3, expected.height, expected.width) and rgb.dtype == np.uint8
    assert g.transform == expected.transform and g.crs == expected.crs
    assert gm.transform == expected.transform and gm.crs == expected.crs
    class_map, _ = rasterize_bbox(TOWN_BBOX, resolution=2.0, osm_path=TOWN)
    np.testing.assert_array_equal(mask[0], class_map)
    assert tags["SEED"] == "5" and tags["STEPS"] == "3" and "OpenStreetMap" in tags["ATTRIBUTION"]
    assert tags["GEODIFF_VERSION"] and tags["MODEL"] and tags["RUNTIME"] == "torch"
    assert mtags["CLASSES"].startswith("0:background")
    assert rgb.std() > 1  # an image, not a constant


def test_same_inputs_same_output(town_run, tmp_path, tiny_model):
    again = synthesize(TOWN_BBOX, tmp_path / "again.tif", osm_path=TOWN, model=tiny_model, seed=5, **FAST)
    a, _, _ = read_raster(town_run.image_path)
    b, _, _ = read_raster(again.image_path)
    np.testing.assert_array_equal(a, b)
    other = synthesize(TOWN_BBOX, tmp_path / "other.tif", osm_path=TOWN, model=tiny_model, seed=6, **FAST)
    c, _, _ = read_raster(other.image_path)
    assert np.abs(a.astype(int) - c).mean() > 1


@pytest.mark.parametrize("sampler", ["dpm", "ddpm"])
def test_sub_bbox_agrees_in_its_interior(town_run, tmp_path, tiny_model, sampler):
    # ddpm: its per-step noise is keyed by place too (not by the canvas), so a sub-bbox draws the same noise
    kw = {**FAST, "sampler": sampler, "steps": 3 if sampler == "dpm" else 6}
    run = (
        town_run if sampler == "dpm"
        else synthesize(TOWN_BBOX, tmp_path / "big.tif", osm_path=TOWN, model=tiny_model, seed=5, **kw)
    )  # fmt: skip
    big, big_grid, _ = read_raster(run.image_path)
    w, s, e, n = run.grid.lonlat_bounds()
    sub_box = BBox(w + 0.3 * (e - w), s + 0.3 * (n - s), w + 0.7 * (e - w), s + 0.7 * (n - s))
    sub = synthesize(sub_box, tmp_path / "sub.tif", osm_path=TOWN, model=tiny_model, seed=5, **kw)
    small, small_grid, _ = read_raster(sub.image_path)
    dr = round((big_grid.transform.f - small_grid.transform.f) / 2.0)
    dc = round((small_grid.transform.c - big_grid.transform.c) / 2.0)
    crop = big[:, dr : dr + small.shape[1], dc : dc + small.shape[2]]
    same_place = np.abs(crop.astype(int) - small).mean()
    other = synthesize(sub_box, tmp_path / "sub7.tif", osm_path=TOWN, model=tiny_model, seed=7, **kw)
    other_seed, _, _ = read_raster(other.image_path)
    different_noise = np.abs(other_seed.astype(int) - small).mean()
    assert same_place < 0.25 * different_noise


def test_blending_removes_seams(tiny_model):
    rng = np.random.default_rng(0)
    class_map = np.kron(rng.integers(0, 5, (12, 12)), np.ones((16, 16), dtype=int)).astype(np.uint8)
    blended = synthesize_map(class_map, model=tiny_model, seed=1, blend=True, **FAST)
    tiles = synthesize_map(class_map, model=tiny_model, seed=1, blend=False, **FAST)
    edges = list(range(64, 192, 64))  # tile edges of the non-blended run
    r_tiles = seam_ratio(tiles, rows=edges, cols=edges).ratio
    r_blend = seam_ratio(blended, rows=edges, cols=edges).ratio
    assert r_blend < 1.3
    assert r_blend < r_tiles


def test_interrupt_leaves_no_output(tiny_model, tmp_path):
    calls = []

    def progress(fraction, message):
        calls.append(fraction)
        if len(calls) > 3:
            raise KeyboardInterrupt

    out = tmp_path / "town.tif"
    with pytest.raises(KeyboardInterrupt):
        synthesize(TOWN_BBOX, out, osm_path=TOWN, model=tiny_model, progress=progress, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_strips_keep_memory_bounded_and_match_layout(tiny_model, tmp_path):
    from geodiff.settings import get_settings

    settings = get_settings(max_strip_pixels=20_000)
    res = synthesize(
        TOWN_BBOX, tmp_path / "s.tif", osm_path=TOWN, model=tiny_model, settings=settings, **FAST
    )
    assert len(res.plan.strips) > 1
    rgb, _, _ = read_raster(res.image_path)
    assert rgb.shape[1:] == res.grid.shape and rgb.std() > 1


def test_dry_run_writes_nothing(tiny_model, tmp_path):
    plan = plan_synthesis(
        TOWN_BBOX, tmp_path / "x.tif", osm_path=TOWN, model=tiny_model, estimate=True, **FAST
    )
    text = plan.describe()
    assert "windows" in text and "estimated time" in text and plan.windows >= 4
    assert plan.mask_path == tmp_path / "x.mask.tif" and plan.steps == 3
    assert list(tmp_path.iterdir()) == []
    # the plan runs as planned
    res = synthesize(plan)
    assert res.plan is plan and res.image_path.exists() and res.mask_path.exists()


def test_library_defaults_and_refusals(tiny_model, tmp_path):
    plan = plan_synthesis(TOWN_BBOX, tmp_path / "x.tif", osm_path=TOWN, model=tiny_model, sampler="ddpm")
    assert plan.steps == 1000  # the library, not the CLI, knows the reference sampler's default
    (tmp_path / "x.tif").write_bytes(b"precious")
    with pytest.raises(InvalidParameterError, match="already exists"):
        synthesize(TOWN_BBOX, tmp_path / "x.tif", osm_path=TOWN, model=tiny_model, **FAST)
    assert (tmp_path / "x.tif").read_bytes() == b"precious"
    with pytest.raises(InvalidParameterError, match="two outputs"):
        plan_synthesis(TOWN_BBOX, tmp_path / "y.tif", mask_out=tmp_path / "y.tif", model=tiny_model)
    res = synthesize(TOWN_BBOX, tmp_path / "n.tif", osm_path=TOWN, model=tiny_model, write_mask=False, **FAST)
    assert res.mask_path is None and not (tmp_path / "n.mask.tif").exists()


def test_options_as_values_plan_like_flat_arguments(tiny_model, tmp_path):
    """The CLI passes option values; the flat keyword arguments of the library give the same plan."""
    from geodiff.options import OutputOptions, SamplingOptions, SourceOptions

    out = tmp_path / "x.tif"
    flat = plan_synthesis(TOWN_BBOX, out, osm_path=TOWN, model=tiny_model, seed=4, cog=True, write_mask=False,
                          **FAST)  # fmt: skip
    valued = plan_synthesis(
        TOWN_BBOX, out, sampling=SamplingOptions(model=tiny_model, seed=4, **FAST),
        source=SourceOptions(osm_path=TOWN), output=OutputOptions(write_mask=False, cog=True),
    )  # fmt: skip
    assert valued.to_dict() == flat.to_dict() and valued.cog and valued.mask_path is None
    assert valued.source == flat.source and valued.seed == 4
    with pytest.raises(InvalidParameterError, match="not both"):
        plan_synthesis(TOWN_BBOX, out, seed=1, sampling=SamplingOptions(model=tiny_model))


def test_strips_match_a_single_strip_run(tiny_model, tmp_path):
    from geodiff.settings import get_settings

    one = synthesize(TOWN_BBOX, tmp_path / "one.tif", osm_path=TOWN, model=tiny_model, seed=2, **FAST)
    many = synthesize(
        TOWN_BBOX, tmp_path / "many.tif", osm_path=TOWN, model=tiny_model, seed=2,
        settings=get_settings(max_strip_pixels=20_000), **FAST,
    )  # fmt: skip
    assert len(one.plan.strips) == 1 and len(many.plan.strips) > 2
    a, b = (read_raster(r.image_path)[0].astype(int) for r in (one, many))
    other = synthesize(TOWN_BBOX, tmp_path / "o.tif", osm_path=TOWN, model=tiny_model, seed=3, **FAST)
    c = read_raster(other.image_path)[0].astype(int)
    # strips only see their own rows, so they differ near strip edges; far less than another seed does
    assert np.abs(a - b).mean() < 0.2 * np.abs(a - c).mean()


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"resolution": 0.5}, ModelError, "trained at 2 m/px"),
        ({"steps": 0}, InvalidParameterError, "steps"),
        ({"sampler": "euler"}, InvalidParameterError, "sampler"),
        ({"device": "tpu"}, InvalidParameterError, "device"),
    ],
)
def test_bad_requests(tiny_model, tmp_path, kwargs, error, fragment):
    args = {**FAST, **kwargs}
    with pytest.raises(error, match=fragment):
        synthesize(TOWN_BBOX, tmp_path / "x.tif", osm_path=TOWN, model=tiny_model, **args)
    assert list(tmp_path.iterdir()) == []


def test_missing_model(tmp_path):
    with pytest.raises(ModelError):
        synthesize(TOWN_BBOX, tmp_path / "x.tif", osm_path=TOWN, model=tmp_path / "nope", **FAST)


def test_area_too_large(tiny_model, tmp_path):
    with pytest.raises(AreaTooLargeError, match="pixels"):
        synthesize(parse_bbox("5,40,9,45"), tmp_path / "x.tif", osm_path=TOWN, model=tiny_model, **FAST)


def test_cli_end_to_end_with_json_progress(tiny_model, tmp_path, capsys):
    out = tmp_path / "cli.tif"
    argv = [
        "synth",
        "--bbox",
        str(TOWN_BBOX),
        "--osm",
        str(TOWN),
        "--model",
        str(tiny_model),
        "--out",
        str(out),
        "--steps",
        "2",
        "--device",
        "cpu",
        "--progress",
        "json",
    ]
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # --threads sets this process's torch threads (a shared machine, jobs side by side)
        assert main([*argv, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    assert any(x.get("event") == "device" and x["device"] == "cpu" for x in lines)
    fractions = [x["progress"] for x in lines if "progress" in x]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert out.exists() and (tmp_path / "cli.mask.tif").exists()
    # refusing to overwrite, and saying how
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_refuses_zero_threads(capsys, tmp_path):
    assert main(["synth", "--sample", "--out", str(tmp_path / "x.tif"), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_cli_requires_bbox_or_sample(capsys, tmp_path):
    assert main(["synth", "--out", str(tmp_path / "x.tif")]) == 2
    assert "--sample" in capsys.readouterr().err
