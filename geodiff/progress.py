"""Progress reporting shared by the library, the CLI and the QGIS plugin.

Library functions accept ``progress: ProgressCallback | None``; they call it with a fraction in [0, 1] and a
short message. The CLI turns that into a tqdm bar, or into JSON lines (``--progress json``) that the QGIS
plugin parses from the subprocess's stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

ProgressCallback = Callable[[float, str], None]


def report(progress: ProgressCallback | None, fraction: float, message: str = "") -> None:
    if progress is not None:
        progress(min(max(float(fraction), 0.0), 1.0), message)


def scaled(progress: ProgressCallback | None, start: float, end: float) -> ProgressCallback | None:
    """A callback mapping [0, 1] of a sub-task onto [start, end] of the parent's range."""
    if progress is None:
        return None

    def _inner(fraction: float, message: str) -> None:
        progress(start + (end - start) * fraction, message)

    return _inner


class JsonLinesProgress:
    """Writes ``{"progress": 0.42, "message": "...", "eta_s": 12.3}`` lines, one per update."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.start = time.monotonic()

    def __call__(self, fraction: float, message: str) -> None:
        elapsed = time.monotonic() - self.start
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.01 else None
        line = {"progress": round(fraction, 4), "message": message}
        if eta is not None:
            line["eta_s"] = round(eta, 1)
        self.stream.write(json.dumps(line) + "\n")
        self.stream.flush()

    def event(self, **fields: object) -> None:
        """Non-progress facts a front end may show (e.g. ``device="cuda"``)."""
        self.stream.write(json.dumps(fields) + "\n")
        self.stream.flush()


class TqdmProgress:
    """A tqdm bar (with ETA) on stderr driven by fraction updates."""

    def __init__(self, description: str = "geodiff", disable: bool = False) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=1000,
            desc=description,
            unit="‰",
            disable=disable,
            file=sys.stderr,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}",
        )

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(round(fraction * 1000))
        if message:
            self.bar.set_postfix_str(message, refresh=False)
        self.bar.refresh()

    def event(self, **fields: object) -> None:
        self.bar.write(", ".join(f"{k}: {v}" for k, v in fields.items()), file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
