"""Every option of every command reaches the library.

The test walks the click commands themselves (so a new option is covered, or fails here until it gets a value
below), invokes each command with one option away from its default, and compares what the library entry points
received with a run at the defaults: an option that is parsed and then dropped on the way (as ``synth --cog``
once was) leaves the two identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import numpy as np
import pytest
from pyproj import CRS

from geodiff.cli import cli, main

REPO = Path(__file__).resolve().parents[2]

GRID = SimpleNamespace(width=2, height=2, resolution=1.0, crs=CRS.from_epsg(32632))


def _norm(value: Any) -> Any:
    """A comparable picture of what a library function received (objects without values: their type)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return type(value).__name__, {
            f.name: _norm(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool | type(None)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, CRS):
        return value.to_string()
    return type(value).__name__


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """Replace the library entry points the commands call with recorders returning harmless results."""
    import torch

    import geodiff.augment
    import geodiff.change
    import geodiff.distributed
    import geodiff.evaluate.report
    import geodiff.evaluate.run
    import geodiff.rasterize
    import geodiff.synth
    import geodiff.train.dataset
    import geodiff.train.distill
    import geodiff.train.loops
    import geodiff.train.surgery.finalize
    import geodiff.train.surgery.mix

    seen: list[Any] = []
    vae = tmp_path / "ae" / "vae"
    vae.mkdir(parents=True)
    (vae.parent / "metrics.json").write_text("{}")
    plan = SimpleNamespace(to_dict=lambda: {}, describe=lambda: "plan", strips=[0])
    result = SimpleNamespace(image_path=Path("a.tif"), mask_path=None, grid=GRID, seconds=0.0)
    report = {
        "map_fidelity": {"real": {"miou": 0}, "synthetic": {"miou": 0}},
        "distance": {"seg_feature_kid": 0},
    }
    manifest = {"num_tiles": 0, "num_train": 0, "num_val": 0}
    fakes = {
        (geodiff.synth, "plan_synthesis"): plan,
        (geodiff.synth, "synthesize"): result,
        (geodiff.distributed, "synthesize_distributed"): result,
        (geodiff.distributed, "estimate_distributed_seconds"): 1.0,
        (geodiff.distributed, "dask_client"): contextlib.nullcontext("client"),
        (geodiff.augment, "generate_dataset"): SimpleNamespace(n_samples=0, out_dir="d", seconds=0.0),
        (geodiff.augment, "read_windows"): [],
        (geodiff.change, "plan_change"): SimpleNamespace(),
        (geodiff.change, "synthesize_change"): SimpleNamespace(
            image_path="a.tif",
            mask_path="a.mask.tif",
            change_path="a.change.tif",
            changed_pixels=0,
            area_pixels=0,
            windows=0,
            seconds=0.0,
        ),
        (geodiff.rasterize, "rasterize_to_file"): (np.zeros((2, 2), np.uint8), GRID),
        (geodiff.evaluate.run, "evaluate_model"): report,
        (geodiff.train.dataset, "build_from_mask_folder"): manifest,
        (geodiff.train.dataset, "build_from_orthophoto"): manifest,
        # folder outputs: --overwrite reaches the transaction that publishes the folder
        (geodiff.train.dataset, "dataset_transaction"): SimpleNamespace(),
        (geodiff.evaluate.report, "report_transaction"): SimpleNamespace(),
        (geodiff.train.loops, "train_autoencoder"): vae,
        (geodiff.train.loops, "train_diffusion"): vae,
        (geodiff.train.distill, "train_distill"): vae,
        (geodiff.train.surgery.mix, "mix_decoder_folders"): vae,
        (geodiff.train.surgery.finalize, "finalize_model"): {},
        (torch, "set_num_threads"): None,
    }
    for (module, name), returned in fakes.items():

        def record(*args: Any, _name: str = name, _returned: Any = returned, **kwargs: Any) -> Any:
            seen.append((_name, _norm(args), _norm(kwargs)))
            return _returned

        monkeypatch.setattr(module, name, record)
    return seen


def _files(tmp: Path) -> dict[str, Path]:
    names = {
        "osm": "a.osm", "osm2": "b.osm", "vector": "a.geojson", "windows": "w.txt", "windows2": "w2.txt",
        "ortho": "o.tif", "ortho2": "o2.tif", "before": "before.tif", "before2": "before2.tif",
        "map": "map.tif", "edits": "edits.gpkg", "segnet": "segnet/x", "weights": "w.pt",
    }  # fmt: skip
    paths = {k: tmp / v for k, v in names.items()}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    for d in ("images", "images2", "data", "data2", "reported", "built", "vae_a", "vae_b"):
        (tmp / d).mkdir()
        paths[d] = tmp / d
    (tmp / "reported" / "report.json").write_text("{}")
    (tmp / "built" / "manifest.json").write_text("{}")
    return paths


BBOX = "7.418,43.732,7.422,43.735"


def _baselines(f: dict[str, Path], tmp: Path) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Per command, invocations at the defaults (options a baseline sets are varied from its value)."""
    return {
        ("synth",): [{"--bbox": BBOX, "--out": tmp / "o.tif"}],
        ("rasterize",): [{"--bbox": BBOX, "--out": tmp / "o.tif"}],
        ("augment",): [
            {"--area": BBOX, "--n-windows": 1, "--out": tmp / "aug"},
            {"--windows": f["windows"], "--out": tmp / "aug"},
        ],
        ("evaluate",): [
            {"--data": f["data"], "--out": tmp / "report"},
            {"--data": f["data"], "--out": f["reported"]},  # an existing report: --overwrite decides
        ],
        ("dataset", "build"): [
            {"--images": f["images"], "--out": tmp / "ds"},
            {"--orthophoto": f["ortho"], "--out": tmp / "ds"},
            {"--images": f["images"], "--out": f["built"]},  # an existing dataset: --overwrite decides
        ],
        ("train", "autoencoder"): [{"--config": REPO / "configs" / "cpu_default.toml"}],
        ("train", "diffusion"): [{"--config": REPO / "configs" / "cpu_default.toml"}],
        ("train", "distill"): [{"--config": REPO / "configs" / "cpu_distill.toml"}],
        ("models",): [{}],
        ("change",): [{"--before": f["before"], "--out": tmp / "after.tif"}],
        # positional arguments: a key without a value
        ("model", "mix-decoders"): [
            {str(f["vae_a"]): None, str(f["vae_b"]): None, "--alpha": 0.8, "--out": tmp / "mix"}
        ],
        ("model", "finalize"): [{str(f["data"]): None, str(f["images"]): None}],
    }


def _values(f: dict[str, Path], tmp: Path) -> dict[str, Any]:
    """Non-default values of the options whose type says too little to make one up."""
    return {
        "--bbox": "7.4181,43.732,7.422,43.735",
        "--area": "7.4181,43.732,7.422,43.735",
        "--bbox-crs": "OGC:CRS84",  # the same numbers, another CRS
        "--crs": "EPSG:32632",
        "--osm": f["osm"],
        "--vector": f["vector"],
        "--class-field": "kind",
        "--model": "another-model",
        "--device": "cpu",
        "--out": tmp / "other",
        "--mask-out": tmp / "m.tif",
        "--preview": tmp / "p.png",
        "--scheduler": "tcp://127.0.0.1:8786",
        "--windows": f["windows2"],
        "--data": f["data2"],
        "--mask-colors": "geodiff",
        "--seg-net": f["segnet"],
        "--inception-weights": f["weights"],
        "--images": f["images2"],
        "--orthophoto": f["ortho2"],
        "--colors": "geodiff",
        "--config": REPO / "configs" / "finetune_default.toml",
        "--alpha": 0.5,
        "--vae": f["vae_a"],
        "--run-dir": f["data2"],
        "--before": f["before2"],
        "--map": f["map"],
        "--edits": f["edits"],
        "--change-out": tmp / "c.tif",
    }


EXCLUDES = {"--sample": ("--bbox",)}  # options that replace another one of the baseline


def _other(param: click.Option, values: dict[str, Any]) -> list[Any]:
    """Values of ``param`` away from its default (``None`` for a flag)."""
    opt = max(param.opts, key=len)
    if param.is_flag:
        return (
            [(o, None) for o in param.opts + param.secondary_opts] if param.default is None else [(opt, None)]
        )
    if opt in values:
        return [(opt, values[opt])]
    if isinstance(param.type, click.Choice):
        return [(opt, next(c for c in param.type.choices if c != param.default))]
    if isinstance(param.type, click.types.IntParamType):
        return [(opt, 2 if param.default is None else param.default + 1)]
    if isinstance(param.type, click.types.FloatParamType):
        return [(opt, 2.0 if param.default is None else param.default + 0.25)]
    raise AssertionError(f"{opt}: no value to try; add one to _values()")


def _commands(group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, ctx, (*path, name))
        else:
            yield (*path, name), cmd


def _run(path: tuple[str, ...], opts: dict[str, Any], calls: list[Any], capsys) -> tuple[int, Any]:
    argv = [*path]
    for k, v in opts.items():
        argv += [k] if v is None else [k, str(v)]
    calls.clear()
    rc = main(argv)
    out = capsys.readouterr()
    return rc, (list(calls), out.out, argv, out.err)


def test_every_option_of_every_command_reaches_the_library(calls, tmp_path, capsys):
    files = _files(tmp_path)
    baselines, values = _baselines(files, tmp_path), _values(files, tmp_path)
    commands = dict(_commands(cli, click.Context(cli)))
    assert set(commands) == set(baselines), "a new command: give it a baseline invocation here"
    lost = []
    for path, cmd in commands.items():
        runs = []
        for base in baselines[path]:
            rc, seen = _run(path, base, calls, capsys)
            runs.append((base, rc, seen))
        assert any(rc == 0 for _, rc, _ in runs), f"{path}: no baseline runs: {runs}"
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            for opt, value in _other(param, values):
                reached = False
                for base, rc, seen in runs:
                    variant = {
                        k: v for k, v in base.items() if k not in (*param.opts, *EXCLUDES.get(opt, ()))
                    }
                    variant[opt] = value
                    v_rc, v_seen = _run(path, variant, calls, capsys)
                    if v_rc == 0 and (rc, seen[:2]) != (v_rc, v_seen[:2]):
                        reached = True
                        break
                if not reached:
                    lost.append(f"{' '.join(path)} {opt} {'' if value is None else value}".strip())
    assert not lost, "options parsed and never passed on: " + ", ".join(lost)


def test_synth_cog_reaches_the_plan(calls, tmp_path, capsys):
    """The bug this walk was written for: ``--cog``/``--no-cog`` were parsed and dropped."""
    for flag, want in (("--cog", True), ("--no-cog", False)):
        assert main(["synth", "--bbox", BBOX, "--out", str(tmp_path / "o.tif"), flag]) == 0
        name, _, kwargs = calls[0]
        assert name == "plan_synthesis" and kwargs["output"][1]["cog"] is want
        calls.clear()
