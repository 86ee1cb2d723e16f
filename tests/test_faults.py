"""Nothing lost, ever: geodiff under faults and hostile input.

Outputs are complete or absent, never replaced unless named with ``--overwrite``, and runs are deterministic
for a seed. Cases: a full disk (a file-size limit on a subprocess, which fails writes with EFBIG as a full disk
fails them with ENOSPC), SIGTERM mid-run, two writers racing for one name, duplicate and special output paths,
corrupt weights, a truncated .pbf, a crafted checkpoint, malformed settings.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geodiff.cli import main
from geodiff.errors import CorruptFileError, ModelError, OutputError
from geodiff.grid import grid_for_bbox, parse_bbox
from geodiff.io import atomic_path, read_raster, write_class_map
from geodiff.synth import synthesize

from tiny_model import build_tiny_model, make_tiny_model
from town import TOWN, TOWN_BBOX

GEODIFF = [sys.executable, "-c", "import sys; from geodiff.cli import main; sys.exit(main(sys.argv[1:]))"]
BOX = ",".join(str(v) for v in TOWN_BBOX)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- data loss ----------------------------------------------------------------------------------------------


def test_full_disk_keeps_the_old_file_and_fails(tmp_path: Path) -> None:
    """libtiff's 'No space left' must not end as exit 0 with a corrupt file under the final name."""
    out = tmp_path / "map.tif"
    ok = subprocess.run([*GEODIFF, "rasterize", "--bbox", BOX, "--osm", str(TOWN), "--out", str(out),
                         "--progress", "none"], capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    good = out.read_bytes()

    limit = len(good) // 2

    def limit_file_size() -> None:  # writes past half the file's size fail like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(
        [*GEODIFF, "rasterize", "--bbox", BOX, "--osm", str(TOWN), "--out", str(out), "--overwrite",
         "--progress", "none"],
        capture_output=True, text=True, preexec_fn=limit_file_size,
    )  # fmt: skip
    assert full.returncode == OutputError.exit_code, full.stderr
    assert "Error:" in full.stderr and "Traceback" not in full.stderr
    assert out.read_bytes() == good  # the old file is intact
    assert _partials(tmp_path) == []


def test_a_file_that_appears_meanwhile_is_kept(tmp_path: Path) -> None:
    """Two runs to one --out: the later one must not silently replace the earlier one."""
    target = tmp_path / "out.txt"
    with pytest.raises(OutputError, match="created by someone else"), atomic_path(target) as tmp:
        tmp.write_text("mine")
        target.write_text("theirs")  # the other run finished first
    assert target.read_text() == "theirs"
    assert _partials(tmp_path) == []


def test_concurrent_synth_runs_to_one_output(tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "a.tif"
    cmd = [*GEODIFF, "synth", "--bbox", BOX, "--osm", str(TOWN), "--model", str(tiny_model), "--out", str(out),
           "--steps", "2", "--device", "cpu", "--progress", "none"]  # fmt: skip
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=600) for p in procs)
    errors = "".join(p.stderr.read() for p in procs)  # type: ignore[union-attr]
    assert codes[0] == 0 and codes[1] != 0, errors  # exactly one wins; the other says so
    assert "already exists" in errors or "created by someone else" in errors
    assert read_raster(out)[0].shape[0] == 3
    assert _partials(tmp_path) == []


@pytest.mark.parametrize(
    "args",
    [
        ["synth", "--bbox", BOX, "--out", "{d}/a.tif", "--mask-out", "{d}/a.tif"],
        ["rasterize", "--bbox", BOX, "--out", "{d}/m.tif", "--preview", "{d}/m.tif"],
        ["rasterize", "--bbox", BOX, "--out", "{d}/m.tif", "--preview", "{d}/../{n}/m.tif"],
    ],
)
def test_the_same_path_for_two_outputs_is_refused(tmp_path: Path, tiny_model: Path, args: list[str]) -> None:
    argv = [a.format(d=tmp_path, n=tmp_path.name) for a in args] + ["--osm", str(TOWN)]
    if argv[0] == "synth":
        argv += ["--model", str(tiny_model)]
    assert main(argv) == 2
    assert list(tmp_path.iterdir()) == []


def test_special_files_are_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    code = main(["rasterize", "--bbox", BOX, "--osm", str(TOWN), "--out", str(fifo), "--overwrite"])
    assert code == 2
    assert fifo.is_fifo()


# --- left-overs and silent wrong results ----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_mid_run_leaves_nothing(tmp_path: Path, tiny_model: Path, sig: int) -> None:
    out = tmp_path / "a.tif"
    proc = subprocess.Popen(
        [*GEODIFF, "synth", "--bbox", BOX, "--osm", str(TOWN), "--model", str(tiny_model), "--out", str(out),
         "--steps", "1000", "--sampler", "ddpm", "--device", "cpu", "--progress", "json"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in proc.stderr:  # type: ignore[union-attr]
        if '"progress"' in line and json.loads(line)["progress"] > 0.01:
            break  # well into the denoising loop: temporary files exist now
    assert _partials(tmp_path), "the run should have had its temporary outputs open"
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 128 + sig
    assert list(tmp_path.iterdir()) == []


def test_ddpm_is_deterministic_for_a_seed(tmp_path: Path, tiny_model: Path) -> None:
    runs = [
        synthesize(
            parse_bbox(BOX),
            tmp_path / f"{i}.tif",
            osm_path=TOWN,
            model=tiny_model,
            sampler="ddpm",
            steps=5,
            seed=3,
            device="cpu",
            write_mask=False,
        )  # fmt: skip
        for i in range(2)
    ]
    a, b = (read_raster(r.image_path)[0] for r in runs)
    np.testing.assert_array_equal(a, b)


def test_corrupt_weights_are_a_model_error(tmp_path: Path) -> None:
    model = build_tiny_model()
    with torch.no_grad():
        next(model.unet.parameters()).view(-1)[:5] = float("nan")  # as a bit-flipped shard reads
    with pytest.raises(ModelError, match="corrupt"):
        synthesize(parse_bbox(BOX), tmp_path / "a.tif", osm_path=TOWN, model=model, steps=2, device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_truncated_pbf_is_detected(tmp_path: Path) -> None:
    """A .pbf cut where the ways start (a block boundary, so it parses cleanly) is not an empty map."""
    import osmium

    cut = tmp_path / "town.osm.pbf"
    writer = osmium.SimpleWriter(str(cut))
    for node in osmium.FileProcessor(str(TOWN), osmium.osm.NODE):
        writer.add_node(node)
    writer.close()
    with pytest.raises(CorruptFileError, match="truncated"):
        synthesize(parse_bbox(BOX), tmp_path / "a.tif", osm_path=cut, model=build_tiny_model(), steps=2)
    assert main(["rasterize", "--bbox", BOX, "--osm", str(cut), "--out", str(tmp_path / "m.tif")]) == 3


def test_crafted_checkpoint_runs_no_code(tmp_path: Path) -> None:
    from geodiff.errors import ConfigError
    from geodiff.train.loops import _load_checkpoint

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: D105 - what a crafted pickle does on load
            return (Path.write_text, (marker, "code ran"))

    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": Evil()}, ckpt)
    with pytest.raises(ConfigError, match="not a geodiff training checkpoint"):
        _load_checkpoint(ckpt, torch.device("cpu"))
    assert not marker.exists()


# --- tracebacks and misleading messages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("GEODIFF_MAX_PIXELS", "abc", "not an integer"),
        ("GEODIFF_MAX_PIXELS", "0", "must be positive"),
        ("GEODIFF_MAX_PIXELS", "-1", "must be positive"),
        ("GEODIFF_MAX_STRIP_PIXELS", "0", "must be positive"),
        ("GEODIFF_OVERPASS_TIMEOUT_S", "1.5x", "not an integer"),
        ("GEODIFF_USE_CACHE", "maybe", "yes/no"),
    ],
)
def test_malformed_settings_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], var: str, value: str,
    fragment: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(var, value)
    assert main(["rasterize", "--bbox", BOX, "--osm", str(TOWN), "--out", str(tmp_path / "m.tif")]) == 2
    err = capsys.readouterr().err
    assert var in err and fragment in err


def test_unusable_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("GEODIFF_CACHE_DIR", str(blocker))
    assert (
        main(["rasterize", "--bbox", BOX, "--out", str(tmp_path / "m.tif")]) == 2
    )  # Overpass needs the cache
    assert "GEODIFF_CACHE_DIR" in capsys.readouterr().err


def test_read_only_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes anywhere; a read-only mount is what stops it
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True
        )
        if mounted.returncode:
            pytest.skip("running as root without permission to mount a read-only tmpfs")
    else:
        ro.chmod(0o555)
    try:
        code = main(["rasterize", "--bbox", BOX, "--osm", str(TOWN), "--out", str(ro / "m.tif")])
        assert code == OutputError.exit_code
        assert "not writable" in capsys.readouterr().err
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=False)
        ro.chmod(0o755)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["synth", "--bbox", BOX, "--out", "{d}", "--steps", "2"], "is a folder"),
        (["synth", "--bbox", BOX, "--out", "{d}/a.tif", "--steps", "0"], "1<=x<=1000"),
        (
            ["synth", "--bbox", BOX, "--out", "{d}/a.tif", "--model", "tests/geodiff-defualt"],
            "does not exist",
        ),
        (["synth", "--bbox", BOX, "--out", "{d}/a.tif", "--model", "no-such-model"], "no model named"),
        (["synth", "--bbox", "179.9,-17,-179.9,-16", "--out", "{d}/a.tif"], "antimeridian"),
        (
            ["synth", "--bbox", BOX, "--bbox-crs", "EPSG:4326", "--crs", "EPSG:2227", "--out", "{d}/a.tif"],
            "metres",
        ),
        (["dataset", "build", "--images", "{d}", "--out", "{d}/x", "--tile-size", "0"], "--tile-size"),
        (
            ["dataset", "build", "--images", "{d}", "--out", "{d}/x", "--jpeg-quality", "101"],
            "--jpeg-quality",
        ),
        (
            ["augment", "--area", BOX, "--n-windows", "1", "--out", "{d}", "--min-labeled", "2"],
            "--min-labeled",
        ),
    ],
)
def test_bad_input_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    sub = tmp_path / "work"
    sub.mkdir()
    code = main([a.format(d=sub) for a in argv])
    captured = capsys.readouterr()
    assert code in (2, 3, 6), captured.err
    assert fragment in captured.err and "Traceback" not in captured.err
    assert list(sub.iterdir()) == []


def test_dataset_build_into_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x"
    target.write_text("keep me")
    assert main(["dataset", "build", "--images", str(tmp_path), "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "keep me"


def test_augment_into_the_working_folder_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    code = main(
        ["augment", "--area", BOX, "--n-windows", "1", "--osm", str(TOWN), "--out", ".", "--overwrite"]
    )
    assert code == 2 and "not a dataset written by geodiff" in capsys.readouterr().err
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["cache", "notes.txt"]
        or (tmp_path / "notes.txt").exists()
    )


def test_write_class_map_refuses_to_replace_by_default(tmp_path: Path) -> None:
    grid = grid_for_bbox(parse_bbox(BOX), 2.0)
    target = tmp_path / "m.tif"
    target.write_bytes(b"old")
    with pytest.raises(Exception, match="already exists"):
        write_class_map(target, np.zeros(grid.shape, np.uint8), grid)
    assert target.read_bytes() == b"old"
