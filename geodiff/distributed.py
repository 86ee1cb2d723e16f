"""Region-scale synthesis on a Dask cluster: strips as tasks, resumable, the same pixels as one process.

A :class:`~geodiff.synth.SynthPlan` already cuts the canvas into strips of window rows that can be denoised
independently (windows sit on a global lattice and the initial noise is keyed by place), and only their
cross-fade needs neighbours. So the strips become ``dask.distributed`` tasks:

- the client reads the map once and sends each task only the features near its strip;
- each worker process loads the model once and keeps it (on a multi-GPU machine worker ``i`` uses GPU
  ``i mod n``);
- every finished strip is saved atomically in a run folder beside the output (``area.tif.run/``); running the
  same command again after a crash, Ctrl-C or a lost worker computes only the missing strips (Dask itself
  retries the tasks of a worker lost mid-run);
- when all strips are there, the client cross-fades them in order exactly as the single-process path does
  (:func:`geodiff.synth.assemble`), writes the outputs (a COG for large areas) and removes the run folder;
- a geodiff error in a task (a corrupt model, a bad value) is the same on every worker: it is returned, not
  retried, and raised by the client as one line; Dask's own logging goes to ``<out>.run/dask.log``.

Install with ``pip install 'geodiff[distributed]'``. No scheduler, queue or RPC of geodiff's own: Dask's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geodiff._version import __version__
from geodiff.errors import GeodiffError, InvalidParameterError, OutputError
from geodiff.grid import BBox
from geodiff.options import ClusterOptions
from geodiff.progress import ProgressCallback, report
from geodiff.settings import Settings, get_settings

if TYPE_CHECKING:
    from geodiff.synth import StripResult, SynthPlan, SynthResult

RUN_SUFFIX = ".run"
LOG_NAME = "dask.log"  # Dask's own logging during a run, in its run folder
TASK_RETRIES = 2
_WORKER_MODELS: dict[tuple[str, str], Any] = {}  # per worker process: (model folder, device) -> loaded model


def _require_dask() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise InvalidParameterError(
            "--workers/--scheduler need Dask: pip install 'geodiff[distributed]' (dask.distributed)"
        ) from exc
    return distributed


@contextlib.contextmanager
def dask_client(
    workers: int | None = None, scheduler: str | None = None, threads: int = 1, log: Path | None = None
) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler`` (or the address in Dask's config / ``DASK_SCHEDULER_ADDRESS``)
    if given, else a local cluster of ``workers`` processes with ``threads`` threads each (closed on exit).

    With ``log``, Dask's own logging goes to that file instead of the terminal while the client is open (the
    worker processes' output too, for a local cluster): errors reach the user as geodiff's one line."""
    distributed = _require_dask()
    import dask

    with contextlib.ExitStack() as stack:
        if log is not None:
            from geodiff._dask_log import WorkerOutputToFile, client_logs_to

            stack.enter_context(client_logs_to(log))
        address = scheduler or dask.config.get("scheduler-address", None)
        if address:
            try:
                client = stack.enter_context(distributed.Client(address))
            except (OSError, ValueError, TypeError) as exc:  # refused, timed out, or not an address at all
                raise InvalidParameterError(
                    f"no Dask scheduler answers at {address} ({exc}): check --scheduler (tcp://host:8786) "
                    "and that the scheduler runs, or use --workers N for a local cluster"
                ) from None
            yield client
            return
        if workers is None or workers < 1:
            raise InvalidParameterError(f"--workers must be at least 1, got {workers}")
        cluster = stack.enter_context(
            distributed.LocalCluster(
                n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None
            )
        )
        client = stack.enter_context(distributed.Client(cluster))
        if log is not None:
            client.register_plugin(WorkerOutputToFile(str(log)))
        yield client


@contextlib.contextmanager
def cluster_beside(cluster: ClusterOptions, output: str | os.PathLike[str]) -> Iterator[Any]:
    """A client for ``cluster`` (:func:`dask_client`) whose Dask logging goes to ``.<name>.dask.log`` beside
    ``output`` (a file or folder) while it is open; the log is removed when the block succeeds and kept (for the
    error's details) when it fails. No log when that folder is not writable."""
    out = Path(os.path.abspath(output))
    log = out.with_name(f".{out.name}.dask.log") if os.access(out.parent, os.W_OK | os.X_OK) else None
    with dask_client(cluster.workers, cluster.scheduler, cluster.threads_per_worker, log=log) as client:
        yield client
    if log is not None:
        with contextlib.suppress(OSError):
            log.unlink()


# ----------------------------------------------------------------------------------------------------------
# the worker side
# ----------------------------------------------------------------------------------------------------------


def worker_device(device: str) -> str:
    """Pin a worker to a GPU: plain ``cuda`` on worker ``i`` of a local cluster means ``cuda:i mod n``."""
    if device != "cuda":
        return device
    import torch

    try:
        from distributed import get_worker

        name = get_worker().name
        index = int(name) if str(name).isdigit() else abs(hash(name))
    except (ImportError, ValueError):
        index = 0
    return f"cuda:{index % max(1, torch.cuda.device_count())}"


def _worker_model(plan: SynthPlan) -> Any:
    device = worker_device(plan.device)
    key = (str(plan.model.path), device, plan.quality, plan.runtime)
    if plan.model.path is None:  # an in-memory model travelled with the plan
        return plan.model.load(device, plan.quality, plan.runtime)
    if key not in _WORKER_MODELS:
        _WORKER_MODELS[key] = plan.model.load(device, plan.quality, plan.runtime)
    return _WORKER_MODELS[key]


def _identity(value: Any) -> Any:
    return value


@dataclass
class TaskFailed:
    """A geodiff error raised by a task, returned instead of raised: it is the same on every worker (a corrupt
    model, a bad value), so Dask must not retry it elsewhere (retries are for errors of the moment); the client
    raises it. Its traceback went to the worker's stderr (the run folder's dask.log on a local cluster)."""

    error: BaseException


def _deterministic_errors_returned(task: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(task)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except GeodiffError as exc:
            import sys
            import traceback

            print(f"geodiff task {task.__name__} failed, not retried:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            return TaskFailed(exc)

    return run


def _result(value: Any) -> Any:
    if isinstance(value, TaskFailed):
        raise value.error
    return value


@_deterministic_errors_returned
def strip_task(plan: SynthPlan, features: Any, index: int, threads: int) -> StripResult:
    """One strip on a worker: the model is loaded once per worker process and reused."""
    import torch

    from geodiff.synth import compute_strip

    if threads:
        torch.set_num_threads(threads)
    return compute_strip(plan, _worker_model(plan), features, index)


# ----------------------------------------------------------------------------------------------------------
# the run folder
# ----------------------------------------------------------------------------------------------------------


def _file_identity(path: Path | None) -> list[Any] | None:
    if path is None:
        return None
    st = Path(path).stat()
    return [str(path), st.st_size, int(st.st_mtime)]


def plan_fingerprint(plan: SynthPlan, threads: int = 1) -> str:
    """What decides a run's pixels: area, grid, windows, strips, sampling, model, map source, geodiff version,
    and the batch size and torch threads (they change the order of float sums, so a few values by one level).
    A run folder is resumed only by the same fingerprint."""
    g = plan.grid
    model_files = []
    if plan.model.path is not None:
        for p in sorted(Path(plan.model.path).rglob("*")):
            if p.is_file() and p.suffix in (".json", ".safetensors"):
                model_files.append(_file_identity(p))
    spec = {
        "version": __version__,
        "bbox": str(plan.bbox),
        "grid": [g.crs.to_wkt(), list(g.transform)[:6], g.width, g.height],
        "layout": [
            plan.layout.canvas_row,
            plan.layout.canvas_col,
            plan.layout.rows,
            plan.layout.cols,
            plan.layout.tile,
            plan.layout.overlap,
        ],  # fmt: skip
        "strips": plan.strips,
        "sampling": [plan.seed, plan.steps, plan.sampler, plan.quality, plan.guidance_scale, plan.blend]
        # pixels differ within tolerance between runtimes: a run resumes on its own (torch runs as before)
        + ([plan.runtime] if plan.runtime != "torch" else []),
        "arithmetic": [plan.batch_size, threads],
        "device_type": plan.device.split(":")[0],
        "model": [plan.model.name, plan.model.config.to_dict(), model_files],
        "source": [
            _file_identity(plan.source.osm_path),
            _file_identity(plan.source.vector_path),
            plan.source.class_field,
        ],  # fmt: skip
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class RunFolder:
    """Finished strips of one run, saved as they complete (``<out>.run/strip-000012.npz``, each atomic)."""

    path: Path
    fingerprint: str
    n_strips: int

    @classmethod
    def open(cls, plan: SynthPlan, threads: int = 1) -> RunFolder:
        """The run folder of ``plan``'s output: resumed if it holds the same request, else created.

        A folder left by a different request is kept unless ``plan.overwrite``: it is someone's unfinished work.
        """
        out = Path(plan.out_path)  # type: ignore[arg-type]
        path = out.with_name(out.name + RUN_SUFFIX)
        if path.exists() and not path.is_dir():
            raise InvalidParameterError(
                f"{path} exists and is not a folder: geodiff keeps a run's finished strips there; move it away"
            )
        fp = plan_fingerprint(plan, threads)
        manifest = path / "run.json"
        if path.exists():
            try:
                old = json.loads(manifest.read_text())
            except (OSError, ValueError):
                old = {}
            if old.get("fingerprint") != fp:
                if not plan.overwrite:
                    raise InvalidParameterError(
                        f"{path} holds an unfinished run of a different request: run that command again to "
                        "finish it, or pass --overwrite to discard it"
                    )
                shutil.rmtree(path)
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the run folder {path}: {exc.strerror or exc}") from exc
        if not manifest.exists():
            from geodiff.io import atomic_path

            with atomic_path(manifest) as tmp:
                tmp.write_text(
                    json.dumps({"fingerprint": fp, "strips": len(plan.strips), "output": str(out)})
                )
        return cls(path, fp, len(plan.strips))

    def _file(self, index: int) -> Path:
        return self.path / f"strip-{index:06d}.npz"

    def done(self) -> set[int]:
        return {i for i in range(self.n_strips) if self._file(i).is_file()}

    def save(self, result: StripResult) -> None:
        target = self._file(result.index)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **result.arrays())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OutputError(
                f"cannot save finished strip {result.index} in {self.path}: {exc.strerror}"
            ) from exc

    def load(self, index: int) -> StripResult:
        from geodiff.synth import StripResult

        with np.load(self._file(index)) as data:
            return StripResult(index, **{k: data[k] for k in data.files})

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# the client side
# ----------------------------------------------------------------------------------------------------------


def estimate_distributed_seconds(plan: SynthPlan, workers: int, overhead_s: float = 10.0) -> float | None:
    """Single-process estimate spread over ``workers`` (strips are the unit, so at most one worker per strip),
    plus the cluster's start-up and per-worker model load."""
    if plan.seconds_estimate is None:
        return None
    parallel = max(1, min(workers, len(plan.strips)))
    per_strip = plan.seconds_estimate / len(plan.strips)
    return math.ceil(len(plan.strips) / parallel) * per_strip + overhead_s


def synthesize_distributed(
    plan: SynthPlan,
    workers: int | None = None,
    scheduler: str | None = None,
    threads_per_worker: int = 1,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
    on_event: Callable[..., None] | None = None,
    client: Any = None,
    cluster: ClusterOptions | None = None,
) -> SynthResult:
    """Run ``plan`` with its strips as tasks on a Dask cluster; resumable through the run folder.

    Parameters
    ----------
    plan
        From :func:`geodiff.synth.plan_synthesis` (with an output path).
    workers, scheduler, threads_per_worker
        A local cluster of ``workers`` processes, or an existing cluster's ``scheduler`` address
        (see :func:`dask_client`); ``client`` passes an already connected ``distributed.Client``.
    cluster
        The same as one value (:class:`geodiff.options.ClusterOptions`, what the CLI passes), instead of
        ``workers``, ``scheduler``, ``threads_per_worker``.
    settings, progress, on_event
        As for :func:`geodiff.synth.synthesize`; progress counts finished strips across the cluster.

    Returns
    -------
    SynthResult
        The same files, with the same pixels on the same device type, as :func:`geodiff.synth.synthesize`.
    """
    from geodiff.synth import SynthResult, assemble, output_sink, provenance

    if plan.out_path is None:
        raise InvalidParameterError("the plan has no output path: plan_synthesis(bbox, out_path, ...)")
    if cluster is not None:
        workers, scheduler = cluster.workers, cluster.scheduler
        threads_per_worker = cluster.threads_per_worker
    settings = settings or get_settings()
    started = time.monotonic()
    run = RunFolder.open(plan, threads_per_worker)
    n = len(plan.strips)
    done = run.done()
    if done and on_event is not None:
        on_event(event="resume", finished=len(done), strips=n, run_folder=str(run.path))
    todo = [s for s in range(n) if s not in done]
    if todo:
        report(progress, 0.0, "loading map features")
        features = plan.source.load(BBox(*plan.canvas_grid().bounds, crs=plan.grid.crs), settings)
        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(
                    dask_client(workers, scheduler, threads_per_worker, log=run.path / LOG_NAME)
                )
            if on_event is not None:
                on_event(
                    event="cluster", workers=len(client.scheduler_info().get("workers", {})), tasks=len(todo)
                )
            _run_tasks(client, plan, features, todo, run, threads_per_worker, n, len(done), progress)
    report(progress, 1.0, "writing outputs")
    tags = provenance(plan)
    with output_sink(plan, tags) as sink:
        assemble(plan, (run.load(s) for s in range(n)), sink)
    run.remove()
    report(progress, 1.0, "done")
    return SynthResult(plan.out_path, plan.mask_path, plan.grid, time.monotonic() - started, plan, tags)


def _run_tasks(
    client: Any,
    plan: SynthPlan,
    features: Any,
    todo: Sequence[int],
    run: RunFolder,
    threads: int,
    n: int,
    already: int,
    progress: ProgressCallback | None,
) -> None:
    from distributed import as_completed

    from geodiff.synth import strip_features

    # The plan travels once, as a task's result rather than scattered data: scattered data dies with the worker
    # holding it (the Active Memory Manager drops the extra copies broadcast=True makes), so one lost worker
    # would cancel the run; a lost result is recomputed from the graph, which therefore holds the plan (and an
    # in-memory model's weights, which Dask may warn about as a large graph).
    # Keys are unique to this call: the fingerprint leaves out in-memory weights, and two calls sharing a key
    # would share (and cancel) each other's tasks; resuming goes through the run folder, not the keys.
    prefix = f"geodiff-{run.fingerprint[:12]}-{uuid.uuid4().hex[:8]}"
    plan_future = client.submit(_identity, plan, key=f"{prefix}-plan", pure=False)
    futures = [
        client.submit(
            strip_task,
            plan_future,
            strip_features(plan, features, s),
            s,
            threads,
            key=f"{prefix}-strip-{s}",
            retries=TASK_RETRIES,
            pure=False,
        )  # fmt: skip
        for s in todo
    ]
    finished = already
    try:
        for future in as_completed(futures):
            run.save(_result(future.result()))
            finished += 1
            report(progress, finished / n * 0.99, f"block {finished}/{n} done")
    finally:
        client.cancel([*futures, plan_future])


@_deterministic_errors_returned
def render_task(plan: SynthPlan, features: Any, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One augmentation sample on a worker (the model loaded once per worker process)."""
    import torch

    from geodiff.synth import render

    if threads:
        torch.set_num_threads(threads)
    return render(plan, _worker_model(plan), features)


@_deterministic_errors_returned
def change_region_task(plan: SynthPlan, inputs: Any, settings: Any, threads: int = 1) -> Any:
    """One region of ``geodiff change`` on a worker (the model loaded once per worker process)."""
    import torch

    from geodiff.change import compute_region

    if threads:
        torch.set_num_threads(threads)
    return compute_region(plan, _worker_model(plan), inputs, settings)


def change_region_tasks(
    client: Any, plan: SynthPlan, inputs: Iterator[Any], settings: Any, threads: int = 1
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Submit every region's :class:`~geodiff.change.RegionInputs`; yield ``(row, col, rgb)`` in order."""
    futures = [
        client.submit(change_region_task, plan, x, settings, threads, retries=TASK_RETRIES, pure=False)
        for x in inputs
    ]
    yield from _in_order(client, futures)


def _in_order(client: Any, futures: list[Any]) -> Iterator[Any]:
    """The futures' results in submission order (a task's geodiff error raised here); whatever is not yet
    collected is cancelled when the consumer stops early or fails."""
    try:
        for future in futures:
            yield _result(future.result())
    finally:
        client.cancel(futures)


def render_tasks(
    client: Any, jobs: Iterator[tuple[int, int, SynthPlan, Any]], threads: int = 1
) -> Iterator[tuple[int, int, SynthPlan, tuple[np.ndarray, np.ndarray]]]:
    """Submit every ``(window, seed, plan, features)`` job, yield their renders in submission order."""
    from geodiff.synth import strip_features

    submitted = []
    for wi, seed, plan, features in jobs:
        part = strip_features(plan, features, 0) if len(plan.strips) == 1 else features
        future = client.submit(render_task, plan, part, threads, retries=TASK_RETRIES, pure=False)
        submitted.append((wi, seed, plan, future))
    with contextlib.closing(_in_order(client, [f for *_, f in submitted])) as renders:  # cancels on exit
        for (wi, seed, plan, _), rendered in zip(submitted, renders, strict=False):
            yield wi, seed, plan, rendered
