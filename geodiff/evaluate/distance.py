"""Distribution distances between real and synthetic tiles.

Inception weights cannot be downloaded where geodiff is built, so the default distances are computed on the
encoder features of geodiff's own segmentation net (:mod:`geodiff.evaluate.segmentation`) and are reported as
"seg-feature KID" / "seg-feature FID". They are comparable between models judged by the *same* segmentation
net, not with Inception FID numbers from papers. Inception FID (torchmetrics) is available when the user has
local Inception weights (:func:`inception_fid`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from geodiff.errors import InputNotFoundError, InvalidParameterError


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InvalidParameterError(
            f"feature sets must be (N, D) with the same D, got {a.shape} and {b.shape}"
        )
    if len(a) < 2 or len(b) < 2:
        raise InvalidParameterError("need at least 2 samples in each feature set")
    return a, b


def kid(
    real: np.ndarray, fake: np.ndarray, subsets: int = 50, subset_size: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel) between two (N, D) feature sets.

    Returns ``(mean, std)`` over ``subsets`` random subsets of ``min(subset_size, N_real, N_fake)`` samples.
    Uses the paired U-statistic (Gretton et al. 2012, MMD_u^2 over pairs i != j): unbiased, about 0 (can be
    slightly negative) for two samples of the same distribution, and exactly 0 for a set compared with itself
    (identical inputs get identical subsets).
    """
    a, b = _check(real, fake)
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    same = a.shape == b.shape and np.array_equal(a, b)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        ix = rng.choice(len(a), m, replace=False)
        iy = ix if same else rng.choice(len(b), m, replace=False)
        x, y = a[ix], b[iy]
        h = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3 - (x @ y.T / d + 1) ** 3 - (y @ x.T / d + 1) ** 3
        values.append((h.sum() - np.trace(h)) / (m * (m - 1)))
    return float(np.mean(values)), float(np.std(values))


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets.

    Biased for small N (needs N well above D for a stable covariance); prefer :func:`kid` for small sets.
    """
    a, b = _check(real, fake)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with (
        warnings.catch_warnings()
    ):  # singular covariances (N <= D) are expected for small sets; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: regularise as in the reference implementation
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    return max(value, 0.0)


def seg_feature_distances(
    net: torch.nn.Module, real_images: np.ndarray, fake_images: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Seg-feature KID (mean, std) and FID of uint8 image stacks, using ``net``'s encoder features."""
    from geodiff.evaluate.segmentation import extract_features

    fr, ff = extract_features(net, real_images), extract_features(net, fake_images)
    kid_mean, kid_std = kid(fr, ff, seed=seed)
    return {
        "seg_feature_kid": kid_mean,
        "seg_feature_kid_std": kid_std,
        "seg_feature_fid": fid(fr, ff),
        "feature_dim": int(fr.shape[1]),
        "n_real": int(len(fr)),
        "n_synthetic": int(len(ff)),
    }


def inception_fid(
    real_images: np.ndarray,
    fake_images: np.ndarray,
    weights_path: str | os.PathLike[str],
    batch_size: int = 16,
) -> float:
    """Inception FID (torchmetrics, 2048-d pool features) from a *local* Inception weights file.

    Parameters
    ----------
    real_images, fake_images
        uint8 (N, H, W, 3) stacks.
    weights_path
        The torch-fidelity ``pt_inception-2015-12-05`` weights file, downloaded beforehand on a machine with
        internet access.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise InputNotFoundError(
            f"Inception weights {path} not found: download pt_inception-2015-12-05-6726825d.pth (torch-fidelity) "
            "on a machine with internet and pass its path, or leave the option out to report seg-feature FID only"
        )
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))
    except ModuleNotFoundError as exc:
        raise InvalidParameterError(
            f"Inception FID needs the optional package torch-fidelity ({exc}): pip install torch-fidelity"
        ) from exc
    for images, real in ((real_images, True), (fake_images, False)):
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
            metric.update(x, real=real)
    return float(metric.compute())
