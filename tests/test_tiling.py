import numpy as np
import pytest
import torch

from geodiff.errors import InvalidParameterError
from geodiff.noise import location_noise
from geodiff.tiling import blend_weights, layout_for, split_rows, window_origins


def test_window_origins_cover_range_on_lattice():
    origins = window_origins(100, 600, 256, 192)
    assert origins == [0, 192, 384]
    assert origins[0] <= 100 and origins[-1] + 256 >= 600
    assert all(o % 192 == 0 for o in origins)
    # negative global coordinates stay on the lattice too
    assert window_origins(-300, -10, 256, 192) == [-384, -192]


def test_window_origins_rejects_bad_stride():
    with pytest.raises(InvalidParameterError):
        window_origins(0, 10, 256, 0)


def test_blend_weights_partition_of_unity_in_overlap():
    w = blend_weights(256, 64)
    assert w.min() > 0 and w.max() == 1
    profile = w[128]
    # window A's right band + window B's left band (B starts 192 px later) sum to 1
    np.testing.assert_allclose(profile[192:] + profile[:64], 1.0, atol=1e-6)


def test_layout_is_same_where_areas_overlap():
    big = layout_for(1000, 2000, 900, 900, 256, 64)
    small = layout_for(1300, 2300, 200, 200, 256, 64)
    big_abs = {(big.canvas_row + r, big.canvas_col + c) for r, c in big.windows}
    small_abs = {(small.canvas_row + r, small.canvas_col + c) for r, c in small.windows}
    assert small_abs <= big_abs


def test_split_rows_overlap_by_one_row():
    assert split_rows(3, 5) == [(0, 3)]
    assert split_rows(7, 3) == [(0, 3), (2, 5), (4, 7)]
    strips = split_rows(10, 4)
    assert strips[0][0] == 0 and strips[-1][1] == 10
    assert all(a[1] - 1 == b[0] for a, b in zip(strips, strips[1:], strict=False))


def test_location_noise_depends_only_on_place_and_seed():
    big = location_noise(7, "EPSG:32632", 100, 200, 150, 170, 4)
    part = location_noise(7, "EPSG:32632", 130, 250, 40, 60, 4)
    torch.testing.assert_close(big[:, 30:70, 50:110], part)
    other_seed = location_noise(8, "EPSG:32632", 130, 250, 40, 60, 4)
    other_zone = location_noise(7, "EPSG:32633", 130, 250, 40, 60, 4)
    assert not torch.allclose(part, other_seed) and not torch.allclose(part, other_zone)
    assert abs(float(big.mean())) < 0.05 and abs(float(big.std()) - 1) < 0.05
