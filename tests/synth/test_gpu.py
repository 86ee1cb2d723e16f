"""GPU checks (``-m gpu``): bf16 synthesis on CUDA agrees with fp32 CPU within bf16 tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geodiff.models import device_dtype, resolve_device
from geodiff.synth import synthesize_map

from tiny_model import make_tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible"),
]


def test_auto_device_picks_cuda_with_bf16():
    assert resolve_device("auto") == "cuda" and device_dtype("cuda") == torch.bfloat16


def test_cuda_matches_cpu(tmp_path):
    model = make_tiny_model(tmp_path / "tiny")
    class_map = np.kron(np.random.default_rng(0).integers(0, 5, (8, 8)), np.ones((16, 16), int)).astype(
        np.uint8
    )
    cpu = synthesize_map(class_map, model=model, steps=4, device="cpu").astype(int)
    gpu = synthesize_map(class_map, model=model, steps=4, device="cuda").astype(int)
    assert np.abs(cpu - gpu).mean() < 6  # bf16 vs fp32 over 4 steps: close, not identical
