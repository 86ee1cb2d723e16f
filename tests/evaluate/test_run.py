"""Evaluation metrics and the ``geodiff evaluate`` workflow on tiny generated data and a tiny random model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geodiff.classes import IGNORE
from geodiff.errors import DataError, InputNotFoundError, InvalidParameterError
from geodiff.evaluate.distance import fid, inception_fid, kid
from geodiff.evaluate.reconstruction import psnr_ssim
from geodiff.evaluate.seams import seam_ratio, tile_boundaries, window_edges
from geodiff.evaluate.segmentation import (
    SegNetConfig,
    iou_scores,
    load_segnet,
    predict,
    save_segnet,
    train_segnet,
)
from geodiff.settings import DEFAULT_RESOLUTION_M

from tiny_model import build_tiny_model

torch.set_num_threads(1)


def tiny_model():
    # 128 px windows at the default resolution: the tests cut and synthesize real-size areas
    return build_tiny_model(
        resolution_m=DEFAULT_RESOLUTION_M, tile_size=128, unet_block_channels=[16, 16], context_dim=16
    )


# ---------------------------------------------------------------------------------------------------------
# seams
# ---------------------------------------------------------------------------------------------------------


def test_seam_ratio_is_one_without_seams() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (512, 512, 3)).astype(np.uint8)
    b = tile_boundaries(512, 128)
    assert seam_ratio(noise, b, b).ratio == pytest.approx(1.0, abs=0.05)
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(rng.normal(0, 1, (512, 512, 3)), sigma=(3, 3, 0))  # textured but smooth
    assert seam_ratio(smooth, b, b).ratio == pytest.approx(1.0, abs=0.1)


def test_seam_ratio_detects_planted_tile_edges() -> None:
    rng = np.random.default_rng(1)
    img = rng.normal(128, 10, (512, 512, 3))
    for r in range(0, 512, 128):  # independent tiles: each gets its own brightness offset
        for c in range(0, 512, 128):
            img[r : r + 128, c : c + 128] += rng.normal(0, 30)
    b = tile_boundaries(512, 128)
    res = seam_ratio(np.clip(img, 0, 255).astype(np.uint8), b, b)
    assert res.ratio > 1.5
    assert res.boundary_mean > res.interior_mean
    # measured at positions that are not tile edges, the same image looks seamless
    off = [p + 60 for p in b]
    assert seam_ratio(np.clip(img, 0, 255).astype(np.uint8), off, off).ratio == pytest.approx(1.0, abs=0.1)


def test_seam_ratio_input_errors() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InvalidParameterError, match="at least one boundary"):
        seam_ratio(img)
    with pytest.raises(InvalidParameterError, match="outside"):
        seam_ratio(img, rows=[64])
    assert window_edges([0, 192, 384], 256, 640) == [192, 256, 384, 448]


# ---------------------------------------------------------------------------------------------------------
# reconstruction, IoU, distances
# ---------------------------------------------------------------------------------------------------------


def test_psnr_ssim_identical_and_noisy() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    same = psnr_ssim(a, a)
    assert math.isinf(same["psnr_db"]) or same["psnr_db"] > 80
    assert same["ssim"] == pytest.approx(1.0, abs=1e-4)
    small = np.clip(a + rng.normal(0, 3, a.shape), 0, 255).astype(np.uint8)
    large = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    s, lg = psnr_ssim(a, small), psnr_ssim(a, large)
    assert 35 < s["psnr_db"] < 60
    assert lg["psnr_db"] < s["psnr_db"] - 10
    assert lg["ssim"] < s["ssim"]
    with pytest.raises(InvalidParameterError):
        psnr_ssim(a, a[:, :32])


def test_iou_scores_on_constructed_predictions_with_ignore() -> None:
    target = np.array([[0, 0, 1, 1], [2, 2, IGNORE, IGNORE]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 2, 3, 0]], np.uint8)  # ignore pixels may hold anything
    res = iou_scores(pred, target)
    per = res["per_class"]
    assert per["background"] == pytest.approx(1 / 2)  # tp 1, fp 0, fn 1
    assert per["building"] == pytest.approx(2 / 3)  # tp 2, fp 1
    assert per["road"] == pytest.approx(1.0)
    assert per["water"] is None and per["vegetation"] is None  # absent everywhere: not counted as 0
    assert res["miou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert res["n_pixels"] == 6
    # a class predicted but absent from the target counts as IoU 0
    res2 = iou_scores(np.array([[4, 0]]), np.array([[0, 0]]))
    assert res2["per_class"]["vegetation"] == 0.0


def test_kid_and_fid_zero_for_same_set_larger_when_shifted() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16))
    b = rng.normal(size=(200, 16))
    shifted = rng.normal(loc=0.7, size=(200, 16))
    k_self, _ = kid(a, a, subsets=20, subset_size=50)
    k_same, _ = kid(a, b, subsets=20, subset_size=50)
    k_shift, _ = kid(a, shifted, subsets=20, subset_size=50)
    assert abs(k_self) < 0.02 and abs(k_same) < 0.05
    assert k_shift > 10 * max(abs(k_same), 0.01)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    assert fid(a, shifted) > 5 * fid(a, b)


def test_inception_fid_needs_existing_weights(tmp_path: Path) -> None:
    imgs = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(InputNotFoundError, match="Inception weights"):
        inception_fid(imgs, imgs, tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------------------
# segmentation net
# ---------------------------------------------------------------------------------------------------------


def _toy_pairs(n: int = 8, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose colour encodes the class: a net can learn this in a few steps."""
    rng = np.random.default_rng(seed)
    palette = np.array([[200, 190, 150], [150, 40, 40], [120, 120, 120], [40, 100, 200], [40, 160, 80]])
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for _ in range(6):
            r, c, h, w = rng.integers(0, size - 8, 4)
            masks[i, r : r + 8 + h // 2, c : c + 8 + w // 2] = rng.integers(1, 5)
    images = palette[masks] + rng.normal(0, 8, (*masks.shape, 3))
    masks[:, :2, :2] = IGNORE
    return np.clip(images, 0, 255).astype(np.uint8), masks


def test_segnet_trains_saves_and_loads(tmp_path: Path) -> None:
    images, masks = _toy_pairs()
    net, rec = train_segnet(images, masks, SegNetConfig(base_channels=8, depth=2), steps=40, batch_size=4,
                            crop=32, lr=1e-2)  # fmt: skip
    assert rec.steps == 40 and np.isfinite(rec.final_loss)
    pred = predict(net, images)
    assert pred.shape == masks.shape
    assert iou_scores(pred, masks)["miou"] > 0.3  # learns the colour -> class rule
    save_segnet(net, tmp_path / "seg", rec)
    again = load_segnet(tmp_path / "seg")
    np.testing.assert_array_equal(predict(again, images), pred)
    assert json.loads((tmp_path / "seg" / "segnet.json").read_text())["train"]["steps"] == 40
    with pytest.raises(InputNotFoundError):
        load_segnet(tmp_path / "nope")


def test_segnet_sample_weights_decide_which_tiles_it_learns_from() -> None:
    # identical grey images, labelled road in the first half and building in the second: only the sampling
    # weights say which label the net sees
    rng = np.random.default_rng(0)
    images = np.clip(120 + rng.normal(0, 4, (8, 32, 32, 3)), 0, 255).astype(np.uint8)
    masks = np.concatenate([np.full((4, 32, 32), 2, np.uint8), np.full((4, 32, 32), 1, np.uint8)])
    for weights, expected in (([1, 1, 1, 1, 0, 0, 0, 0], 2), ([0, 0, 0, 0, 1, 1, 1, 1], 1)):
        net, _ = train_segnet(images, masks, SegNetConfig(base_channels=4, depth=2), steps=40, batch_size=4,
                              crop=32, lr=1e-2, sample_weights=np.array(weights, float))  # fmt: skip
        assert (predict(net, images) == expected).mean() > 0.95
    for bad in (np.ones(3), -np.ones(8), np.zeros(8), np.full(8, np.nan)):
        with pytest.raises(InvalidParameterError, match="sample_weights"):
            train_segnet(images, masks, steps=1, sample_weights=bad)


# ---------------------------------------------------------------------------------------------------------
# data folders, report and the evaluate workflow
# ---------------------------------------------------------------------------------------------------------


def _write_folder(root: Path, images: np.ndarray, masks: np.ndarray) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (im, m) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(im).save(root / "images" / f"t{i:03d}.png")
        Image.fromarray(m, mode="L").save(root / "masks" / f"t{i:03d}.png")
    return root


def test_load_pairs_and_splits(tmp_path: Path) -> None:
    from geodiff.evaluate.data import load_pairs, load_splits

    images, masks = _toy_pairs(n=10, size=128)
    root = _write_folder(tmp_path / "ds", images, masks)
    pairs = load_pairs(root, tile=64)
    assert len(pairs) == 40 and pairs.images.shape == (40, 64, 64, 3)
    splits = load_splits(root, tile=64)
    assert len(splits["train"]) + len(splits["test"]) == 40 and len(splits["test"]) > 0
    # crops of one source image never straddle the split
    src = {n.split("_r")[0] for n in splits["test"].names}
    assert not src & {n.split("_r")[0] for n in splits["train"].names}
    (root / "masks" / "t000.png").unlink()
    with pytest.raises(DataError, match="no mask"):
        load_pairs(root)
    Image.fromarray(images[0]).save(root / "masks" / "t000.png")  # a colour mask
    with pytest.raises(DataError, match="colour mask"):
        load_pairs(root, tile=64)
    with pytest.raises(InputNotFoundError):
        load_splits(tmp_path / "missing")


def test_report_files(tmp_path: Path) -> None:
    from geodiff.evaluate.report import write_report

    images, masks = _toy_pairs(n=2)
    per = {"background": 0.5, "building": None, "road": 1.0, "water": 0.2, "vegetation": 0.0}
    rep = {
        "map_fidelity": {
            "real": {"miou": 0.5, "per_class": per},
            "synthetic": {"miou": 0.4, "per_class": per},
        },
        "seams": {"blended": {"ratio": 1.01, "boundary_mean": 3.0, "interior_mean": 2.97}},
        "x": float("nan"),
    }
    paths = write_report(tmp_path / "r", rep, (list(masks), list(images), list(images)))
    assert json.loads(paths["json"].read_text())["x"] is None
    assert "mIoU" in paths["summary"].read_text()
    for key in ("samples", "iou_chart"):
        assert Image.open(paths[key]).mode == "RGB"


def test_evaluate_model_end_to_end(tmp_path: Path) -> None:
    from geodiff.evaluate.run import evaluate_model

    images, masks = _toy_pairs(n=10, size=128)
    root = _write_folder(tmp_path / "ds", images, masks)
    rep = evaluate_model(root, None, tmp_path / "report", steps=2, limit=4, segnet_steps=3, seam_size=256,
                         device="cpu", model=tiny_model())  # fmt: skip
    for key in ("map_fidelity", "distance", "reconstruction", "seams", "meta"):
        assert key in rep
    assert rep["meta"]["n_eval_tiles"] == 4
    assert rep["seams"]["independent_tiles"]["ratio"] > 0
    assert rep["distance"]["synthetic_sharpness"] > 0
    out = tmp_path / "report"
    assert "sharpness of the synthetic tiles" in (out / "summary.md").read_text()
    for name in ("report.json", "summary.md", "samples.png", "per_class_iou.png", "segnet/segnet.json"):
        assert (out / name).is_file(), name
    # the saved seg net is reused
    rep2 = evaluate_model(root, None, tmp_path / "report2", seg_net=out / "segnet", steps=1, limit=2, seam_size=0,
                          device="cpu", model=tiny_model())  # fmt: skip
    assert "seams" not in rep2 and rep2["meta"]["seg_net"] == str(out / "segnet")


def test_cli_evaluate_missing_inputs(tmp_path: Path) -> None:
    from geodiff.cli import main

    assert main(["evaluate", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 3
    (tmp_path / "d").mkdir()
    code = main(["evaluate", "--data", str(tmp_path / "d"), "--model", str(tmp_path / "nomodel"),
                 "--out", str(tmp_path / "r")])  # fmt: skip
    assert code == 6  # a model that is not there is a model error, as in every command
    assert main(["evaluate", "--data", str(tmp_path / "d")]) == 2  # --out missing: click usage error


@pytest.mark.shared_data
def test_dubai_colour_masks_load(dubai_aerial: Path) -> None:
    from geodiff.evaluate.data import load_pairs

    pairs = load_pairs(dubai_aerial / "tile_1", tile=256, limit=2, colors="dubai_aerial")
    assert pairs.images.shape == (2, 256, 256, 3)
    assert set(np.unique(pairs.masks)) <= {0, 1, 2, 3, 4, IGNORE}


def test_cli_evaluate_runs_with_saved_model(tmp_path: Path) -> None:
    from geodiff.cli import main

    tiny_model().save_pretrained(tmp_path / "m")
    images, masks = _toy_pairs(n=6, size=128)
    root = _write_folder(tmp_path / "ds", images, masks)
    args = ["evaluate", "--data", str(root), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "r"),
            "--steps", "1", "--limit", "2", "--segnet-steps", "2", "--seam-size", "0", "--device", "cpu",
            "--threads", "1", "--progress", "none"]  # fmt: skip
    assert main(args) == 0
    assert json.loads((tmp_path / "r" / "report.json").read_text())["meta"]["n_eval_tiles"] == 2
    assert main(args) == 2  # the report exists: refused without --overwrite
    assert main([*args, "--overwrite"]) == 0


def test_augmentation_experiment_plumbing(tmp_path: Path) -> None:
    from geodiff.evaluate.experiment import augmentation_experiment, write_results

    images, masks = _toy_pairs(n=12, size=128)
    root = _write_folder(tmp_path / "ds", images, masks)
    res = augmentation_experiment(root, tiny_model(), n_real=3, n_synthetic=3, seeds=(0, 1), segnet_steps=2,
                                  segnet_base=4, crop=32, batch_size=2, steps=1, synthetic_fractions=(0.25,),
                                  device="cpu")  # fmt: skip
    assert set(res["summary"]) == {"real", "real+synthetic", "real+synthetic@0.25"}
    assert len(res["runs"]["real"]) == 2 and len(res["miou_gain_paired"]["runs"]) == 2
    for arm, change in res["miou_change_paired"].items():
        expected = [b["miou"] - a["miou"] for a, b in zip(res["runs"]["real"], res["runs"][arm], strict=True)]
        np.testing.assert_allclose(change["runs"], expected)
    js, md = write_results(res, tmp_path / "aug")
    assert json.loads(js.read_text())["setup"]["n_real"] == 3
    assert "mIoU mean" in md.read_text() and "real+synthetic@0.25:" in md.read_text()
    with pytest.raises(InvalidParameterError, match="exceeds"):
        augmentation_experiment(root, tiny_model(), n_real=100, n_synthetic=100, device="cpu")
    with pytest.raises(InvalidParameterError, match="strictly between 0 and 1"):
        augmentation_experiment(root, tiny_model(), n_real=3, n_synthetic=3, synthetic_fractions=(1.0,))


def test_augmentation_results_of_split_seeds_merge_into_the_one_run_result(tmp_path: Path) -> None:
    from geodiff.evaluate.experiment import augmentation_experiment, merge_results, results_markdown

    images, masks = _toy_pairs(n=12, size=128)
    root = _write_folder(tmp_path / "ds", images, masks)
    kw = dict(n_real=3, n_synthetic=3, segnet_steps=2, segnet_base=4, crop=32, batch_size=2, steps=1,
              synthetic_fractions=(0.25,), device="cpu")  # fmt: skip
    whole = augmentation_experiment(root, tiny_model(), seeds=(0, 1, 2), **kw)
    a = augmentation_experiment(root, tiny_model(), seeds=(0, 1), **kw)
    b = augmentation_experiment(root, tiny_model(), seeds=(2,), **kw)
    # as the files hold them: through JSON
    a, b = (json.loads(json.dumps(r)) for r in (a, b))
    a["command"], b["command"] = "run a", "run b"
    a["note"] = b["note"] = "same protocol"
    merged = merge_results([a, b])
    assert merged["note"] == "same protocol"  # a note both runs share is said once
    assert merged["setup"]["seeds"] == [0, 1, 2]
    for arm, change in whole["miou_change_paired"].items():
        np.testing.assert_allclose(merged["miou_change_paired"][arm]["runs"], change["runs"])
        np.testing.assert_allclose(merged["miou_change_paired"][arm]["mean"], change["mean"])
        np.testing.assert_allclose(merged["miou_change_paired"][arm]["std"], change["std"])
    for arm, sm in whole["summary"].items():
        np.testing.assert_allclose(merged["summary"][arm]["miou_mean"], sm["miou_mean"])
    assert "`run a`" in results_markdown(merged) and "`run b`" in results_markdown(merged)
    with pytest.raises(InvalidParameterError, match="seeds repeat"):
        merge_results([a, a])
    other = json.loads(json.dumps(b))
    other["setup"]["segnet_steps"] = 3
    with pytest.raises(InvalidParameterError, match="setup.segnet_steps 2 vs 3"):
        merge_results([a, other])
    other = json.loads(json.dumps(b))
    other["host"]["device"] = "cuda:0"
    with pytest.raises(InvalidParameterError, match="device type 'cpu' vs 'cuda'"):
        merge_results([a, other])
    # a merged result merges again, keeping every run's command and host
    c = json.loads(json.dumps(augmentation_experiment(root, tiny_model(), seeds=(3,), **kw)))
    c["command"] = "run c"
    again = merge_results([merged, c])
    assert again["merged_from"] == ["run a", "run b", "run c"] and len(again["hosts"]) == 3
    assert again["setup"]["seeds"] == [0, 1, 2, 3] and len(again["seconds_of_runs"]) == 3
    with pytest.raises(InvalidParameterError, match="not an augmentation experiment"):
        merge_results([a, {"experiment": "evaluate"}])


def test_seam_mosaic_prefers_adjacent_tiles() -> None:
    from geodiff.evaluate.data import Pairs
    from geodiff.evaluate.run import _mosaic_map

    names = ["a@0,0", "b@0,0", "a@0,64", "a@64,0", "a@64,64"]
    masks = np.stack([np.full((64, 64), i, np.uint8) for i in range(5)])
    pairs = Pairs(np.zeros((5, 64, 64, 3), np.uint8), masks, names)
    cmap, _, contiguous = _mosaic_map(pairs, 64, 128)
    assert contiguous and cmap[0, 0] == 0 and cmap[0, 64] == 2 and cmap[64, 0] == 3 and cmap[64, 64] == 4
    _, _, contiguous = _mosaic_map(Pairs(pairs.images[:4], masks[:4], ["x", "y", "z", "w"]), 64, 128)
    assert not contiguous
