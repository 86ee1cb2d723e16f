"""The U-Net and the decoder on ONNX Runtime (``runtime="onnx"``), the CPU runtime that won the measurement.

``bench/results/runtime_cpu`` timed eager torch, channels_last, torch.compile, ONNX Runtime and OpenVINO side by
side on 2 CPU threads: ONNX Runtime ran the U-Net 1.4-2.4x and the decoder 1.4-2.7x faster than eager torch with
outputs within 1e-6 (relative), more than any other arm. This module exports a model's U-Net and decoder once per
latent shape (batch left dynamic) with ``torch.onnx.export`` into the cache folder, checks the exported graph
against torch on the first inputs it sees (relative max difference <= :data:`TOLERANCE`, else a
:class:`~geodiff.errors.ModelError` and no file is kept) and runs it with the CPU execution provider on torch's
thread count. The files are named by a digest of the weights and the versions, so a changed model, torch or
onnxruntime exports afresh.

Needs ``pip install 'geodiff[onnx]'`` (onnxruntime, onnx, onnxscript).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geodiff.errors import InvalidParameterError, ModelError, OutputError
from geodiff.options import check_runtime_name

TOLERANCE = 1e-3
"""Largest accepted max |onnx - torch| / max |torch| of an exported graph on its first inputs."""
_PACKAGES = ("onnxruntime", "onnx", "onnxscript")


def check_runtime(runtime: str, device: str | torch.device | None = None) -> str:
    """Validate a runtime name (and that it can run on ``device`` with the installed packages)."""
    check_runtime_name(runtime)
    if runtime == "onnx":
        if device is not None and torch.device(device).type != "cpu":
            raise InvalidParameterError(
                f"runtime 'onnx' runs on the CPU, not {device}: use --device cpu, or --runtime torch on a GPU"
            )
        missing = [p for p in _PACKAGES if importlib.util.find_spec(p) is None]
        if missing:
            raise InvalidParameterError(
                f"runtime 'onnx' needs {', '.join(missing)}: pip install 'geodiff[onnx]' (or use --runtime torch)"
            )
    return runtime


class _UNetCall(nn.Module):
    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *t_cond: torch.Tensor) -> Any:
        return self.unet(
            x,
            t,
            encoder_hidden_states=context,
            timestep_cond=t_cond[0] if t_cond else None,
            return_dict=False,
        )[0]


class _DecoderCall(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> Any:
        return self.vae.decode(z, return_dict=False)[0]


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _digest(call: nn.Module) -> str:
    """What decides an exported graph: the weights, the part's config and the code and versions that export it."""
    import diffusers
    import onnxruntime

    from geodiff._version import __version__

    part = next(iter(call.children()))
    versions = f"geodiff {__version__} torch {torch.__version__} diffusers {diffusers.__version__} "
    versions += f"onnxruntime {onnxruntime.__version__}"
    h = hashlib.sha256(versions.encode())
    h.update(json.dumps(dict(getattr(part, "config", {})), sort_keys=True, default=str).encode())
    for name, tensor in call.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class OnnxParts:
    """A model's U-Net and decoder as ONNX Runtime sessions, exported on first use per latent shape."""

    def __init__(self, unet: nn.Module, vae: nn.Module, cache_dir: str | Path) -> None:
        self.folder = Path(cache_dir) / "onnx"
        self.calls = {"unet": _UNetCall(unet).eval(), "decoder": _DecoderCall(vae).eval()}
        self.digests = {part: _digest(call) for part, call in self.calls.items()}
        self.sessions: dict[tuple[str, tuple[int, ...]], Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # travels to Dask workers without its sessions (they reopen the cached files)
        return {**vars(self), "sessions": {}}

    def exported(self) -> bool:
        """Whether both parts of these weights have a graph in the cache folder (a model's latent shape is fixed by
        its config, so one graph per part serves it)."""
        return all(any(self.folder.glob(f"{part}-{d}-*.onnx")) for part, d in self.digests.items())

    def unet(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, t_cond: torch.Tensor | None
    ) -> Any:
        # the time embedding casts t to float: a float32 input serves integer and fractional timesteps alike
        inputs = (x.float(), t.float(), context.float(), *(() if t_cond is None else (t_cond.float(),)))
        return self._run("unet", inputs)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._run("decoder", (z.float(),))

    def _run(self, part: str, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # one session per part, input shape and torch's thread count at the call (--threads, a Dask worker's)
        key = (part, tuple(d for x in inputs for d in x.shape[1:]), torch.get_num_threads())
        if key not in self.sessions:
            self.sessions[key] = self._session(part, inputs)
        sess = self.sessions[key]
        try:
            return torch.from_numpy(sess.run(None, self._feed(sess, inputs))[0])
        except Exception as exc:  # a graph from another version of this code wants other inputs
            raise ModelError(
                f"ONNX Runtime could not run the model's cached {part} ({_one_line(exc)}): delete "
                f"{self.folder} to export it again, or use --runtime torch"
            ) from exc

    @staticmethod
    def _feed(sess: Any, inputs: tuple[torch.Tensor, ...]) -> dict[str, Any]:
        names = [i.name for i in sess.get_inputs()]
        if len(names) != len(inputs):
            raise ValueError(f"the graph takes {len(names)} inputs, the model gives {len(inputs)}")
        return {n: x.contiguous().numpy() for n, x in zip(names, inputs, strict=True)}

    def _path(self, part: str, inputs: tuple[torch.Tensor, ...]) -> Path:
        tag = "x".join(str(d) for d in inputs[0].shape[1:]) + ("g" if len(inputs) == 4 else "")
        return self.folder / f"{part}-{self.digests[part]}-{tag}.onnx"

    def _open(self, path: Path) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(
                f"ONNX Runtime could not load {path} ({_one_line(exc)}): delete the file to export it again, "
                "or use --runtime torch"
            ) from exc

    def _session(self, part: str, inputs: tuple[torch.Tensor, ...]) -> Any:
        path = self._path(part, inputs)
        if not path.is_file():
            try:
                self._export(part, inputs, path)
            except OutputError:
                if not path.is_file():
                    raise
                # another process (a Dask worker beside this one) published the same checked graph first
        return self._open(path)

    def _export(self, part: str, inputs: tuple[torch.Tensor, ...], path: Path) -> None:
        from geodiff.io import atomic_path

        batch = torch.export.Dim("batch", min=1, max=1024)
        # one example batch size for every export: the graph (its folded constants, the kernels ONNX Runtime
        # picks) then does not depend on the first call's batch, so processes that export on their own (Dask
        # workers) run the very same graph
        example = tuple(x[:1].expand(2, *x.shape[1:]).contiguous() for x in inputs)
        path.parent.mkdir(parents=True, exist_ok=True)
        # checked before it is published: a graph in the cache folder has passed the check
        verify = lambda tmp: self._check(part, self._open(tmp), inputs)  # noqa: E731
        with atomic_path(path, overwrite=True, verify=verify) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
            exporter_log = logging.getLogger("torch.onnx")
            level = exporter_log.level
            exporter_log.setLevel(logging.ERROR)  # for this export only: the user's logging is theirs
            try:
                torch.onnx.export(
                    self.calls[part], example, str(tmp), dynamo=True, external_data=False, verbose=False,
                    dynamic_shapes=self._dynamic_batch(part, len(inputs), {0: batch}),
                )  # fmt: skip
            except Exception as exc:
                raise ModelError(
                    f"could not export the model's {part} to ONNX ({_one_line(exc)}): use --runtime torch"
                ) from exc
            finally:
                exporter_log.setLevel(level)

    @staticmethod
    def _dynamic_batch(part: str, n: int, dim: dict) -> tuple:
        """Every input's first axis dynamic, in the shape of the call's signature (the U-Net's t_cond: *args)."""
        if part == "unet":
            return (dim, dim, dim) + ((tuple(dim for _ in range(n - 3)),) if n > 3 else ())
        return (dim,)

    def _check(self, part: str, sess: Any, inputs: tuple[torch.Tensor, ...]) -> None:
        with torch.no_grad():
            want = self.calls[part](*inputs).float()
        got = torch.from_numpy(sess.run(None, self._feed(sess, inputs))[0])
        rel = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
        if not rel <= TOLERANCE:
            raise ModelError(
                f"the ONNX export of the model's {part} differs from torch by {rel:.2g} (relative, over the "
                f"{TOLERANCE:g} accepted): use --runtime torch"
            )
