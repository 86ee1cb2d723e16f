"""``--runtime onnx``: the U-Net and decoder on ONNX Runtime, through the plan and the CLI (tiny model, town)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from geodiff.cli import main
from geodiff.errors import InvalidParameterError, ModelError
from geodiff.io import read_raster
from geodiff.model import onnx_runtime
from geodiff.settings import get_settings
from geodiff.synth import plan_synthesis, synthesize

from tiny_model import add_tiny_student, make_tiny_model
from town import TOWN, TOWN_BBOX

pytest.importorskip("onnxruntime")
KW = dict(osm_path=TOWN, device="cpu", seed=4, steps=3)
ONE_STEP = {**KW, "steps": 1}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add_tiny_student(make_tiny_model(tmp_path_factory.mktemp("onnx") / "tiny"), steps=2)


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The parts exported from here on (each export is one torch.onnx.export call)."""
    seen: list[str] = []
    export = torch.onnx.export

    def counted(module, *a, **k):  # noqa: ANN001, ANN202
        seen.append(type(module).__name__)
        return export(module, *a, **k)

    monkeypatch.setattr(torch.onnx, "export", counted)
    return seen


def _pixels(result) -> np.ndarray:  # noqa: ANN001
    return read_raster(result.image_path)[0].astype(int)


@pytest.mark.parametrize("quality", ["full", "fast"])
def test_onnx_draws_torchs_pixels_within_tolerance_the_same_every_time(model, tmp_path, quality, exports):
    kw = dict(model=str(model), quality=quality, **KW)
    if quality == "fast":
        kw.pop("steps")
    plan = plan_synthesis(TOWN_BBOX, tmp_path / "onnx.tif", runtime="onnx", **kw)
    assert plan.runtime == "onnx" and plan.to_dict()["runtime"] == "onnx"
    assert "device cpu on onnx" in plan.describe()
    onnx = synthesize(plan, settings=get_settings())
    assert sorted(exports) == ["_DecoderCall", "_UNetCall"]  # one graph per part, batch left dynamic
    again = synthesize(TOWN_BBOX, tmp_path / "again.tif", runtime="onnx", **kw)
    assert len(exports) == 2  # the second run found both graphs in the cache folder
    timed = plan_synthesis(
        TOWN_BBOX, tmp_path / "plan.tif", runtime="onnx", estimate=True, dry_run=True, **kw
    )
    assert timed.estimate_runtime == "onnx" and "exported on the first run" not in timed.describe()
    assert len(exports) == 2  # the dry run timed the graphs already there
    eager = synthesize(TOWN_BBOX, tmp_path / "torch.tif", **kw)
    other = synthesize(TOWN_BBOX, tmp_path / "other.tif", runtime="onnx", **{**kw, "seed": 5})
    a, a2, t, o = (_pixels(r) for r in (onnx, again, eager, other))
    np.testing.assert_array_equal(a, a2)
    assert np.abs(a - t).max() <= 2 and np.abs(a - t).mean() < 0.01 * np.abs(a - o).mean()
    files = sorted(p.name for p in (get_settings().cache_dir / "onnx").iterdir())
    assert len(files) == 2 and all(f.endswith(".onnx") for f in files)


def test_an_export_off_torch_is_refused_and_not_kept(model, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_runtime, "TOLERANCE", -1.0)  # every graph now "differs"
    with pytest.raises(ModelError, match=r"differs from torch .* use --runtime torch"):
        synthesize(TOWN_BBOX, tmp_path / "out.tif", model=str(model), runtime="onnx", **KW)
    assert not list((get_settings().cache_dir / "onnx").glob("*"))  # no graph, no temporary
    assert not list(tmp_path.glob("out*"))  # and no output


def test_onnx_needs_its_packages_and_the_cpu(model, tmp_path, monkeypatch):
    with pytest.raises(InvalidParameterError, match="runs on the CPU"):
        onnx_runtime.check_runtime("onnx", "cuda")
    with pytest.raises(InvalidParameterError, match="runtime must be one of torch, onnx"):
        plan_synthesis(TOWN_BBOX, tmp_path / "x.tif", model=str(model), runtime="tensorrt", **KW)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a)
    )
    with pytest.raises(InvalidParameterError, match=r"needs onnxruntime: pip install 'geodiff\[onnx\]'"):
        plan_synthesis(TOWN_BBOX, tmp_path / "x.tif", model=str(model), runtime="onnx", **KW)


def test_cli_runtime_reaches_the_plan(model, tmp_path, capsys, exports):
    args = [
        "synth",
        "--bbox",
        ",".join(map(str, TOWN_BBOX)),
        "--osm",
        str(TOWN),
        "--model",
        str(model),
        "--device",
        "cpu",
    ]
    rc = main(
        [*args, "--out", str(tmp_path / "a.tif"), "--runtime", "onnx", "--dry-run", "--progress", "json"]
    )
    assert rc == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # a dry run answers without exporting: its estimate is timed on torch until a run has exported the graphs
    assert plan["runtime"] == "onnx" and plan["estimate_runtime"] == "torch" and plan["seconds_estimate"] > 0
    assert exports == [] and not list((get_settings().cache_dir / "onnx").glob("*"))
    rc = main([*args, "--out", str(tmp_path / "a.tif"), "--runtime", "onnx", "--dry-run"])
    assert (
        rc == 0
        and "(timed on torch: the onnx graphs are exported on the first run)" in capsys.readouterr().out
    )
    rc = main([*args, "--out", str(tmp_path / "b.tif"), "--runtime", "tvm", "--dry-run"])
    assert rc == 2 and "'tvm' is not one of 'torch', 'onnx'" in capsys.readouterr().err


def test_a_damaged_cached_graph_says_what_to_do(model, tmp_path):
    synthesize(TOWN_BBOX, tmp_path / "a.tif", model=str(model), runtime="onnx", **ONE_STEP)
    graph = next((get_settings().cache_dir / "onnx").glob("unet-*.onnx"))
    graph.write_bytes(graph.read_bytes()[:1000])  # cut short, as a full disk or a killed copy leaves it
    with pytest.raises(ModelError, match=r"could not load .*unet-.*\.onnx.*delete the file"):
        synthesize(TOWN_BBOX, tmp_path / "b.tif", model=str(model), runtime="onnx", **ONE_STEP)
    assert not (tmp_path / "b.tif").exists()
    graph.unlink()  # as the message says: exported afresh
    synthesize(TOWN_BBOX, tmp_path / "c.tif", model=str(model), runtime="onnx", **ONE_STEP)
    np.testing.assert_array_equal(_pixels_of(tmp_path / "a.tif"), _pixels_of(tmp_path / "c.tif"))


def _pixels_of(path: Path) -> np.ndarray:
    return read_raster(path)[0]


def test_augment_and_change_run_on_onnx_and_a_run_resumes_only_on_its_runtime(
    model, tmp_path, exports, monkeypatch
):
    from geodiff.augment import generate_dataset
    from geodiff.change import plan_change, synthesize_change
    from geodiff.distributed import plan_fingerprint
    from geodiff.grid import parse_bbox
    from geodiff.io import write_class_map

    exporter_log = logging.getLogger("torch.onnx")
    monkeypatch.setattr(
        exporter_log, "level", logging.INFO
    )  # a user's own logging setup (undone after the test)
    res = generate_dataset(
        tmp_path / "aug", windows=[parse_bbox(TOWN_BBOX)], model=str(model), runtime="onnx", **ONE_STEP
    )
    assert sorted(exports) == ["_DecoderCall", "_UNetCall"] and res.n_samples == 1
    assert exporter_log.level == logging.INFO  # quietened for the exports only
    before = synthesize(TOWN_BBOX, tmp_path / "before.tif", model=str(model), runtime="onnx", **ONE_STEP)
    assert read_raster(before.image_path)[2]["RUNTIME"] == "onnx"
    mask, grid, _ = read_raster(before.mask_path)
    new = mask[0].copy()
    new[40:50, 60:75] = 1
    write_class_map(tmp_path / "edited.tif", new, grid)
    calls = []
    run = onnx_runtime.OnnxParts._run
    monkeypatch.setattr(onnx_runtime.OnnxParts, "_run", lambda self, *a: calls.append(a[0]) or run(self, *a))
    # no runtime named: BEFORE's windows are redone on the runtime its RUNTIME tag names
    after = synthesize_change(
        before.image_path, tmp_path / "after.tif", map_path=tmp_path / "edited.tif", device="cpu"
    )
    assert after.plan.synth.runtime == "onnx" and {"unet", "decoder"} <= set(calls)
    assert read_raster(after.image_path)[2]["RUNTIME"] == "onnx"
    named = plan_change(
        before.image_path, tmp_path / "t.tif", map_path=tmp_path / "edited.tif", device="cpu", runtime="torch"
    )
    assert named.synth.runtime == "torch"  # one the user names wins
    kw = dict(model=str(model), **ONE_STEP)
    eager, onnx = (plan_synthesis(TOWN_BBOX, tmp_path / "x.tif", runtime=r, **kw) for r in ("torch", "onnx"))
    assert plan_fingerprint(eager) != plan_fingerprint(onnx)
    # BEFORE's onnx cannot run here (a machine without onnxruntime): unnamed, torch draws the change; named, refused
    monkeypatch.setattr(onnx_runtime, "_PACKAGES", (*onnx_runtime._PACKAGES, "not_installed_package"))
    edited = dict(map_path=tmp_path / "edited.tif", device="cpu")
    assert plan_change(before.image_path, tmp_path / "u.tif", **edited).synth.runtime == "torch"
    with pytest.raises(InvalidParameterError, match="not_installed_package"):
        plan_change(before.image_path, tmp_path / "v.tif", runtime="onnx", **edited)


def test_one_session_per_thread_count(model):
    from geodiff.models import load_model

    m = load_model(str(model), "cpu", runtime="onnx")
    latents = torch.zeros(1, m.latent_channels, 8, 8)
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            m.decode_latents(latents)
    finally:
        torch.set_num_threads(before)
    threads = sorted(s.get_session_options().intra_op_num_threads for s in m.onnx.sessions.values())
    assert threads == [1, 2]  # --threads (a Dask worker's count) reaches ONNX Runtime


def test_a_graph_another_process_publishes_meanwhile_is_used(model, monkeypatch):
    from geodiff.models import load_model

    ours, theirs = (load_model(str(model), "cpu", runtime="onnx") for _ in range(2))  # two Dask workers
    latents = torch.zeros(1, ours.latent_channels, 8, 8)
    export, raced = torch.onnx.export, []

    def export_while_the_other_publishes(*a, **k):  # noqa: ANN002, ANN003, ANN202
        if not raced:
            raced.append(True)
            theirs.decode_latents(latents)  # the other worker exports and publishes the same graph first
        return export(*a, **k)

    monkeypatch.setattr(torch.onnx, "export", export_while_the_other_publishes)
    got = ours.decode_latents(latents)  # finds the graph published during its own export: no error, uses it
    torch.testing.assert_close(got, theirs.decode_latents(latents), rtol=0, atol=0)
    assert raced and len(list((get_settings().cache_dir / "onnx").glob("decoder-*.onnx"))) == 1
