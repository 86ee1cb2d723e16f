"""``--quality fast``: the distilled student through the plan, the CLI, augment and change (tiny model, town)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geodiff.augment import generate_dataset
from geodiff.change import synthesize_change
from geodiff.cli import main
from geodiff.errors import InvalidParameterError, ModelError
from geodiff.io import read_raster, write_class_map
from geodiff.settings import get_settings
from geodiff.synth import plan_synthesis, synthesize

from tiny_model import add_tiny_student, make_tiny_model
from town import TOWN, TOWN_BBOX

KW = dict(osm_path=TOWN, device="cpu", seed=4, guidance_scale=2.0)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add_tiny_student(make_tiny_model(tmp_path_factory.mktemp("fast") / "tiny"), steps=3)


@pytest.fixture(scope="module")
def no_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("full") / "tiny")


def _count_unet_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batch sizes of every U-Net call made from here on (teacher's and student's)."""
    from diffusers import UNet2DConditionModel

    seen: list[int] = []
    forward = UNet2DConditionModel.forward

    def counted(self, sample, *a, **k):  # noqa: ANN001, ANN202
        seen.append(sample.shape[0])
        return forward(self, sample, *a, **k)

    monkeypatch.setattr(UNet2DConditionModel, "forward", counted)
    return seen


def test_fast_plan_uses_the_students_sampler_steps_and_one_pass_per_step(model, tmp_path, monkeypatch):
    full = plan_synthesis(TOWN_BBOX, tmp_path / "full.tif", model=str(model), **KW)
    fast = plan_synthesis(TOWN_BBOX, tmp_path / "fast.tif", model=str(model), quality="fast", **KW)
    assert (full.quality, full.sampler, full.steps, full.unet_passes) == ("full", "dpm", 20, 40)
    # the student's own default steps (student.json), guidance folded in: one pass per step
    assert (fast.quality, fast.sampler, fast.steps, fast.unet_passes) == ("fast", "lcm", 3, 3)
    assert fast.to_dict()["quality"] == "fast" and "lcm (fast quality), 3 steps" in fast.describe()
    passes = _count_unet_passes(monkeypatch)
    result = synthesize(fast, settings=get_settings())
    windows = fast.windows
    assert sum(passes) == windows * 3  # no unconditional pass
    _, _, tags = read_raster(result.image_path)
    assert (tags["QUALITY"], tags["SAMPLER"], tags["STEPS"]) == ("fast", "lcm", "3")


def test_fast_is_deterministic_strip_wise_and_differs_from_full(model, tmp_path):
    kw = dict(model=str(model), quality="fast", **KW)
    one = synthesize(TOWN_BBOX, tmp_path / "one.tif", **kw)
    again = synthesize(TOWN_BBOX, tmp_path / "again.tif", **kw)
    many = synthesize(TOWN_BBOX, tmp_path / "many.tif", settings=get_settings(max_strip_pixels=20_000), **kw)
    full = synthesize(TOWN_BBOX, tmp_path / "full.tif", model=str(model), steps=3, **KW)
    other = synthesize(TOWN_BBOX, tmp_path / "other.tif", **{**kw, "seed": 5})
    assert len(many.plan.strips) > 2
    a, a2, b, f, o = (read_raster(r.image_path)[0].astype(int) for r in (one, again, many, full, other))
    np.testing.assert_array_equal(a, a2)
    # strips see only their own rows (as with the full sampler): close to, not equal to, one strip
    assert np.abs(a - b).mean() < 0.2 * np.abs(a - o).mean()
    assert np.abs(a - f).mean() > 1  # the student, not the teacher, drew it


def test_fast_needs_a_student_and_its_own_sampler(model, no_student, tmp_path):
    with pytest.raises(ModelError, match="no fast sampler.*--quality full.*geodiff train distill"):
        plan_synthesis(TOWN_BBOX, tmp_path / "a.tif", model=str(no_student), quality="fast", **KW)
    with pytest.raises(InvalidParameterError, match="sampler 'ddpm' belongs to the full model"):
        plan_synthesis(TOWN_BBOX, tmp_path / "a.tif", model=str(model), quality="fast", sampler="ddpm", **KW)
    with pytest.raises(InvalidParameterError, match="quality must be 'full' or 'fast'"):
        plan_synthesis(TOWN_BBOX, tmp_path / "a.tif", model=str(model), quality="quick", **KW)
    assert not list(tmp_path.iterdir())


def test_cli_quality_reaches_the_plan_and_the_error_is_one_line(model, no_student, tmp_path, capsys):
    args = [
        "synth",
        "--bbox",
        ",".join(map(str, TOWN_BBOX)),
        "--osm",
        str(TOWN),
        "--device",
        "cpu",
        "--dry-run",
    ]
    assert main([*args, "--model", str(model), "--quality", "fast", "--out", str(tmp_path / "a.tif")]) == 0
    out = capsys.readouterr()
    assert "sampler: lcm (fast quality), 3 steps" in out.out + out.err
    assert (
        main([*args, "--model", str(no_student), "--quality", "fast", "--out", str(tmp_path / "a.tif")]) != 0
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no fast sampler" in err[0] and "Traceback" not in err[0]


def test_models_lists_both_qualities(model, tmp_path, capsys):
    user = tmp_path / "cache" / "models"  # conftest points GEODIFF_CACHE_DIR at tmp_path/cache
    user.mkdir(parents=True)
    (user / "tiny-fast").symlink_to(model)
    assert main(["models", "--json"]) == 0
    infos = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert infos["tiny-fast"]["qualities"] == ["full", "fast"]
    assert infos["geodiff-default"]["qualities"][0] == "full"
    assert main(["models"]) == 0
    assert "qualities (--quality): full, fast" in capsys.readouterr().out


def test_augment_fast_pairs_equal_fast_synth_and_say_so(model, tmp_path):
    res = generate_dataset(tmp_path / "aug", windows=[_bbox()], model=str(model), quality="fast", **KW)
    manifest = json.loads(res.manifest_json.read_text())
    assert manifest["quality"] == "fast" and manifest["sampler"] == "lcm" and manifest["steps"] == 3
    sample = manifest["samples"][0]
    img, _, _ = read_raster(res.out_dir / sample["image"])
    solo = synthesize(_bbox(), tmp_path / "solo.tif", model=str(model), quality="fast", **KW)
    np.testing.assert_array_equal(img, read_raster(solo.image_path)[0])


def test_change_of_a_fast_image_is_made_with_the_student(model, tmp_path):
    before = synthesize(TOWN_BBOX, tmp_path / "before.tif", model=str(model), quality="fast", **KW)
    mask, grid, _ = read_raster(before.mask_path)
    new = mask[0].copy()
    new[40:50, 60:75] = 1
    write_class_map(tmp_path / "edited.tif", new, grid)
    res = synthesize_change(
        before.image_path, tmp_path / "after.tif", map_path=tmp_path / "edited.tif", device="cpu"
    )
    assert res.plan.synth.quality == "fast" and res.plan.synth.steps == 3
    a, _, tags = read_raster(res.image_path)
    b, _, _ = read_raster(before.image_path)
    assert tags["QUALITY"] == "fast"
    assert 0 < (np.abs(a.astype(int) - b).max(0) > 0).mean() < 0.5


def _bbox():
    from geodiff.grid import parse_bbox

    return parse_bbox(TOWN_BBOX)


torch.set_num_threads(1)


def test_a_resume_at_another_quality_is_another_run(model, tmp_path):
    from geodiff.distributed import plan_fingerprint

    full = plan_synthesis(TOWN_BBOX, tmp_path / "a.tif", model=str(model), **KW)
    fast = plan_synthesis(TOWN_BBOX, tmp_path / "a.tif", model=str(model), quality="fast", **KW)
    assert plan_fingerprint(full) != plan_fingerprint(fast)
    assert plan_fingerprint(fast) == plan_fingerprint(
        plan_synthesis(TOWN_BBOX, tmp_path / "a.tif", model=str(model), quality="fast", **KW)
    )
