"""Finding models: the shipped default, user models by name, GEODIFF_MODEL_DIR, folders, hub ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geodiff.cli import main
from geodiff.errors import ModelError
from geodiff.models import installed_models, resolve_model
from geodiff.settings import DEFAULT_MODEL_DIR, get_settings

from tiny_model import make_tiny_model


def test_default_is_the_shipped_model() -> None:
    ref = resolve_model(None)
    assert ref.path == DEFAULT_MODEL_DIR and ref.config.resolution_m == 1.0
    assert ref.info()["classes"] == ["background", "building", "road", "water", "vegetation"]


def test_user_models_by_name_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "cache" / "models"  # conftest points GEODIFF_CACHE_DIR at tmp_path/cache
    make_tiny_model(user / "my-region")
    assert resolve_model("my-region").path == user / "my-region"
    names = [m.name for m in installed_models()]
    assert names[0] == "my-region" and "geodiff-default" in names
    # a newer default in the user's folder wins over the shipped one
    make_tiny_model(user / "geodiff-default")
    assert resolve_model(None).path == user / "geodiff-default"
    monkeypatch.setenv("GEODIFF_MODEL_DIR", str(user / "my-region"))
    assert resolve_model(None, get_settings()).path == user / "my-region"


def test_not_found_messages(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model named 'nope'.*installed: geodiff-default"):
        resolve_model("nope")
    # a mistyped relative path is not sent to the hub: its first folder exists here
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("tests/geodiff-defualt")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(tmp_path / "file")


def test_models_command_lists_resolution_classes_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    default = next(m for m in listing["models"] if m["default"])
    assert default["name"] == "geodiff-default" and default["resolution_m"] == 1.0
    assert default["metrics"] and default["classes"][0] == "background"
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "geodiff-default (default)" in text and "1 m/px" in text


def test_a_loaded_model_knows_its_folder(tmp_path: Path) -> None:
    from geodiff.model import GeodiffModel

    folder = make_tiny_model(tmp_path / "tiny")
    model = resolve_model(str(folder)).load("cpu")
    assert model.name_or_path == str(folder)  # what evaluation and experiment reports record
    assert resolve_model(model).name == str(folder)
    assert GeodiffModel(model.config).name_or_path is None
