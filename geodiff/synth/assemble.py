"""Mosaicking: consecutive strips cross-faded over their shared window row; finished bbox rows go to a sink."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from geodiff.synth.canvas import _to_uint8
from geodiff.synth.plan import global_origin
from geodiff.synth.strips import StripResult, strip_rows

if TYPE_CHECKING:
    from geodiff.synth.plan import SynthPlan

RowSink = Callable[[np.ndarray, np.ndarray, int], None]
"""``sink(rgb_rows (h, W, 3) uint8, class_rows (h, W) uint8, first_row)``: receives finished bbox-grid rows."""


def assemble(plan: SynthPlan, results: Iterator[StripResult], sink: RowSink) -> None:
    """Cross-fade consecutive strips over their shared window row and hand finished bbox rows to ``sink``.

    ``results`` must come in strip order; only the previous strip's shared band is held in memory.
    """
    lay, grid = plan.layout, plan.grid
    g_row, g_col = global_origin(grid)
    off_r, off_c = g_row - lay.canvas_row, g_col - lay.canvas_col  # bbox grid inside the canvas
    pending: np.ndarray | None = None  # the previous strip's last window row, float
    for res in results:
        top, height, keep, _ = strip_rows(plan, res.index)
        if res.full is not None:
            rgb = res.full.copy()
            if pending is not None:
                rgb[: len(pending)] = _cross_fade(pending, rgb[: len(pending)])
            rows_u8 = _to_uint8(rgb[:keep])
            pending = rgb[keep:] if keep < height else None
        else:
            parts = []
            if res.head is not None:
                parts.append(_to_uint8(_cross_fade(pending, res.head) if pending is not None else res.head))
            parts.append(res.mid)
            rows_u8 = np.concatenate(parts) if len(parts) > 1 else parts[0]
            pending = res.tail
        # clip the finished canvas rows [top, top + keep) to the bbox grid
        r0, r1 = max(top, off_r), min(top + keep, off_r + grid.height)
        if r1 > r0:
            rows, cols = slice(r0 - top, r1 - top), slice(off_c, off_c + grid.width)
            sink(rows_u8[rows, cols], res.class_map[rows, cols], r0 - off_r)


def _cross_fade(pending: np.ndarray, new: np.ndarray) -> np.ndarray:
    band = pending.shape[0]
    ramp = ((np.arange(band) + 0.5) / band)[:, None, None].astype(np.float32)
    return pending * (1 - ramp) + new * ramp
