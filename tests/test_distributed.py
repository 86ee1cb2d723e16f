"""Region-scale synthesis on Dask: the same pixels as one process, resumable, COG outputs."""

from __future__ import annotations

import os
from pathlib import Path

import distributed
import numpy as np
import pytest
import rasterio
import torch

from geodiff.distributed import RunFolder, synthesize_distributed
from geodiff.errors import InvalidParameterError
from geodiff.grid import parse_bbox
from geodiff.io import read_raster
from geodiff.settings import get_settings
from geodiff.synth import plan_synthesis, synthesize

from tiny_model import add_tiny_student, make_tiny_model
from town import TOWN, TOWN_BBOX

# small strips, so the town is several tasks
SETTINGS = get_settings(max_strip_pixels=20_000)
FAST = dict(osm_path=TOWN, steps=3, device="cpu", seed=5)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # with a distilled student: the full runs use the teacher, --quality fast the student
    return add_tiny_student(make_tiny_model(tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture(scope="module")
def client():
    """A 2-worker local cluster (one thread each), shared by the module's tests."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture
def one_thread():
    # the workers run one thread each; the single-process reference must reduce in the same order
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _plan(out: Path, model: Path, **kw):
    return plan_synthesis(parse_bbox(TOWN_BBOX), out, model=str(model), settings=SETTINGS, **{**FAST, **kw})


def _worker_runtimes() -> list[str]:
    from geodiff import distributed as on_worker

    return [m.runtime for m in on_worker._WORKER_MODELS.values()]


def _read(path: Path) -> np.ndarray:
    return read_raster(path)[0]


@pytest.mark.parametrize(("quality", "runtime"), [("full", "torch"), ("fast", "torch"), ("full", "onnx")])
def test_distributed_run_equals_single_process_bit_for_bit(
    tmp_path, tiny_model, client, one_thread, quality, runtime
):
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
        # the workers export into this test's cache, not the user's (they began before this test's env); both
        # export the same graphs at once on first use, as a user's run does
        cache = str(get_settings().cache_dir)
        client.run(lambda: os.environ.__setitem__("GEODIFF_CACHE_DIR", cache))
    kw = dict(quality=quality, runtime=runtime)
    single = synthesize(_plan(tmp_path / "single.tif", tiny_model, **kw), settings=SETTINGS)
    plan = _plan(tmp_path / "dist.tif", tiny_model, **kw)
    assert (plan.quality, plan.runtime) == (quality, runtime)
    assert len(plan.strips) >= 3
    events = []
    fractions = []
    dist = synthesize_distributed(
        plan, client=client, settings=SETTINGS, on_event=lambda **e: events.append(e),
        progress=lambda f, m: fractions.append((f, m)),
    )  # fmt: skip
    np.testing.assert_array_equal(_read(single.image_path), _read(dist.image_path))
    np.testing.assert_array_equal(_read(single.mask_path), _read(dist.mask_path))
    # the workers sampled on the plan's runtime (one grey level apart, equal pixels alone would not show it)
    held = client.run(_worker_runtimes)
    assert any(runtime in runtimes for runtimes in held.values())
    assert any(
        e["event"] == "cluster" and e["workers"] == 2 and e["tasks"] == len(plan.strips) for e in events
    )
    blocks = [m for _, m in fractions if m.startswith("block")]
    assert blocks[-1] == f"block {len(plan.strips)}/{len(plan.strips)} done"
    assert not (tmp_path / "dist.tif.run").exists()  # the run folder goes once the output is complete


@pytest.mark.parametrize("quality", ["full", "fast"])
def test_interrupted_run_resumes_with_only_the_missing_strips(
    tmp_path, tiny_model, client, one_thread, quality
):
    reference = synthesize_distributed(
        _plan(tmp_path / "ref.tif", tiny_model, quality=quality), client=client, settings=SETTINGS
    )
    plan = _plan(tmp_path / "out.tif", tiny_model, quality=quality)
    n = len(plan.strips)

    def stop_after_two(fraction, message):
        if message.startswith("block 2/"):
            raise KeyboardInterrupt  # Ctrl-C, a crash, a lost client: all look like this to the run folder

    with pytest.raises(KeyboardInterrupt):
        synthesize_distributed(plan, client=client, settings=SETTINGS, progress=stop_after_two)
    assert not (tmp_path / "out.tif").exists() and not (tmp_path / "out.mask.tif").exists()
    finished = RunFolder.open(plan).done()
    assert len(finished) == 2

    events = []
    again = _plan(tmp_path / "out.tif", tiny_model, quality=quality)  # the same command, run again
    result = synthesize_distributed(
        again, client=client, settings=SETTINGS, on_event=lambda **e: events.append(e)
    )
    resumed = next(e for e in events if e["event"] == "resume")
    assert resumed["finished"] == 2
    assert next(e for e in events if e["event"] == "cluster")["tasks"] == n - 2  # nothing recomputed
    np.testing.assert_array_equal(_read(reference.image_path), _read(result.image_path))


def test_a_run_folder_of_another_request_is_kept(tmp_path, tiny_model):
    plan = _plan(tmp_path / "a.tif", tiny_model)
    RunFolder.open(plan)
    other = _plan(tmp_path / "a.tif", tiny_model, seed=6)
    with pytest.raises(InvalidParameterError, match="different request"):
        RunFolder.open(other)
    assert (tmp_path / "a.tif.run" / "run.json").is_file()


def test_large_outputs_are_cloud_optimized_with_overviews(tmp_path, tiny_model):
    res = synthesize(_plan(tmp_path / "c.tif", tiny_model, cog=True), settings=SETTINGS)
    for path in (res.image_path, res.mask_path):
        with rasterio.open(path) as src:
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert src.overviews(1), f"{path} has no overviews"
            assert src.tags()["SEED"] == "5" and "OpenStreetMap" in src.tags()["ATTRIBUTION"]
    with rasterio.open(res.mask_path) as src:
        overview = src.read(1, out_shape=(src.height // 2, src.width // 2))
        assert set(np.unique(overview)) <= set(range(5))  # class ids, never averaged into other ids
    auto = _plan(tmp_path / "d.tif", tiny_model)
    assert auto.cog is False  # small areas stay plain tiled GeoTIFFs


def test_augment_on_the_cluster_writes_the_same_pairs(tmp_path, tiny_model, client, one_thread):
    from geodiff.augment import generate_dataset

    opts = dict(area=parse_bbox(TOWN_BBOX), n_windows=2, seeds_per_window=2, model=str(tiny_model), osm_path=TOWN,
                steps=2, device="cpu", fmt="png")  # fmt: skip
    local = generate_dataset(tmp_path / "local", **opts)
    remote = generate_dataset(tmp_path / "remote", client=client, **opts)
    names = sorted(p.name for p in (local.out_dir / "images").iterdir())
    assert names == sorted(p.name for p in (remote.out_dir / "images").iterdir()) and len(names) == 4
    for sub in ("images", "masks"):
        for name in names:
            assert (local.out_dir / sub / name).read_bytes() == (remote.out_dir / sub / name).read_bytes()


async def _crash() -> None:
    import os

    os._exit(1)  # a hard crash, not a clean shutdown: what an OOM kill or a lost node looks like


def test_workers_lost_mid_run_are_replaced_and_their_strips_recomputed(tmp_path, tiny_model, one_thread):
    """Kill every worker process while they hold strips (a lost node): Dask restarts them and reschedules
    the strips from the task graph, so nothing a task needs may live only in a worker's memory."""
    reference = synthesize(_plan(tmp_path / "ref.tif", tiny_model, steps=8), settings=SETTINGS)
    plan = _plan(tmp_path / "out.tif", tiny_model, steps=8)
    killed = []

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):

        def kill_a_busy_worker(fraction, message):
            if killed or not message.startswith("block 1/"):
                return
            busy = [w for w, keys in client.processing().items() if keys]
            if busy:
                client.run(_crash, wait=False)
                killed.extend(busy)

        result = synthesize_distributed(plan, client=client, settings=SETTINGS, progress=kill_a_busy_worker)
        assert killed, "no worker held a strip after the first one finished: make the strips slower"
        # the crash really happened (and not after the run): the nannies started new worker processes
        assert not set(killed) & set(client.scheduler_info()["workers"])
    np.testing.assert_array_equal(_read(reference.image_path), _read(result.image_path))
    np.testing.assert_array_equal(_read(reference.mask_path), _read(result.mask_path))


def test_change_on_the_cluster_equals_one_process(tmp_path, tiny_model, one_thread):
    from geodiff.change import synthesize_change
    from geodiff.io import write_class_map
    from geodiff.options import ClusterOptions

    before = synthesize(_plan(tmp_path / "before.tif", tiny_model), settings=SETTINGS)
    mask, grid, _ = read_raster(before.mask_path)
    edited = mask[0].copy()
    edited[10:20, 10:25] = 1  # two edits far apart: two regions, two tasks
    edited[130:140, 120:135] = 2
    write_class_map(tmp_path / "edited.tif", edited, grid)
    kw = dict(map_path=tmp_path / "edited.tif", device="cpu", settings=SETTINGS)
    single = synthesize_change(before.image_path, tmp_path / "single.tif", **kw)
    events = []
    dist = synthesize_change(
        before.image_path, tmp_path / "dist.tif", cluster=ClusterOptions(workers=2, threads=1),
        on_event=lambda **e: events.append(e), **kw,
    )  # fmt: skip
    assert next(e for e in events if e["event"] == "change")["regions"] == 2
    a, b, src = _read(single.image_path), _read(dist.image_path), _read(before.image_path)
    np.testing.assert_array_equal(a, b)
    assert (a != src).any()  # the edits were re-synthesized
    np.testing.assert_array_equal(_read(single.change_path), _read(dist.change_path))
    assert not list(tmp_path.glob(".*dask.log"))  # Dask's log goes once the run succeeded
