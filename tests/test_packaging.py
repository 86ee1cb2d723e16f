"""geodiff as an installed package: a wheel carries the default model and works outside the source tree.

The wheel is built from this checkout and installed (without its dependencies) into a fresh virtual
environment that borrows the dependencies of the running one through a ``.pth`` line: what is tested is the
package itself (its files, package data and entry point), not the registry. ``.ci/run`` separately installs the
dependencies from scratch with the README's command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pkg")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(REPO)],
         cwd=root)  # fmt: skip
    wheel = next(root.glob("geodiff-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=root)
    site = _run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root
    ).strip()
    # borrow the running environment's dependencies (appended after the fresh site-packages, so the wheel's
    # geodiff wins over any editable install there)
    (Path(site) / "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEODIFF_") and k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_installed_package_synthesizes_the_sample_outside_the_source_tree(
    installed: Path, tmp_path: Path
) -> None:
    py, exe = installed / "bin" / "python", installed / "bin" / "geodiff"
    where = _run([str(py), "-c", "import geodiff; print(geodiff.__file__)"], cwd=tmp_path, env=_env()).strip()
    assert str(installed) in where  # the installed copy, not the checkout
    listing = json.loads(_run([str(exe), "models", "--json"], cwd=tmp_path, env=_env()))
    default = [m for m in listing["models"] if m["default"]]
    assert default and default[0]["name"] == "geodiff-default" and str(installed) in default[0]["path"]
    assert default[0]["classes"][:2] == ["background", "building"]
    out = _run([str(exe), "synth", "--sample", "--out", "monaco.tif", "--steps", "2", "--progress", "none"],
               cwd=tmp_path, env=_env())  # fmt: skip
    assert (tmp_path / "monaco.tif").is_file() and (tmp_path / "monaco.mask.tif").is_file(), out
    # the shipped fast sampler (the distilled student beside the teacher) from the installed copy
    assert default[0]["qualities"] == ["full", "fast"]
    out = _run([str(exe), "synth", "--sample", "--out", "fast.tif", "--quality", "fast", "--steps", "1",
                "--progress", "none"], cwd=tmp_path, env=_env())  # fmt: skip
    assert (tmp_path / "fast.tif").is_file(), out


def test_wheel_lists_model_and_sample_files(installed: Path) -> None:
    wheel = next(installed.parent.glob("geodiff-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    model = "geodiff/data/models/geodiff-default/"
    for part in (
        "config.json",
        "classes.json",
        "scheduler/scheduler_config.json",
        "vae/config.json",
        "README.md",
    ):
        assert model + part in names
    assert any(n.startswith(model + "unet/") and n.endswith(".safetensors") for n in names)
    assert (
        model + "student/student.json" in names and model + "student/scheduler/scheduler_config.json" in names
    )
    assert any(n.startswith(model + "student/unet/") and n.endswith(".safetensors") for n in names)
    shipped = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist() if i.filename.startswith(model))
    assert shipped <= 64e6, f"the shipped model is {shipped / 1e6:.1f} MB (limit 64 MB, issue 34)"
    assert "geodiff/data/sample_monaco.geojson" in names
    assert not any(n.startswith(("tests/", "runs/", "bench/")) for n in names)


def test_no_module_imports_the_package_face() -> None:
    """``geodiff/__init__.py`` only re-exports: a module importing it would run back up the layers."""
    import ast

    root = Path(__file__).resolve().parent.parent / "geodiff"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if (
                isinstance(node, ast.ImportFrom) and node.module == "geodiff" and node.level == 0
            ) or "geodiff" in names:
                offenders.append(str(path.relative_to(root)))
    assert offenders == []
