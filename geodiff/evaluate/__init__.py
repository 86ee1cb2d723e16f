"""Model evaluation: seam ratio, autoencoder PSNR/SSIM, segmentation mIoU (map fidelity), seg-feature KID/FID.

One module per job:

- :mod:`~geodiff.evaluate.seams` -- seam ratio of a mosaic at window boundaries;
- :mod:`~geodiff.evaluate.reconstruction` -- autoencoder PSNR/SSIM;
- :mod:`~geodiff.evaluate.segmentation` -- the compact U-Net judge, mIoU / per-class IoU;
- :mod:`~geodiff.evaluate.distance` -- seg-feature KID/FID, Inception FID from local weights;
- :mod:`~geodiff.evaluate.data` -- reading (image, mask) tile folders;
- :mod:`~geodiff.evaluate.report` -- report.json, summary.md, PNG figures;
- :mod:`~geodiff.evaluate.run` -- the ``geodiff evaluate`` workflow;
- :mod:`~geodiff.evaluate.experiment` -- the augmentation experiment (real vs real + synthetic training).

Submodules are imported on first use so ``import geodiff.evaluate`` stays light.
"""

from __future__ import annotations

from geodiff._lazy import lazy_exports

_EXPORTS = {
    "seam_ratio": "seams",
    "SeamResult": "seams",
    "psnr_ssim": "reconstruction",
    "autoencoder_reconstruction": "reconstruction",
    "SegNet": "segmentation",
    "SegNetConfig": "segmentation",
    "train_segnet": "segmentation",
    "save_segnet": "segmentation",
    "load_segnet": "segmentation",
    "iou_scores": "segmentation",
    "kid": "distance",
    "fid": "distance",
    "seg_feature_distances": "distance",
    "inception_fid": "distance",
    "load_pairs": "data",
    "load_splits": "data",
    "write_report": "report",
    "evaluate_model": "run",
    "augmentation_experiment": "experiment",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})
