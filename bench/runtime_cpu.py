#!/usr/bin/env python
r"""CPU runtimes for the shipped model: its U-Net forward pass and its autoencoder decoder, side by side in one run.

Usage::

    python bench/runtime_cpu.py [--model DIR] [--quality full[,fast]] [--threads 1,2] [--batch 1,8] \
        [--reps 10] [--atol 1e-3] [--arms eager,channels_last,compile,compile_freezing,onnxruntime,openvino] \
        [--cold-compile] \
        [--out bench/results/runtime_cpu]

What one call is: the U-Net of :meth:`geodiff.model.GeodiffModel.predict_noise` (noisy latents of one 256 px
window per sample concatenated with the map encoding, a timestep, the map's cross-attention tokens, and for the
distilled student, ``--quality fast``, its guidance embedding as ``timestep_cond``; one pass, no guidance
batching), and :meth:`~geodiff.model.GeodiffModel.decode_latents` (latents to a clamped ``[-1, 1]`` image).
The inputs are real: a random class map run through ``model.condition``, Gaussian latents, timestep 500.

Arms, each against the same inputs:

- ``eager``: torch float32, contiguous tensors (the baseline);
- ``channels_last``: eager torch with the module and its 4-D inputs in ``torch.channels_last``;
- ``compile``: ``torch.compile(backend="inductor", dynamic=False)``, compiled afresh for every thread count
  (inductor bakes the OpenMP thread count into its kernels); the first call (compile + one run) is not timed
  but reported (it reuses inductor's on-disk cache from earlier runs unless ``--cold-compile``);
- ``compile_freezing``: the same with inductor's ``freezing`` option (weights folded in as constants, oneDNN
  weight prepacking), PyTorch's recommended CPU inference setting;
- ``onnxruntime``: ``torch.onnx.export`` (the dynamo exporter, the TorchScript one if that fails; static shapes,
  one export per batch size) run by ONNX Runtime's CPUExecutionProvider, all graph optimizations,
  ``intra_op_num_threads`` = the torch thread count;
- ``openvino``: ``openvino.convert_model`` of the torch module with an example input (static shapes), compiled
  for "CPU" with ``INFERENCE_NUM_THREADS`` = the thread count and ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO
  would otherwise run bf16 on CPUs with AVX512-BF16/AMX, which is not the same model).

An arm whose package is missing or whose export / compile / run fails is reported as ``failed: <reason>``.
For each component x arm x threads x batch: median and min seconds per call over ``--reps`` calls (arms
interleaved call by call, so they share the machine's load), seconds per 256 px window (/ batch), speedup over
eager at the same threads and batch, max |out - eager| and that over max |eager|, and whether the latter is
within ``--atol``. Export / conversion seconds and the first call's seconds are reported, not timed.

Writes ``<out>/results.json`` and ``<out>/results.md`` (table, command, versions, CPU, date).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from run import device_name  # bench/run.py: the CPU's model name, as every benchmark reports it
from torch import nn

REPO = Path(__file__).resolve().parents[1]
ARMS = ("eager", "channels_last", "compile", "compile_freezing", "onnxruntime", "openvino")
DEFAULT_ARMS = ARMS
COMPONENTS = ("unet", "decoder")
TIMESTEP = 500


# ----------------------------------------------------------------------------------------------------------
# the two components as modules of plain tensors
# ----------------------------------------------------------------------------------------------------------


class UNetCall(nn.Module):
    """``GeodiffModel.predict_noise``'s U-Net call on plain tensors, named by ``names`` (in this order):
    ``latents``, ``t``, and where the model has them ``concat`` (map channels), ``context``, ``t_cond``."""

    def __init__(self, unet: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.unet = unet
        self.names = names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        a = dict(zip(self.names, args, strict=True))
        x = a["latents"]
        if "concat" in a:
            x = torch.cat([x, a["concat"]], dim=1)
        return self.unet(
            x, a["t"], encoder_hidden_states=a["context"], timestep_cond=a.get("t_cond"), return_dict=False
        )[0]


class DecodeCall(nn.Module):
    """``GeodiffModel.decode_latents``: scaled latents -> image in ``[-1, 1]``."""

    def __init__(self, vae: nn.Module, scale: float, shift: float) -> None:
        super().__init__()
        self.vae = vae
        self.scale, self.shift = scale, shift

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.scale + self.shift, return_dict=False)[0].clamp(-1, 1)


def component_inputs(model: Any, batch: int, seed: int) -> dict[str, tuple[tuple[str, ...], tuple]]:
    """component -> (input names, input tensors) for one batch, as ``predict_noise`` / ``decode_latents`` see them."""
    from geodiff.model.student import guidance_embedding

    g = torch.Generator().manual_seed(seed + batch)
    tile = model.config.tile_size
    side = tile // model.latent_factor
    maps = torch.randint(0, model.config.num_classes, (batch, tile, tile), generator=g)
    with torch.no_grad():
        cond = model.condition(maps)
    latents = torch.randn(batch, model.latent_channels, side, side, generator=g)
    names, tensors = ["latents", "t"], [latents, torch.full((batch,), TIMESTEP, dtype=torch.int64)]
    if cond.concat is not None:
        names.append("concat")
        tensors.append(cond.concat.float().contiguous())
    names.append("context")
    tensors.append(cond.context.float().contiguous())
    dim = model.unet.config.time_cond_proj_dim
    if dim:
        scale = torch.full((batch,), float(model.config.guidance(None)))
        names.append("t_cond")
        tensors.append(guidance_embedding(scale, dim).float())
    return {"unet": (tuple(names), tuple(tensors)), "decoder": (("latents",), (latents.clone(),))}


def component_module(model: Any, component: str, names: tuple[str, ...]) -> nn.Module:
    if component == "unet":
        return UNetCall(model.unet, names).eval()
    scale, shift = model._scale_shift()
    return DecodeCall(model.vae, scale, shift).eval()


# ----------------------------------------------------------------------------------------------------------
# arms: each prepares a zero-argument callable returning the output as a torch tensor
# ----------------------------------------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def prep_eager(module: nn.Module, inputs: tuple) -> Callable[[], torch.Tensor]:
    return lambda: module(*inputs)


def prep_channels_last(module: nn.Module, inputs: tuple) -> Callable[[], torch.Tensor]:
    cl = copy.deepcopy(module).to(memory_format=torch.channels_last)
    cl_inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in inputs)
    return lambda: cl(*cl_inputs)


def prep_compile(module: nn.Module, inputs: tuple, freezing: bool) -> Callable[[], torch.Tensor]:
    # dynamo shares a compiled graph between instances of one module class (their weights are graph inputs)
    # unless the backend differs: passing options makes compile_freezing's backend its own
    opts = {"freezing": True} if freezing else None
    compiled = torch.compile(copy.deepcopy(module), backend="inductor", dynamic=False, options=opts)
    return lambda: compiled(*inputs)


class Exports:
    """ONNX files and OpenVINO models, made once per component and batch and shared by the thread counts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.onnx: dict[tuple[str, int], tuple[Path | None, str, float]] = {}
        self.ov: dict[tuple[str, int], tuple[Any, str, float]] = {}

    def onnx_file(
        self, component: str, batch: int, module: nn.Module, names, inputs
    ) -> tuple[Path, str, float]:
        key = (component, batch)
        if key not in self.onnx:
            path = self.folder / f"{component}_b{batch}.onnx"
            t0, errors = time.perf_counter(), []
            for dynamo in (True, False):
                try:
                    torch.onnx.export(
                        module, inputs, str(path), input_names=list(names), output_names=["out"],
                        dynamo=dynamo, external_data=False,
                    )  # fmt: skip
                    how = "dynamo exporter" if dynamo else "TorchScript exporter"
                    if errors:
                        how += f" (dynamo exporter failed: {errors[0]})"
                    self.onnx[key] = (path, how, time.perf_counter() - t0)
                    break
                except Exception as exc:  # noqa: BLE001 - every exporter failure is a reportable result
                    errors.append(one_line(exc))
            else:
                self.onnx[key] = (None, "; ".join(f"export: {e}" for e in errors), time.perf_counter() - t0)
        path, how, secs = self.onnx[key]
        if path is None:
            raise RuntimeError(how)
        return path, how, secs

    def ov_model(self, component: str, batch: int, module: nn.Module, inputs) -> tuple[Any, str, float]:
        import openvino as ov

        key = (component, batch)
        if key not in self.ov:
            t0 = time.perf_counter()
            try:
                shapes = [ov.PartialShape(list(x.shape)) for x in inputs]
                m = ov.convert_model(copy.deepcopy(module), example_input=inputs, input=shapes)
                self.ov[key] = (m, "convert_model, static shapes", time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001
                self.ov[key] = (None, f"convert_model: {one_line(exc)}", time.perf_counter() - t0)
        m, how, secs = self.ov[key]
        if m is None:
            raise RuntimeError(how)
        return m, how, secs


def prep_onnxruntime(path: Path, names, inputs, threads: int) -> Callable[[], torch.Tensor]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    feed = {n: x.numpy() for n, x in zip(names, inputs, strict=True) if n in wanted}
    missing = wanted - set(feed)
    if missing:
        raise RuntimeError(f"exported graph wants inputs {sorted(missing)}")
    return lambda: torch.from_numpy(sess.run(None, feed)[0])


def prep_openvino(ov_model: Any, inputs, threads: int) -> Callable[[], torch.Tensor]:
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    compiled = core.compile_model(
        ov_model,
        "CPU",
        {
            props.inference_num_threads: threads,
            hints.inference_precision: ov.Type.f32,
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            props.num_streams: 1,
        },
    )
    request = compiled.create_infer_request()
    arrays = [x.numpy() for x in inputs]

    def call() -> torch.Tensor:
        request.infer(arrays)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return call


# ----------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"torch": torch.__version__}
    for name in ("diffusers", "onnx", "onnxscript", "onnxruntime", "openvino"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def run_group(
    model: Any,
    quality: str,
    threads: int,
    batch: int,
    args: argparse.Namespace,
    exports: Exports,
) -> list[dict]:
    """Every arm of every component at one thread count and batch size."""
    rows: list[dict] = []
    inputs_by_comp = component_inputs(model, batch, args.seed)
    for component in args.components:
        names, inputs = inputs_by_comp[component]
        module = component_module(model, component, names)
        calls: dict[str, Callable[[], torch.Tensor]] = {}
        info: dict[str, dict] = {}
        ref: torch.Tensor | None = None
        for arm in args.arms:
            row: dict[str, Any] = {
                "quality": quality, "component": component, "arm": arm, "threads": threads, "batch": batch,
            }  # fmt: skip
            info[arm] = row
            rows.append(row)
            try:
                if arm == "eager":
                    fn = prep_eager(module, inputs)
                elif arm == "channels_last":
                    fn = prep_channels_last(module, inputs)
                elif arm in ("compile", "compile_freezing"):
                    fn = prep_compile(module, inputs, freezing=arm == "compile_freezing")
                elif arm == "onnxruntime":
                    import onnxruntime  # noqa: F401 - a missing package fails the arm here

                    path, how, secs = exports.onnx_file(component, batch, module, names, inputs)
                    row["export"], row["export_s"] = how, round(secs, 2)
                    fn = prep_onnxruntime(path, names, inputs, threads)
                elif arm == "openvino":
                    import openvino  # noqa: F401

                    ov_model, how, secs = exports.ov_model(component, batch, module, inputs)
                    row["export"], row["export_s"] = how, round(secs, 2)
                    fn = prep_openvino(ov_model, inputs, threads)
                else:
                    raise ValueError(f"unknown arm {arm!r}")
                t0 = time.perf_counter()
                out = fn()
                row["first_call_s"] = round(time.perf_counter() - t0, 3)
                for _ in range(max(0, args.warmup - 1)):
                    fn()
                out = out.detach().float().contiguous()
                if arm == "eager":
                    ref = out
                if ref is None:
                    raise RuntimeError("no eager output to compare with (run the eager arm)")
                if out.shape != ref.shape:
                    raise RuntimeError(f"output shape {tuple(out.shape)} != eager {tuple(ref.shape)}")
                diff = float((out - ref).abs().max())
                rel = diff / max(float(ref.abs().max()), 1e-12)
                row.update(max_abs_diff=diff, rel_diff=rel, within_tol=bool(rel <= args.atol), status="ok")
                calls[arm] = fn
            except Exception as exc:  # noqa: BLE001 - a failed arm is a result, not the end of the run
                row["status"] = f"failed: {one_line(exc)}"
                if args.verbose:
                    traceback.print_exc()
            print(f"  prepared {component} {arm} t{threads} b{batch}: {row['status']}", flush=True)
        times: dict[str, list[float]] = {arm: [] for arm in calls}
        for _ in range(args.reps):
            for arm, fn in list(calls.items()):
                try:
                    t0 = time.perf_counter()
                    fn()
                    times[arm].append(time.perf_counter() - t0)
                except Exception as exc:  # noqa: BLE001
                    info[arm]["status"] = f"failed: while timing: {one_line(exc)}"
                    calls.pop(arm)
                    times.pop(arm)
        for arm, ts in times.items():
            med = statistics.median(ts)
            info[arm].update(median_s=med, min_s=min(ts), per_window_s=med / batch)
        base = info.get("eager", {}).get("median_s")
        for arm in times:
            if base:
                info[arm]["speedup"] = base / info[arm]["median_s"]
        del calls, times
    return rows


def markdown(result: dict) -> str:
    def f(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    lines = [
        "# CPU runtimes: U-Net forward and autoencoder decoder",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}",
        f"- CPU: {result['cpu']} ({result['cpu_count']} logical CPUs); load average at start "
        f"{result['loadavg_start']}, at end {result['loadavg_end']}",
        "- packages: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in result["versions"].items()),
        f"- model: {result['model']}; one call = one U-Net pass / one decode of `batch` 256 px windows; "
        f"{result['reps']} timed calls per arm after {result['warmup']} warm-up call(s), arms interleaved",
        f"- tolerance: max |out - eager| / max |eager| <= {result['atol']:g}; inductor caches "
        f"{result['inductor_caches']} (the compile arms' first call s)",
        "",
        "| quality | component | arm | threads | batch | median s | min s | s / window | speedup vs eager "
        "| max abs diff | rel diff | within tol | first call s | export s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ok = r.get("within_tol")
        lines.append(
            f"| {r['quality']} | {r['component']} | {r['arm']} | {r['threads']} | {r['batch']} "
            f"| {f(r.get('median_s'), '.4f')} | {f(r.get('min_s'), '.4f')} | {f(r.get('per_window_s'), '.4f')} "
            f"| {f(r.get('speedup'), '.2f')} | {f(r.get('max_abs_diff'), '.2e')} | {f(r.get('rel_diff'), '.2e')} "
            f"| {'' if ok is None else ('yes' if ok else 'NO')} | {f(r.get('first_call_s'), '.2f')} "
            f"| {f(r.get('export_s'), '.1f')} | {r.get('status', '')} |"
        )
    notes = [f"- {r['component']} b{r['batch']} {r['arm']}: {r['export']}" for r in result["rows"]
             if r.get("export") and r["threads"] == result["threads"][0]]  # fmt: skip
    if notes:
        lines += ["", "Exports:", "", *notes]
    if result.get("skipped"):
        lines += ["", "Skipped:", "", *(f"- {s}" for s in result["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder or name (default: the shipped default)")
    ap.add_argument("--quality", default="full", help="full, fast (the distilled student) or full,fast")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch / ORT / OpenVINO thread counts")
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes (256 px windows per call)")
    ap.add_argument("--reps", type=int, default=10, help="timed calls per arm")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls first (the first one is reported)")
    ap.add_argument("--atol", type=float, default=1e-3, help="tolerance on max|diff| / max|eager|")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--components", default=",".join(COMPONENTS), help="unet, decoder or both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--cold-compile",
        action="store_true",
        help="no inductor caches: the first call pays the whole compile",
    )
    ap.add_argument("--verbose", action="store_true", help="print the traceback of a failed arm")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "runtime_cpu")
    args = ap.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    args.components = [c for c in args.components.split(",") if c]
    bad = [a for a in args.arms if a not in ARMS] + [c for c in args.components if c not in COMPONENTS]
    if bad:
        ap.error(f"unknown arm(s) / component(s): {', '.join(bad)}")
    if "eager" in args.arms:  # the reference comes first
        args.arms = ["eager"] + [a for a in args.arms if a != "eager"]
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batch.split(",")]

    from geodiff.errors import ModelError
    from geodiff.models import load_model, resolve_model

    ref = resolve_model(args.model)
    result: dict[str, Any] = {
        "command": shlex.join(["python", "bench/runtime_cpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": device_name("cpu"),
        "cpu_count": os.cpu_count(),
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "versions": package_versions(),
        "model": str(ref.path or ref.name),
        "threads": threads,
        "batch": batches,
        "reps": args.reps,
        "warmup": args.warmup,
        "atol": args.atol,
        "inductor_caches": "disabled (--cold-compile)"
        if args.cold_compile
        else "allowed (on-disk, from earlier runs)",
        "arms": args.arms,
        "skipped": [],
        "rows": [],
    }
    if args.cold_compile:
        import importlib

        importlib.import_module("torch._inductor.config").force_disable_caches = True
    args.out.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        result["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
        (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "results.md").write_text(markdown(result))

    with tempfile.TemporaryDirectory(prefix="runtime_cpu_") as tmp, torch.no_grad():
        for quality in [q for q in args.quality.split(",") if q]:
            try:
                ref.quality(quality)  # checks the folder has a student for "fast"
                model = load_model(args.model, device="cpu", quality=quality)
            except ModelError as exc:
                result["skipped"].append(f"quality {quality}: {exc}")
                print(f"skipped quality {quality}: {exc}", flush=True)
                continue
            exports = Exports(Path(tmp) / quality)
            exports.folder.mkdir()
            for n in threads:
                torch.set_num_threads(n)
                torch._dynamo.reset()  # inductor kernels are built for the thread count at compile time
                for b in batches:
                    print(f"quality {quality}, {n} thread(s), batch {b}", flush=True)
                    result["rows"] += run_group(model, quality, n, b, args, exports)
                    write()
    write()
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
