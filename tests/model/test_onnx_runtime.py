"""``--runtime onnx``: the U-Net and decoder on ONNX Runtime, through the plan and the CLI (tiny model, town)."""

from __future__ import annotations

import importlib.util
import json
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


def test_cli_runtime_reaches_the_plan(model, tmp_path, capsys):
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
    assert plan["runtime"] == "onnx"
    rc = main([*args, "--out", str(tmp_path / "b.tif"), "--runtime", "tvm", "--dry-run"])
    assert rc == 2 and "'tvm' is not one of 'torch', 'onnx'" in capsys.readouterr().err
