"""Where a model's files are: a local folder, or a hub id (``org/name``) downloaded to the hub cache.

The one rule for telling a folder from a hub id, used by :func:`geodiff.models.resolve_model` and
:meth:`geodiff.model.GeodiffModel.from_pretrained` alike. No torch here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from geodiff.errors import ModelError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HOW_TO_GET_A_MODEL = (
    "list the installed models with `geodiff models`, pass --model DIR (a folder written by "
    "`geodiff train diffusion`), or set GEODIFF_MODEL_DIR"
)
STUDENT_INFO = Path("student") / "student.json"
"""A folder's distilled fast sampler (``quality="fast"``) is in ``student/``; this file says it is complete."""


def student_steps(root: Path) -> int | None:
    """The default steps of the fast sampler in the model folder ``root`` (None: it has none). No torch."""
    import json

    info = root / STUDENT_INFO
    if not info.is_file():
        return None
    try:
        return int(json.loads(info.read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"{info} is not a valid fast-sampler record ({exc}): re-distill the student"
        ) from exc


def is_hub_id(text: str) -> bool:
    """``org/name`` that cannot be a mistyped local path (its first part is not a local folder)."""
    return bool(_HUB_ID.match(text)) and not Path(text.split("/")[0]).exists()


def model_folder(path_or_hub_id: str | os.PathLike[str]) -> Path:
    """A model's folder: an existing local folder, or a hub id (``org/name``) downloaded to the hub cache.

    The folder is not checked for content.
    """
    text = os.fspath(path_or_hub_id)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                f"{path} is a file; a model is a folder with config.json, vae/, unet/, scheduler/"
            )
        return path
    if not is_hub_id(text):
        raise ModelError(f"model folder {path} does not exist: {HOW_TO_GET_A_MODEL}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text))
    except Exception as exc:
        raise ModelError(
            f"model {text!r} is neither a local folder nor a reachable hub repo ({str(exc).splitlines()[0]}): {HOW_TO_GET_A_MODEL}"
        ) from exc
