"""``geodiff augment --changes``: (before, after, masks, change) sets by random plausible edits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio

from geodiff.augment import generate_dataset
from geodiff.change import EDIT_KINDS, change_area, change_code, random_edit
from geodiff.classes import BUILDING
from geodiff.cli import main
from geodiff.grid import parse_bbox
from geodiff.settings import DEFAULT_RESOLUTION_M

from tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parent.parent
TOWN = REPO / "samples" / "tiny_town.osm"
TOWN_AREA = "7.4200,43.7300,7.4237,43.7327"


def test_random_edits_are_plausible_and_seeded():
    m = np.zeros((128, 128), np.uint8)
    m[10:30, 10:30] = BUILDING
    kinds = set()
    for s in range(12):
        a, edit = random_edit(m, np.random.default_rng(s), 1.0)
        b, again = random_edit(m, np.random.default_rng(s), 1.0)
        assert edit == again and np.array_equal(a, b)  # seeded
        assert edit["kind"] in EDIT_KINDS and (a != m).any()
        kinds.add(edit["kind"])
        if edit["kind"] == "remove_building":
            assert not (a == BUILDING).any()
    assert len(kinds) >= 3


def test_augment_changes_writes_the_five_files_and_edits(tmp_path):
    model = build_tiny_model(
        resolution_m=DEFAULT_RESOLUTION_M, tile_size=128, unet_block_channels=[16, 16], context_dim=16
    )
    out = tmp_path / "aug"
    res = generate_dataset(out, area=parse_bbox(TOWN_AREA), n_windows=2, model=model, osm_path=TOWN, steps=1,
                           device="cpu", changes=True)  # fmt: skip
    assert res.n_samples == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "after_images", "after_masks", "changes", "images", "manifest.csv", "manifest.json", "masks",
    ]  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert "change_values" in manifest["changes"]
    for rec in manifest["samples"]:
        assert rec["edit"] in EDIT_KINDS and rec["changed_pixels"] > 0
        read = {
            k: rasterio.open(out / rec[k]).read()
            for k in ("image", "mask", "after_image", "after_mask", "change")
        }
        np.testing.assert_array_equal(read["change"][0], change_code(read["mask"][0], read["after_mask"][0]))
        area, _ = change_area(read["change"][0] > 0, 8)
        diff = np.abs(read["after_image"].astype(int) - read["image"]).max(0)
        assert diff[~area].max() == 0 and diff[area].max() > 0
    # the CLI: refused with a cluster, and --overwrite replaces all five folders' files
    args = [
        "augment",
        "--area",
        TOWN_AREA,
        "--n-windows",
        "1",
        "--osm",
        str(TOWN),
        "--out",
        str(out),
        "--changes",
    ]
    assert main([*args, "--workers", "2"]) == 2
