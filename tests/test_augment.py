"""``geodiff augment``: paired dataset layout, manifests, atomicity, window files, CLI errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from geodiff.augment import generate_dataset, read_windows
from geodiff.errors import InputNotFoundError, InvalidBBoxError, InvalidParameterError
from geodiff.grid import parse_bbox
from geodiff.settings import DEFAULT_RESOLUTION_M

from tiny_model import build_tiny_model

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
TOWN = REPO / "samples" / "tiny_town.osm"
TOWN_AREA = "7.4200,43.7300,7.4237,43.7327"


@pytest.fixture(scope="module")
def model():
    # 128 px windows at the default resolution: the tests cut and synthesize real-size areas
    return build_tiny_model(
        resolution_m=DEFAULT_RESOLUTION_M, tile_size=128, unet_block_channels=[16, 16], context_dim=16
    )


def _gen(out: Path, model, **kw):
    opts = dict(area=parse_bbox(TOWN_AREA), n_windows=2, seeds_per_window=2, model=model, osm_path=TOWN, steps=1,
                device="cpu")  # fmt: skip
    opts.update(kw)
    return generate_dataset(out, **opts)


@pytest.mark.parametrize("fmt", ["tif", "png"])
def test_augment_writes_layout_and_manifests(tmp_path: Path, model, fmt: str) -> None:
    out = tmp_path / "aug"
    res = _gen(out, model, fmt=fmt)
    assert res.n_samples == 4
    assert sorted(p.name for p in out.iterdir()) == ["images", "manifest.csv", "manifest.json", "masks"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_samples"] == 4 and manifest["ignore_index"] == 255
    assert [c["name"] for c in manifest["classes"]][:2] == ["background", "building"]
    assert "OpenStreetMap" in manifest["attribution"]
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [r["id"] for r in rows] == [s["id"] for s in manifest["samples"]]
    for rec in manifest["samples"]:
        img_p, mask_p = out / rec["image"], out / rec["mask"]
        assert img_p.is_file() and mask_p.is_file()
        if fmt == "png":
            img, mask = np.asarray(Image.open(img_p)), np.asarray(Image.open(mask_p))
            assert img.shape == (128, 128, 3) and mask.shape == (128, 128)
        else:
            with rasterio.open(img_p) as src, rasterio.open(mask_p) as msrc:
                assert src.count == 3 and src.crs is not None and src.transform == msrc.transform
                mask = msrc.read(1)
                assert src.tags()["SEED"] == str(rec["seed"])
        assert set(np.unique(mask)) <= {0, 1, 2, 3, 4}
    # two seeds of one window share the mask, not the image
    assert manifest["samples"][0]["window"] == manifest["samples"][1]["window"]
    assert not list(tmp_path.glob(".*partial"))


def test_augment_leaves_nothing_when_interrupted(tmp_path: Path, model) -> None:
    samples = []

    def progress(fraction: float, message: str) -> None:
        if message.startswith("sample"):
            samples.append(message)
            if len(samples) == 3:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way

    out = tmp_path / "aug"
    with pytest.raises(KeyboardInterrupt):
        _gen(out, model, progress=progress)
    assert len(samples) == 3
    assert list(tmp_path.iterdir()) == []  # no final folder, no temporary folder


def test_augment_overwrite_replaces_only_what_geodiff_wrote(tmp_path: Path, model) -> None:
    out = tmp_path / "aug"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(InvalidParameterError, match="already exists"):
        _gen(out, model)
    # a folder that is not a geodiff dataset is never replaced, not even with --overwrite
    with pytest.raises(InvalidParameterError, match="not a dataset written by geodiff"):
        _gen(out, model, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    (out / "old.txt").unlink()
    _gen(out, model, n_windows=2, seeds_per_window=1)  # an empty folder may be used
    first = json.loads((out / "manifest.json").read_text())
    (out / "notes.txt").write_text("mine")
    (out / "images" / "extra.png").write_bytes(b"also mine")
    _gen(out, model, overwrite=True, n_windows=1, seeds_per_window=1, seed=9)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_samples"] == 1 and first["n_samples"] == 2
    assert (out / "notes.txt").read_text() == "mine" and (out / "images" / "extra.png").exists()
    kept = sorted(p.name for p in (out / "images").iterdir())
    assert kept == sorted(["extra.png", Path(manifest["samples"][0]["image"]).name])  # old samples removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aug"]


def test_augment_tile_equals_synth_pixels_there(tmp_path: Path, model) -> None:
    from geodiff.io import read_raster
    from geodiff.synth import synthesize

    box = parse_bbox("7.4205,43.7305,7.4221,43.7318")
    res = generate_dataset(
        tmp_path / "aug", windows=[box], model=model, osm_path=TOWN, steps=2, device="cpu", seed=4
    )
    rec = json.loads(res.manifest_json.read_text())["samples"][0]
    tile, tile_grid, _ = read_raster(res.out_dir / rec["image"])
    mask, _, _ = read_raster(res.out_dir / rec["mask"])
    run = synthesize(box, tmp_path / "s.tif", osm_path=TOWN, model=model, steps=2, device="cpu", seed=4)
    image, grid, _ = read_raster(run.image_path)
    assert tile_grid == grid
    np.testing.assert_array_equal(tile, image)
    np.testing.assert_array_equal(mask, read_raster(run.mask_path)[0])
    # one provenance schema: the tile says what produced it exactly as the synth output does (MASK, where
    # a synth output's own map file sits for `geodiff change`, is the only tag about the files, not the run)
    with rasterio.open(res.out_dir / rec["image"]) as a, rasterio.open(run.image_path) as b:
        assert (
            a.tags() == {k: v for k, v in b.tags().items() if k != "MASK"} and a.tags()["SYNTHETIC"] == "yes"
        )
        assert b.tags()["MASK"] == run.mask_path.name


def test_augment_from_windows_file(tmp_path: Path, model) -> None:
    txt = tmp_path / "w.txt"
    txt.write_text("# two windows\n7.4205,43.7305,7.4215,43.7313\n\n7.4220,43.7310,7.4230,43.7318\n")
    boxes = read_windows(txt)
    assert len(boxes) == 2
    gj = tmp_path / "w.geojson"
    poly = {"type": "Polygon", "coordinates": [[[7.4205, 43.7305], [7.4215, 43.7305], [7.4215, 43.7313],
                                                  [7.4205, 43.7305]]]}  # fmt: skip
    gj.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                                                         "geometry": poly}]}))  # fmt: skip
    assert read_windows(gj)[0].as_tuple() == pytest.approx(boxes[0].as_tuple())
    res = generate_dataset(tmp_path / "aug", windows=boxes[:1], model=model, osm_path=TOWN, steps=1, device="cpu",
                           fmt="png")  # fmt: skip
    manifest = json.loads((res.out_dir / "manifest.json").read_text())
    rec = manifest["samples"][0]
    assert rec["west"] == pytest.approx(7.4205, abs=1e-4) and rec["width"] > 0


def test_read_windows_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        read_windows(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("7.42,43.73,7.41,43.74\n")
    with pytest.raises(InvalidBBoxError, match="line 1"):
        read_windows(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(InvalidParameterError, match="no bboxes"):
        read_windows(empty)


def test_cli_augment_errors(tmp_path: Path) -> None:
    from geodiff.cli import main

    out = str(tmp_path / "aug")
    assert main(["augment", "--out", out]) == 2  # neither --windows nor --area
    assert main(["augment", "--windows", str(tmp_path / "none.txt"), "--out", out]) == 3
    code = main(
        ["augment", "--area", TOWN_AREA, "--n-windows", "1", "--osm", str(tmp_path / "no.osm"), "--out", out]
    )
    assert code == 3
    assert not (tmp_path / "aug").exists()


def test_cli_augment_runs_with_saved_model(tmp_path: Path, model) -> None:
    from geodiff.cli import main

    model.save_pretrained(tmp_path / "m")
    code = main(["augment", "--area", TOWN_AREA, "--n-windows", "1", "--osm", str(TOWN), "--model",
                 str(tmp_path / "m"), "--steps", "1", "--device", "cpu", "--threads", "1", "--format", "png", "--progress",
                 "none", "--out", str(tmp_path / "aug")])  # fmt: skip
    assert code == 0
    assert (tmp_path / "aug" / "masks").is_dir() and len(list((tmp_path / "aug" / "images").iterdir())) == 1
