"""Output sinks: a plan's files (RGB and class-map GeoTIFFs, COG when the plan says so), written atomically."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from geodiff.synth.assemble import RowSink
from geodiff.synth.plan import SynthPlan


@contextlib.contextmanager
def output_sink(plan: SynthPlan, tags: dict[str, str]) -> Iterator[RowSink]:
    """Open the plan's outputs (atomic; COG when the plan says so) and yield a :data:`RowSink` writing to them.

    The files (image, mask and their styles) appear under their names together, only when the block completes.
    """
    from rasterio.windows import Window

    from geodiff.io import Transaction, class_map_writer, rgb_writer

    grid = plan.grid
    with Transaction(plan.overwrite) as tx, contextlib.ExitStack() as stack:
        rgb_dst = stack.enter_context(
            rgb_writer(plan.out_path, grid, tags, overwrite=plan.overwrite, cog=plan.cog, tx=tx)
        )
        mask_dst = None
        if plan.mask_path is not None:
            mask_dst = stack.enter_context(
                class_map_writer(plan.mask_path, grid, tags, overwrite=plan.overwrite, cog=plan.cog, tx=tx)
            )

        def sink(rgb_rows: np.ndarray, class_rows: np.ndarray, row: int) -> None:
            window = Window(0, row, grid.width, len(rgb_rows))
            rgb_dst.write(np.moveaxis(rgb_rows, -1, 0), window=window)
            if mask_dst is not None:
                mask_dst.write(class_rows[None], window=window)

        yield sink
