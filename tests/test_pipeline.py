"""GeodiffPipeline: one window from a class map, reproducible with a generator, both samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geodiff.errors import InvalidParameterError
from geodiff.pipeline import GeodiffPipeline

from tiny_model import build_tiny_model, class_map

torch.set_num_threads(1)


@pytest.mark.parametrize("sampler", ["dpm", "ddpm"])
def test_pipeline_single_tile(sampler: str) -> None:
    model = build_tiny_model(end_to_end=False)
    pipe = GeodiffPipeline(model, model.make_scheduler(sampler))
    steps = 3 if sampler == "dpm" else 2
    a = pipe(class_map(1)[0], num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).images
    b = pipe(
        class_map(1)[0].numpy(), num_inference_steps=steps, generator=torch.Generator().manual_seed(0)
    ).images
    assert a.shape == (1, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    pt = pipe(class_map(2), num_inference_steps=2, output_type="pt").images
    assert pt.shape == (2, 3, 32, 32)


def test_pipeline_arguments_checked() -> None:
    pipe = GeodiffPipeline(build_tiny_model(end_to_end=False))
    with pytest.raises(InvalidParameterError):
        pipe(class_map(1), num_inference_steps=0)
    with pytest.raises(InvalidParameterError):
        pipe(class_map(1), output_type="jpeg")
    out = pipe(class_map(1), num_inference_steps=1, output_type="pil", num_images_per_map=2)
    assert len(out.images) == 2 and out.images[0].size == (32, 32)
