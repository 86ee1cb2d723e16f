"""Finding and loading models: the shipped default, installed models by name, folders, hub ids; devices.

Where models come from, first match wins:

1. a :class:`~geodiff.model.GeodiffModel` instance, used as is;
2. a path to a model folder (``./my-model``, ``runs/x/model``, ``/abs/path``): it must exist;
3. a name (``geodiff-default``): a folder of that name in the user's model folder
   (``$GEODIFF_CACHE_DIR/models``, by default ``~/.cache/geodiff/models``) or among the models shipped inside
   the package (``geodiff/data/models``);
4. a hub id (``org/name``, only when no local folder of that name exists): downloaded with
   ``huggingface_hub.snapshot_download`` (needs internet).

``None`` is the default model: ``GEODIFF_MODEL_DIR`` when set, else ``geodiff-default`` looked up by name (so a
newer default dropped into the user's model folder wins over the shipped one).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geodiff.errors import InvalidParameterError, ModelError
from geodiff.model.folder import HOW_TO_GET_A_MODEL as _HOW
from geodiff.model.folder import STUDENT_INFO, model_folder, student_steps
from geodiff.settings import DEFAULT_MODEL_NAME, SHIPPED_MODELS_DIR, Settings, get_settings

if TYPE_CHECKING:
    from geodiff.model import GeodiffModel, ModelConfig


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"`` -> a device string, with a clear error for a missing GPU."""
    import torch

    text = (device or "auto").strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return text
    if re.fullmatch(r"cuda(:\d+)?", text):
        if not torch.cuda.is_available():
            raise InvalidParameterError(
                f"--device {text} was asked for but no CUDA GPU is visible: use --device cpu"
            )
        index = int(text.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InvalidParameterError(
                f"--device {text}: only {torch.cuda.device_count()} CUDA GPU(s) are visible (cuda:0..)"
            )
        return text
    raise InvalidParameterError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")


def device_dtype(device: str) -> Any:
    """bfloat16 on CUDA (the models are trained with bf16 autocast), float32 on the CPU."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def user_models_dir(settings: Settings | None = None) -> Path:
    """Where users put (or download) extra models: ``<cache dir>/models``."""
    return Path((settings or get_settings()).cache_dir) / "models"


def model_search_path(settings: Settings | None = None) -> list[Path]:
    """Folders searched for models by name, in order."""
    return [user_models_dir(settings), SHIPPED_MODELS_DIR]


@dataclass
class ModelRef:
    """A resolved model: its name, folder and config, loaded (weights) only when needed, once per device."""

    name: str
    path: Path | None
    config: ModelConfig
    _loaded: dict[str, GeodiffModel] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        # a reference travels (to Dask workers) as its folder; only an in-memory model travels with its weights
        state = dict(vars(self))
        if self.path is not None:
            state["_loaded"] = {}
        return state

    def load(self, device: str = "auto", quality: str | None = None, runtime: str = "torch") -> GeodiffModel:
        """The :class:`~geodiff.model.GeodiffModel` on ``device`` (bf16 on CUDA, float32 on the CPU).

        ``quality``: ``"full"`` or ``"fast"`` (the folder's distilled student as the U-Net,
        :mod:`geodiff.model.student`); None: ``"full"`` for a folder, an in-memory model's own.
        ``runtime``: ``"torch"``, or ``"onnx"`` (U-Net and decoder on ONNX Runtime, CPU only;
        :mod:`geodiff.model.onnx_runtime`).
        """
        from geodiff.model import GeodiffModel
        from geodiff.model.onnx_runtime import check_runtime

        dev = resolve_device(device)
        check_runtime(runtime, dev)
        quality = self.quality(quality)
        if self.path is None:  # an in-memory model: move it; its quality is its own
            model = next(iter(self._loaded.values()))  # the torch one, always first
            if dev not in self._loaded:
                self._loaded = {dev: model.to(device=dev, dtype=device_dtype(dev))}
            key = dev if runtime == "torch" else f"{dev}|{runtime}"
            if key not in self._loaded:
                self._loaded[key] = self._loaded[dev].with_runtime(runtime)
            return self._loaded[key]
        key = f"{dev}|{quality}|{runtime}"
        if key not in self._loaded:
            model = GeodiffModel.from_pretrained(
                self.path, device=dev, dtype=device_dtype(dev), quality=quality
            )
            self._loaded = {key: model.with_runtime(runtime)}
        return self._loaded[key]

    def quality(self, quality: str | None = None) -> str:
        """The quality a run samples at: ``quality``, or (``None``) an in-memory model's own, else ``"full"``.

        ``"fast"`` needs the distilled student (checked here from the folder, before any weights load).
        """
        from geodiff.options import check_quality

        own = next(iter(self._loaded.values())).quality if self.path is None else None
        if quality is None:
            return own or "full"
        check_quality(quality)
        if own is not None and own != quality:
            raise ModelError(
                f"the in-memory model samples at quality {own!r}, not {quality!r}: load its folder with the "
                "quality you want"
            )
        if quality == "fast" and self.path is not None and student_steps(self.path) is None:
            raise ModelError(
                f"model {self.name} has no fast sampler (no {STUDENT_INFO.as_posix()} in {self.path}): use "
                "--quality full, or distill one with `geodiff train distill --config configs/cpu_distill.toml`"
            )
        return quality

    def default_steps(self, quality: str) -> int | None:
        """Steps of the fast sampler when none are given (``None`` for ``"full"``: the sampler's default)."""
        if quality != "fast":
            return None
        if self.path is None:
            return next(iter(self._loaded.values())).default_steps
        return student_steps(self.path)

    def info(self) -> dict[str, Any]:
        """Name, folder, resolution, classes and the measured metrics of a model folder (``geodiff models``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "resolution_m": self.config.resolution_m,
            "tile_size": self.config.tile_size,
            "conditioning": self.config.conditioning,
            "guidance_scale": self.config.guidance_scale,
        }
        if self.path is not None:
            classes = self.path / "classes.json"
            if classes.is_file():
                out["classes"] = [c["name"] for c in json.loads(classes.read_text())["classes"]]
            out["qualities"] = ["full"] + (["fast"] if student_steps(self.path) is not None else [])
            metrics = self.path / "metrics.json"
            if metrics.is_file():
                out["metrics"] = json.loads(metrics.read_text())
        return out


def _ref_for_folder(path: Path, name: str | None = None) -> ModelRef:
    from geodiff.model.config import ModelConfig

    path = model_folder(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelError(f"{path} is not a geodiff model folder (no config.json): {_HOW}")
    try:
        cfg = ModelConfig.load(cfg_path)
    except Exception as exc:
        raise ModelError(f"{cfg_path} is not a valid geodiff model config ({exc}): {_HOW}") from exc
    return ModelRef(name or str(path), path, cfg)


def resolve_model(
    model: GeodiffModel | str | os.PathLike[str] | ModelRef | None = None, settings: Settings | None = None
) -> ModelRef:
    """Find a model (see the module docstring) and read its config; no weights are loaded.

    Raises
    ------
    ModelError
        Nothing found; the message says where geodiff looked and how to get a model.
    """
    if isinstance(model, ModelRef):
        return model
    core = sys.modules.get(
        "geodiff.model.core"
    )  # an instance exists only once the class (and torch) is loaded
    if core is not None and isinstance(model, core.GeodiffModel):
        ref = ModelRef(model.name_or_path or "in-memory model", None, model.config)
        # the torch model first: the plan's runtime decides, not the one the object was made with
        ref._loaded[str(model.device)] = model.with_runtime("torch")
        return ref
    settings = settings or get_settings()
    if model is None:
        if settings.model_dir is not None:
            folder = Path(settings.model_dir).expanduser()
            if not folder.is_dir():
                raise ModelError(f"GEODIFF_MODEL_DIR={folder} is not a folder: {_HOW}")
            return _ref_for_folder(folder)
        model = DEFAULT_MODEL_NAME
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        return _ref_for_folder(path)
    if os.sep not in text and "/" not in text:  # a bare name: installed models
        for root in model_search_path(settings):
            if (root / text / "config.json").is_file():
                return _ref_for_folder(root / text, name=text)
        names = [r.name for r in installed_models(settings)]
        raise ModelError(
            f"no model named {text!r} (installed: {', '.join(names) or 'none'}; looked in "
            f"{', '.join(str(r) for r in model_search_path(settings))}): {_HOW}"
        )
    return _ref_for_folder(model_folder(text), name=text)  # a hub id


def load_model(
    model: GeodiffModel | str | os.PathLike[str] | None = None,
    device: str = "auto",
    quality: str | None = None,
    runtime: str = "torch",
) -> GeodiffModel:
    """Load a model by name, folder or hub id (``None``: the default model) on ``device``.

    Parameters
    ----------
    model
        ``None`` (the default model), a name from ``geodiff models``, a model folder, or a hub id.
    device
        ``"auto"`` (CUDA when visible), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    quality
        ``"full"`` (the teacher: 20 DPM-Solver++ steps, two U-Net passes each with guidance) or ``"fast"`` (the
        folder's distilled student: a few steps of one pass each; see :mod:`geodiff.model.student`); None:
        ``"full"``, or an in-memory model's own.
    runtime
        ``"torch"``, or ``"onnx"``: the U-Net and decoder on ONNX Runtime (CPU only; ``pip install
        'geodiff[onnx]'``; :mod:`geodiff.model.onnx_runtime`).

    Returns
    -------
    geodiff.model.GeodiffModel
        In bfloat16 on CUDA, float32 on the CPU, in eval mode.
    """
    return resolve_model(model).load(device, quality, runtime)


def installed_models(settings: Settings | None = None) -> list[ModelRef]:
    """Every model folder on the search path (user folder first; a name found twice is listed once)."""
    seen: dict[str, ModelRef] = {}
    for root in model_search_path(settings):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.name not in seen and (folder / "config.json").is_file():
                try:
                    seen[folder.name] = _ref_for_folder(folder, name=folder.name)
                except ModelError:
                    continue  # a broken folder is not a model; `geodiff models` should still list the rest
    return list(seen.values())


def model_fingerprint(ref: ModelRef) -> str | None:
    """A short content hash of a model folder (config and weights): two runs used the same model iff their
    fingerprints match, whatever name or path reached it (``geodiff change`` checks it). ``None`` for an
    in-memory model."""
    import hashlib

    if ref.path is None:
        return None
    root = Path(ref.path)
    h = hashlib.sha256()
    files = [root / "config.json", *sorted(root.rglob("*.safetensors")), *sorted(root.rglob("*.bin"))]
    for file in files:
        if file.is_file():
            h.update(file.relative_to(root).as_posix().encode() + b"\0")
            with open(file, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]
