"""Nothing lost, ever: geodiff under faults and hostile input.

Outputs are complete or absent, never replaced unless named with ``--overwrite``, and runs are deterministic
for a seed. Cases: a full disk (a file-size limit on a subprocess, which fails writes with EFBIG as a full disk
fails them with ENOSPC), SIGTERM mid-run, two writers racing for one name, duplicate and special output paths,
corrupt weights, a truncated .pbf, a crafted checkpoint, malformed settings.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
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


def test_a_closed_stdin_stops_the_run_like_sigterm(tmp_path: Path, tiny_model: Path) -> None:
    """GEODIFF_EXIT_WITH_STDIN=1 (the QGIS plugin): the parent dying closes the pipe, on any OS; geodiff unwinds."""
    out = tmp_path / "a.tif"
    proc = subprocess.Popen(
        [*GEODIFF, "synth", "--bbox", BOX, "--osm", str(TOWN), "--model", str(tiny_model), "--out", str(out),
         "--steps", "1000", "--sampler", "ddpm", "--device", "cpu", "--progress", "json"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "GEODIFF_EXIT_WITH_STDIN": "1"},
    )  # fmt: skip
    for line in proc.stderr:  # type: ignore[union-attr]
        if '"progress"' in line and json.loads(line)["progress"] > 0.01:
            break
    assert _partials(tmp_path)
    proc.stdin.close()  # type: ignore[union-attr]  # what the parent's death does to the pipe
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_a_watched_stdin_held_open_lets_a_command_finish(tmp_path: Path) -> None:
    """The watcher must not outlive the command badly: a daemon thread blocked in sys.stdin's buffered reader made
    the interpreter abort at exit (exit -6, "could not acquire lock for <stdin>") under the QGIS plugin."""
    for _ in range(3):
        proc = subprocess.Popen(
            [*GEODIFF, "models", "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "GEODIFF_EXIT_WITH_STDIN": "1"},
        )  # fmt: skip
        out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
        assert proc.wait(timeout=60) == 0 and b"Fatal" not in err, err
        proc.stdin.close()  # type: ignore[union-attr]  # the parent closes it after the exit, as the plugin does
        assert json.loads(out)["models"]


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
    from geodiff.train.loops import load_checkpoint

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: D105 - what a crafted pickle does on load
            return (Path.write_text, (marker, "code ran"))

    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": Evil()}, ckpt)
    with pytest.raises(ConfigError, match="not a geodiff training checkpoint"):
        load_checkpoint(ckpt, torch.device("cpu"))
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


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write in: chmod for a user, a read-only tmpfs for root (who writes anywhere else)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True
        )
        if mounted.returncode:
            pytest.skip("running as root without permission to mount a read-only tmpfs")
    else:
        ro.chmod(0o555)
    try:
        yield ro
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=False)
        ro.chmod(0o755)


def test_read_only_output_folder(read_only_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rasterize", "--bbox", BOX, "--osm", str(TOWN), "--out", str(read_only_folder / "m.tif")])
    assert code == OutputError.exit_code
    assert "not writable" in capsys.readouterr().err


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


# --- outputs of several files: one unit ---------------------------------------------------------------------
# Each publishing step (a hard link or rename in geodiff.io) is made to fail in turn: a full disk (ENOSPC) or
# SIGTERM (the exception geodiff's CLI turns it into). Before the last rename nothing new may remain and every
# old file must be intact.


class _FailAt:
    """Wrap os.link / os.replace / os.rename so that the ``n``-th publishing call raises ``exc``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, n: int, exc: BaseException) -> None:
        self.n, self.exc, self.calls = n, exc, 0
        for name in ("link", "replace", "rename"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(real))

    def _wrap(self, real):  # noqa: ANN001, ANN202
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.calls += 1
            if self.calls == self.n:
                raise self.exc
            return real(*args, **kwargs)

        return call


def _three_file_transaction(folder: Path, overwrite: bool) -> None:
    from geodiff.io import Transaction

    with Transaction(overwrite) as tx:
        for name in ("a.tif", "a.mask.tif", "a.qml"):
            with tx.stage(folder / name) as tmp:
                tmp.write_text(f"new {name}")


def _terminated() -> BaseException:
    from geodiff.cli import Terminated

    return Terminated(signal.SIGTERM)


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("fault", ["enospc", "sigterm"])
def test_a_failure_at_each_publish_step_leaves_the_old_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool, fault: str
) -> None:
    names = ("a.tif", "a.mask.tif", "a.qml")
    steps = 0
    while True:  # fail the 1st, 2nd, ... publishing call until the transaction gets through
        steps += 1
        folder = tmp_path / f"{steps}"
        folder.mkdir()
        if overwrite:
            for name in names:
                (folder / name).write_text(f"old {name}")
        exc = OSError(errno.ENOSPC, "No space left on device") if fault == "enospc" else _terminated()
        with monkeypatch.context() as m:
            fail = _FailAt(m, steps, exc)
            try:
                _three_file_transaction(folder, overwrite)
            except (OSError, KeyboardInterrupt) as raised:
                if fault == "enospc":
                    assert isinstance(raised, OutputError) and "free some disk space" in str(raised)
                else:
                    assert raised is exc
                expected = {n: f"old {n}" for n in names} if overwrite else {}
                assert {p.name: p.read_text() for p in folder.iterdir()} == expected, f"step {steps}"
                continue
        assert fail.calls >= len(names)  # every file went through a rename: the loop covered each of them
        assert {p.name: p.read_text() for p in folder.iterdir()} == {n: f"new {n}" for n in names}
        break
    assert steps > len(names)


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("late", ["a.tif", "a.mask.tif", "a.qml"])
def test_a_file_appearing_at_any_output_name_keeps_everything(
    tmp_path: Path, overwrite: bool, late: str
) -> None:
    from geodiff.io import Transaction

    with pytest.raises(OutputError, match="created by someone else"), Transaction(overwrite) as tx:
        for name in ("a.tif", "a.mask.tif", "a.qml"):
            with tx.stage(tmp_path / name) as tmp:
                tmp.write_text("new")
        (tmp_path / late).write_text("theirs")  # another run finished first, after this one's check
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {late: "theirs"}


def test_a_full_disk_while_staging_the_second_file_leaves_nothing(tmp_path: Path) -> None:
    from geodiff.io import Transaction

    (tmp_path / "b.json").write_text("old")
    with pytest.raises(OutputError, match="free some disk space"), Transaction(overwrite=True) as tx:
        with tx.stage(tmp_path / "a.npz") as tmp:
            tmp.write_text("new")
        with tx.stage(tmp_path / "b.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"b.json": "old"}


def test_rasterize_publishes_map_style_and_preview_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["rasterize", "--bbox", BOX, "--osm", str(TOWN), "--out", str(tmp_path / "m.tif"), "--preview",
            str(tmp_path / "m.png"), "--progress", "none"]  # fmt: skip
    with monkeypatch.context() as m:
        _FailAt(m, 3, OSError(errno.ENOSPC, "No space left on device"))  # the preview, after map and style
        assert main(argv) == OutputError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "m.qml", "m.tif"]


def test_synth_keeps_the_old_pair_when_the_mask_cannot_be_published(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = dict(osm_path=TOWN, model=tiny_model, steps=2, device="cpu", seed=1)
    synthesize(parse_bbox(BOX), tmp_path / "a.tif", **args)
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(old) == ["a.mask.qml", "a.mask.tif", "a.qml", "a.tif"]
    with monkeypatch.context() as m:
        _FailAt(m, 6, _terminated())  # link(old, backup) + replace per file: the 6th call is the mask's
        with pytest.raises(KeyboardInterrupt):
            synthesize(parse_bbox(BOX), tmp_path / "a.tif", overwrite=True, **{**args, "seed": 2})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old


def test_two_rasters_sharing_one_style_file_are_refused(tmp_path: Path, tiny_model: Path) -> None:
    argv = ["synth", "--bbox", BOX, "--osm", str(TOWN), "--model", str(tiny_model), "--out",
            str(tmp_path / "z.tif"), "--mask-out", str(tmp_path / "z.tiff")]  # fmt: skip
    assert main(argv) == 2
    assert list(tmp_path.iterdir()) == []


# --- folder outputs -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mask_folder import make_folder

    return make_folder(tmp_path_factory.mktemp("masks"), n=2, size=(140, 140))


def _build(src: Path, out: Path, *extra: str) -> int:
    return main(["dataset", "build", "--images", str(src), "--out", str(out), "--tile-size", "64",
                 "--val-fraction", "0.5", "--progress", "none", *extra])  # fmt: skip


def test_dataset_build_refuses_a_users_files_even_with_overwrite(tmp_path: Path, mask_folder: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "tiles.npz").write_text("mine")
    assert _build(mask_folder, out) == 2
    assert _build(mask_folder, out, "--overwrite") == 2  # not a dataset geodiff wrote: never replaced
    assert [p.name for p in out.iterdir()] == ["tiles.npz"] and (out / "tiles.npz").read_text() == "mine"


def test_dataset_build_replaces_only_its_own_files(tmp_path: Path, mask_folder: Path) -> None:
    out = tmp_path / "ds"
    assert _build(mask_folder, out) == 0
    (out / "notes.md").write_text("mine")
    assert _build(mask_folder, out) == 2  # no --overwrite
    assert _build(mask_folder, out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.md", "tiles.npz"]


def test_dataset_build_keeps_a_dataset_that_appears_during_the_run(
    tmp_path: Path, mask_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geodiff.train.dataset as ds

    out = tmp_path / "ds"
    real = ds._encode

    def encode_and_race(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if not out.exists():  # another build publishes the same folder while this one cuts tiles
            out.mkdir()
            (out / "manifest.json").write_text("theirs")
        return real(*args, **kwargs)

    monkeypatch.setattr(ds, "_encode", encode_and_race)
    assert _build(mask_folder, out) == OutputError.exit_code
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert (out / "manifest.json").read_text() == "theirs"


@pytest.mark.parametrize("value", ["nan", "0", "-1", "inf"])
def test_dataset_build_refuses_a_resolution_that_is_not_a_positive_number(
    tmp_path: Path, mask_folder: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert _build(mask_folder, tmp_path / "ds", "--resolution", value) == 2
    assert "--resolution" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_between_tiles_and_manifest_leaves_the_old_dataset(
    tmp_path: Path, mask_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ds"
    assert _build(mask_folder, out) == 0
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as m:
        _FailAt(m, 4, OSError(errno.ENOSPC, "No space left on device"))  # the manifest's replace
        assert _build(mask_folder, out, "--overwrite", "--tile-size", "128") == OutputError.exit_code
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--segnet-steps", "-5"], "--segnet-steps"),
        (["--seam-size", "-1"], "--seam-size"),
        (["--seed", "-1"], "--seed"),
        (["--mask-colors", "nosuch"], "unknown colour table"),
        (["--threads", "100000"], "--threads"),
    ],
)
def test_evaluate_refuses_bad_values_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    code = main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "eval"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_evaluate_out_that_is_not_a_folder_is_refused_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    out = tmp_path / "eval"
    out.write_text("mine") if kind == "file" else os.mkfifo(out)
    assert main(["evaluate", "--data", str(tmp_path), "--out", str(out)]) == 2
    assert "give a folder" in capsys.readouterr().err


def test_evaluate_refuses_a_folder_with_a_users_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "summary.md").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert main(["evaluate", "--data", str(tmp_path), "--out", str(out), *extra]) == 2
    assert (out / "summary.md").read_text() == "mine"


def test_augment_overwrite_keeps_a_user_file_at_a_generated_name(tmp_path: Path) -> None:
    from geodiff.augment import MANIFEST_FORMAT, _finalise

    out, staging = tmp_path / "ds", tmp_path / ".ds.partial"
    for folder in (out, staging):
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
    listed = {"format": MANIFEST_FORMAT, "samples": [{"image": "images/w0.png", "mask": "masks/w0.png"}]}
    (out / "manifest.json").write_text(json.dumps(listed))
    for rel in ("images/w0.png", "masks/w0.png", "images/w1.png"):  # images/w1.png: the user's own
        (out / rel).write_text(f"old {rel}")
    for rel in ("images/w0.png", "masks/w0.png", "images/w1.png", "masks/w1.png", "manifest.csv"):
        (staging / rel).write_text(f"new {rel}")
    (staging / "manifest.json").write_text("new")
    before = {p: p.read_text() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="not a file of the dataset geodiff wrote"):
        _finalise(staging, out, overwrite=True)
    assert {p: p.read_text() for p in out.rglob("*") if p.is_file()} == before


# --- one line, never a traceback ------------------------------------------------------------------------------


def test_an_os_error_anywhere_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import geodiff.rasterize

    def full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache.json"))

    monkeypatch.setattr(geodiff.rasterize, "rasterize_bbox", full)
    argv = [
        "rasterize",
        "--bbox",
        BOX,
        "--osm",
        str(TOWN),
        "--out",
        str(tmp_path / "m.tif"),
        "--progress",
        "none",
    ]
    assert main(argv) == OutputError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: No space left") and "cache.json" in err


def test_a_memory_error_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import geodiff.rasterize

    def oom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise MemoryError

    monkeypatch.setattr(geodiff.rasterize, "rasterize_bbox", oom)
    assert main(["rasterize", "--bbox", BOX, "--osm", str(TOWN), "--out", str(tmp_path / "m.tif")]) == 2
    assert "not enough memory" in capsys.readouterr().err


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geodiff.train.loops import _save_checkpoint

    ckpt = tmp_path / "checkpoint.pt"
    _save_checkpoint(ckpt, {"step": 1})

    def full(obj, f, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        Path(f).write_bytes(b"trunc")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OutputError, match="free some disk space"):
        _save_checkpoint(ckpt, {"step": 2})
    assert torch.load(ckpt, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_an_empty_checkpoint_is_one_line(tmp_path: Path) -> None:
    from geodiff.errors import ConfigError
    from geodiff.train.loops import load_checkpoint

    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a geodiff training checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt", torch.device("cpu"))


def test_a_run_folder_name_taken_by_a_file_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    from geodiff.distributed import RunFolder
    from geodiff.synth import plan_synthesis

    (tmp_path / "a.tif.run").write_text("mine")
    plan = plan_synthesis(parse_bbox(BOX), tmp_path / "a.tif", osm_path=TOWN, model=tiny_model, device="cpu")
    with pytest.raises(ValueError, match="not a folder"):
        RunFolder.open(plan)
    assert (tmp_path / "a.tif.run").read_text() == "mine"


def test_batch_size_and_threads_are_part_of_the_run_fingerprint(tmp_path: Path, tiny_model: Path) -> None:
    """They change a few values, so a resume with other values must not mix strips of both."""
    from geodiff.distributed import plan_fingerprint
    from geodiff.synth import plan_synthesis

    def fp(batch_size: int, threads: int) -> str:
        plan = plan_synthesis(parse_bbox(BOX), tmp_path / "a.tif", osm_path=TOWN, model=tiny_model,
                              device="cpu", batch_size=batch_size)  # fmt: skip
        return plan_fingerprint(plan, threads)

    assert len({fp(8, 1), fp(4, 1), fp(8, 2)}) == 3 and fp(8, 1) == fp(8, 1)


# --- Dask's own logging: in the run folder, not on the terminal -----------------------------------------------


def _nan_model(path: Path) -> Path:
    model = build_tiny_model()
    with torch.no_grad():
        next(model.unet.parameters()).view(-1)[:5] = float("nan")  # every strip fails with a ModelError
    model.save_pretrained(path)
    return path


def test_a_model_error_on_dask_workers_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Not 22 lines of "Compute Failed" from each worker: one Error line, the details in the run's dask.log."""
    out = tmp_path / "a.tif"
    model = _nan_model(tmp_path / "nan")
    argv = ["synth", "--bbox", BOX, "--osm", str(TOWN), "--model", str(model), "--out", str(out), "--steps", "2",
            "--device", "cpu", "--workers", "2", "--progress", "none"]  # fmt: skip
    assert main(argv) == ModelError.exit_code
    err = capfd.readouterr().err  # file descriptors: what the worker processes print is caught too
    assert err.count("\n") == 1 and err.startswith("Error: the model produced non-finite"), err
    log = (tmp_path / "a.tif.run" / "dask.log").read_text()
    assert log.count("geodiff.errors.ModelError: the model") == 1  # its traceback, once: not retried
    assert not out.exists()


def test_ctrl_c_on_a_dask_run_is_one_line(tmp_path: Path, tiny_model: Path) -> None:
    """Ctrl-C reaches every process of the terminal's group: the workers' tracebacks go to the run's dask.log."""
    out = tmp_path / "a.tif"
    proc = subprocess.Popen(
        [*GEODIFF, "synth", "--bbox", BOX, "--osm", str(TOWN), "--model", str(tiny_model), "--out", str(out),
         "--steps", "1000", "--sampler", "ddpm", "--device", "cpu", "--workers", "2", "--progress", "json"],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        # a terminal's foreground job hears Ctrl-C; a test run started in the background (`cmd &` in a script)
        # would hand its children SIGINT ignored, and Python keeps it ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    for line in proc.stderr:  # type: ignore[union-attr]
        if '"cluster"' in line:
            break  # the workers run
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    rest = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.wait(timeout=120) == 130
    lines = [line for line in rest.splitlines() if line.strip() and not line.startswith("{")]
    assert lines == ["Aborted: no output was written under the final name."], rest
    assert not out.exists() and (tmp_path / "a.tif.run" / "dask.log").is_file()


def test_an_unreachable_scheduler_is_one_line(
    tmp_path: Path, tiny_model: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import dask

    argv = ["synth", "--bbox", BOX, "--osm", str(TOWN), "--model", str(tiny_model), "--out", str(tmp_path / "a.tif"),
            "--steps", "2", "--device", "cpu", "--scheduler", "tcp://127.0.0.1:1", "--progress", "none"]  # fmt: skip
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(argv) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: no Dask scheduler answers at tcp://"), err


# --- each remaining traceback case: one line ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["rasterize", "synth"])
@pytest.mark.parametrize("out", ["{d}/" + "x" * 240 + ".tif", ".", "", "/"])
def test_output_names_that_cannot_be_files_are_one_line(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    command: str, out: str,
) -> None:  # fmt: skip
    """A name over the file system's limit (with room for the temporary name), and folders given as --out."""
    monkeypatch.chdir(tmp_path)
    argv = [command, "--bbox", BOX, "--osm", str(TOWN), "--out", out.format(d=tmp_path), "--progress", "none"]
    if command == "synth":
        argv += ["--model", str(tiny_model), "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: "), err
    assert ("bytes long" if len(out) > 200 else "is a folder") in err
    assert list(tmp_path.iterdir()) == []


def test_a_dataset_folder_name_too_long_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / ("y" * 250)  # fits the file system, but not the staging folder's name beside it
    argv = [
        "augment",
        "--area",
        BOX,
        "--osm",
        str(TOWN),
        "--n-windows",
        "1",
        "--out",
        str(out),
        "--progress",
        "none",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bytes long" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "manifest"])
def test_a_corrupt_dataset_is_one_line(
    tmp_path: Path, dataset: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    tiles = ds / "tiles.npz"
    if damage == "truncate":
        tiles.write_bytes(tiles.read_bytes()[: tiles.stat().st_size // 2])
    elif damage == "garbage":
        tiles.write_bytes(b"\0" * 1000)
    else:
        (ds / "manifest.json").write_text('{"format": ')
    argv = ["evaluate", "--data", str(ds), "--model", str(tiny_model), "--out", str(tmp_path / "rep"),
            "--segnet-steps", "1", "--limit", "2", "--seam-size", "0", "--progress", "none"]  # fmt: skip
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is corrupt" in err and "build the dataset again" in err, err
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("content", ["[1, 2]", '"a string"', '{"features": [1]}', "\udcff"])
def test_windows_that_are_not_geojson_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    windows = tmp_path / "w.json"
    windows.write_bytes(content.encode("utf-8", "surrogateescape"))
    out = tmp_path / "aug"
    assert main(["augment", "--windows", str(windows), "--osm", str(TOWN), "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(windows) in err and "GeoJSON" in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["dataset", "build", "--images", "{src}", "--out", "{ro}/ds"],
        ["dataset", "build", "--images", "{src}", "--out", "{ro}", "--overwrite"],
        ["evaluate", "--data", "{src}", "--model", "{model}", "--out", "{ro}/rep", "--limit", "2"],
        ["evaluate", "--data", "{src}", "--model", "{model}", "--out", "{ro}", "--limit", "2", "--overwrite"],
        [
            "augment",
            "--area",
            BOX,
            "--osm",
            str(TOWN),
            "--n-windows",
            "1",
            "--model",
            "{model}",
            "--out",
            "{ro}/a",
        ],
        [
            "synth",
            "--bbox",
            BOX,
            "--osm",
            str(TOWN),
            "--model",
            "{model}",
            "--out",
            "{ro}/a.tif",
            "--workers",
            "1",
        ],
    ],
)
def test_outputs_in_a_read_only_folder_are_one_line(
    read_only_folder: Path, mask_folder: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:  # fmt: skip
    """Folder outputs, the staging folder (mkdtemp) and a run folder (mkdir): refused before any work."""
    values = dict(src=mask_folder, ro=read_only_folder, model=tiny_model)
    assert main([a.format(**values) for a in argv] + ["--progress", "none"]) == OutputError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: ") and str(read_only_folder) in err, err


# --- training run folders: published whole ------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fault", ["sigterm", "enospc"])
def test_an_interrupted_export_keeps_the_old_model_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The export is built beside <run>/model and swapped in whole: never a half-written model under the name."""
    import geodiff.train.card
    from geodiff.train.loops import export_model

    model, output = build_tiny_model(), tmp_path / "model"
    export_model(model, None, output, {"step": 1})
    (output / "card_notes.md").write_text("measured by hand")
    export_model(model, None, output, {"step": 2})  # the notes are kept into the new folder
    before = _tree(output)
    assert "card_notes.md" in before and b'"step": 2' in before["training.json"]

    def fail(folder, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - the weights are written by now
        assert (folder / "unet").is_dir()
        if fault == "sigterm":
            raise _terminated()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(geodiff.train.card, "write_model_card", fail)
    with pytest.raises(KeyboardInterrupt if fault == "sigterm" else OutputError):
        export_model(build_tiny_model(seed=1), None, output, {"step": 3})
    assert _tree(output) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left


def test_an_interrupted_snapshot_leaves_the_old_one_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from geodiff.train.loops import keep_snapshot

    part = tmp_path / "diffusion"
    (part / "src").mkdir(parents=True)
    (part / "src" / "a.bin").write_bytes(b"old")
    dest = keep_snapshot(part, 5, {"a.bin": part / "src" / "a.bin"})
    (part / "src" / "a.bin").write_bytes(b"new")
    (part / "src" / "b.bin").write_bytes(b"new")
    real_copy2 = shutil.copy2

    def interrupted(src, dst, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(src).name == "b.bin":
            raise _terminated()
        return real_copy2(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copy2", interrupted)
    for step in (5, 6):  # the same step again (a rerun) and a new one
        with pytest.raises(KeyboardInterrupt):
            keep_snapshot(part, step, {n: part / "src" / n for n in ("a.bin", "b.bin")})
    assert _tree(dest) == {"a.bin": b"old"}
    assert sorted(p.name for p in (part / "exports").iterdir()) == ["step-0000005"]
