"""The fast sampler: latent consistency distillation (loss, resume, export) and the student in the pipeline."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from geodiff.cli import main
from geodiff.errors import ConfigError, InvalidParameterError, ModelError
from geodiff.io import read_raster
from geodiff.model import GeodiffModel
from geodiff.model.student import make_student_scheduler, make_student_unet
from geodiff.models import load_model
from geodiff.pipeline import GeodiffPipeline
from geodiff.synth import synthesize
from geodiff.train.config import load_config, parse_config
from geodiff.train.dataset import build_from_mask_folder
from geodiff.train.distill import train_distill

from mask_folder import make_folder
from tiny_model import add_tiny_student, build_tiny_model, make_tiny_model
from town import TOWN
from town import TOWN_BBOX as TOWN_BOUNDS

torch.set_num_threads(1)

TOML = """
[data]
path = "{data}"
crop = 32
[distill]
teacher = "{teacher}"
steps = {steps}
batch_size = 2
guidance_min = 1.5
guidance_max = 3.0
[run]
dir = "{run}"
output = "{out}"
threads = 1
log_every = 1
checkpoint_every = 1
"""


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("teacher") / "tiny")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_folder(root / "src", n=2, size=(128, 128))
    build_from_mask_folder(root / "src", root / "ds", tile_size=64, val_fraction=0.5, resolution_m=2.0)
    return root / "ds"


@pytest.fixture(scope="module")
def fast_model(tmp_path_factory: pytest.TempPathFactory) -> GeodiffModel:
    """The tiny model with a student whose guidance embedding matters (random, not zero)."""
    path = add_tiny_student(make_tiny_model(tmp_path_factory.mktemp("fast") / "tiny"))
    return GeodiffModel.from_pretrained(path, quality="fast")


def _config(tmp_path: Path, dataset: Path, teacher: Path, steps: int, run: str) -> Path:
    path = tmp_path / f"{run}.toml"
    path.write_text(
        TOML.format(
            data=dataset, teacher=teacher, steps=steps, run=tmp_path / run, out=tmp_path / run / "model"
        )
    )
    return path


def test_untrained_student_predicts_as_the_teacher() -> None:
    teacher = build_tiny_model()
    student = make_student_unet(teacher.unet, 16)
    t = torch.tensor([10, 900])
    x = torch.randn(2, teacher.unet.config.in_channels, 16, 16)
    ctx = torch.randn(2, 16, teacher.unet.config.cross_attention_dim)
    cond = torch.randn(2, 16)
    with torch.no_grad():
        a = teacher.unet(x, t, encoder_hidden_states=ctx).sample
        b = student(x, t, encoder_hidden_states=ctx, timestep_cond=cond).sample
    torch.testing.assert_close(a, b)


def test_distill_resumes_bit_identically_and_the_student_loads(
    tmp_path: Path, dataset: Path, teacher: Path
) -> None:
    straight = _config(tmp_path, dataset, teacher, 2, "a")
    assert main(["train", "distill", "--config", str(straight), "--progress", "none"]) == 0
    rows = list(csv.DictReader((tmp_path / "a" / "distill" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)

    halves = load_config(_config(tmp_path, dataset, teacher, 1, "b"))
    train_distill(halves)
    halves.distill.steps = 2
    out = train_distill(halves, resume=True)
    a = torch.load(tmp_path / "a" / "distill" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "distill" / "checkpoint.pt", weights_only=True)
    for key in ("student", "target"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)

    # the output is the teacher's folder plus student/; both qualities load from it
    full = GeodiffModel.from_pretrained(out)
    fast = load_model(out, device="cpu", quality="fast")
    assert full.quality == "full" and fast.quality == "fast" and fast.student.train_steps == 2
    assert fast.unet.config.time_cond_proj_dim == 64 and not full.unet.config.time_cond_proj_dim
    assert (tmp_path / "b" / "distill" / "exports" / "step-0000002" / "student" / "student.json").is_file()
    images = GeodiffPipeline(fast)(np.zeros((64, 64), np.int64), generator=torch.Generator().manual_seed(0))
    assert images.images.shape == (1, 64, 64, 3)
    with pytest.raises(ModelError, match="no fast sampler"):
        GeodiffModel.from_pretrained(teacher, quality="fast")
    with pytest.raises(ModelError, match="save the teacher"):
        fast.save_pretrained(tmp_path / "copy")


def test_fast_pipeline_is_deterministic_and_one_pass_per_step(fast_model: GeodiffModel) -> None:
    calls = []
    hook = fast_model.unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        pipe = GeodiffPipeline(fast_model)
        cmap = torch.randint(0, 5, (64, 64), generator=torch.Generator().manual_seed(3))
        a = pipe(cmap, generator=torch.Generator().manual_seed(0)).images
    finally:
        hook.remove()
    assert calls == [1, 1]  # StudentInfo(steps=2): two steps, one unconditional-free pass each
    b = pipe(cmap, generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_array_equal(a, b)
    # guidance is an input of the student, not a second pass
    c = pipe(cmap, generator=torch.Generator().manual_seed(0), guidance_scale=3.0).images
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 0

    # the caller's step noise replaces the generator's draws (LCM re-noises); DDIM needs none
    def noise(i):
        return torch.randn(1, fast_model.latent_channels, 16, 16, generator=torch.Generator().manual_seed(i))

    d = pipe(cmap, generator=torch.Generator().manual_seed(0), step_noise=noise).images
    assert np.abs(a.astype(int) - d.astype(int)).mean() > 0
    np.testing.assert_array_equal(
        d, pipe(cmap, generator=torch.Generator().manual_seed(0), step_noise=noise).images
    )
    ddim = GeodiffPipeline(fast_model, make_student_scheduler(fast_model.scheduler_config, "ddim"))
    e = ddim(cmap, generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_array_equal(e, ddim(cmap, generator=torch.Generator().manual_seed(0)).images)


def test_fast_strips_match_a_single_strip_run(fast_model: GeodiffModel, tmp_path: Path) -> None:
    from geodiff.grid import parse_bbox
    from geodiff.settings import get_settings

    bbox, kw = parse_bbox(TOWN_BOUNDS), dict(osm_path=TOWN, model=fast_model, device="cpu", steps=2)
    one = synthesize(bbox, tmp_path / "one.tif", seed=2, **kw)
    again = synthesize(bbox, tmp_path / "again.tif", seed=2, **kw)
    many = synthesize(
        bbox, tmp_path / "many.tif", seed=2, settings=get_settings(max_strip_pixels=20_000), **kw
    )
    other = synthesize(bbox, tmp_path / "o.tif", seed=3, **kw)
    assert len(one.plan.strips) == 1 and len(many.plan.strips) > 2
    a, a2, b, c = (read_raster(r.image_path)[0].astype(int) for r in (one, again, many, other))
    np.testing.assert_array_equal(a, a2)
    # as with the full sampler: strips only see their own rows, so they differ a little near strip edges
    assert np.abs(a - b).mean() < 0.2 * np.abs(a - c).mean()


def test_distill_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="guidance_min"):
        parse_config({"data": {"path": "x"}, "distill": {"guidance_min": 3.0, "guidance_max": 2.0}})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"data": {"path": "x"}, "distill": {"teachr": "a"}})
    with pytest.raises(InvalidParameterError, match="quality must be 'full' or 'fast'"):
        load_model(None, device="cpu", quality="fastest")


def test_in_memory_model_keeps_its_quality(fast_model: GeodiffModel) -> None:
    assert load_model(fast_model, device="cpu") is fast_model
    assert load_model(fast_model, device="cpu", quality="fast") is fast_model
    with pytest.raises(ModelError, match="in-memory model samples at quality 'fast'"):
        load_model(fast_model, device="cpu", quality="full")
