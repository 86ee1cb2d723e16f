"""Thin command-line layer: ``geodiff <command>``. Commands only parse options and call the library.

Each command lives in its own module under ``geodiff.cli`` and is imported lazily, so ``geodiff --help`` and
``geodiff rasterize`` never import torch.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

import click

from geodiff._version import __version__
from geodiff.errors import GeodiffError

# command name -> (module, attribute, short help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "rasterize": ("geodiff.cli.rasterize", "rasterize", "OpenStreetMap -> semantic map GeoTIFF."),
    "synth": ("geodiff.cli.synth", "synth", "Synthetic aerial imagery GeoTIFF for a bbox."),
    "dataset": ("geodiff.cli.dataset", "dataset", "Build training datasets of (image, mask) tiles."),
    "train": ("geodiff.cli.train", "train", "Train the autoencoder or the diffusion model."),
    "evaluate": (
        "geodiff.cli.evaluate",
        "evaluate",
        "Measure a model: map fidelity, distribution distance, seams.",
    ),
    "augment": ("geodiff.cli.augment", "augment", "Generate a paired synthetic image + mask dataset."),
    "change": (
        "geodiff.cli.change",
        "change",
        "After image + change mask of a geodiff output for an edited map.",
    ),
    "models": ("geodiff.cli.models", "models", "List installed models (resolution, classes, metrics)."),
    "model": (
        "geodiff.cli.model",
        "model",
        "Model surgery: mix two decoders, finalize a model folder (metrics, card).",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # command not built yet in this version
                return None
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="geodiff")
def cli() -> None:
    """geodiff: synthetic, georeferenced aerial imagery from OpenStreetMap.

    \b
    Typical use:
      geodiff rasterize --bbox 7.418,43.732,7.422,43.735 --osm monaco.osm.pbf --out map.tif
      geodiff synth --bbox 7.418,43.732,7.422,43.735 --out area.tif
    Bounding boxes are W,S,E,N in lon/lat (WGS84) unless --bbox-crs says otherwise.
    Output data derived from OpenStreetMap: (c) OpenStreetMap contributors, ODbL.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwound like Ctrl-C, so every temporary output is removed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP (what QGIS's cancel, systemd, Docker and batch schedulers send) into an exception
    for the duration of a command; Python's default for them would exit without running any cleanup."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, _terminate) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _exit_with_stdin() -> None:
    """With ``GEODIFF_EXIT_WITH_STDIN=1``: when standard input reaches its end (the parent closed the pipe or
    died), unwind the main thread as SIGTERM would, so the command's temporary outputs are removed."""
    import _thread

    from geodiff.settings import get_settings

    if not get_settings().exit_with_stdin or sys.stdin is None:
        return
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):  # no real standard input (an embedding host): nothing to watch
        return

    def watch() -> None:
        # the raw descriptor, not sys.stdin's buffered reader: a daemon thread blocked holding that reader's lock
        # makes the interpreter abort at exit ("could not acquire lock for <stdin> at interpreter shutdown")
        try:
            while os.read(fd, 65536):
                pass  # a parent that writes is not one we listen to; only the end counts
        except OSError:
            pass
        _thread.interrupt_main(signal.SIGTERM)

    threading.Thread(target=watch, name="geodiff-stdin-watch", daemon=True).start()


def _os_error(exc: OSError | MemoryError) -> tuple[str, int]:
    """A one-line message and exit code for an OS error no library code turned into a geodiff error."""
    from geodiff.errors import CorruptFileError, InvalidParameterError, OutputError

    if isinstance(exc, MemoryError):
        return (
            "not enough memory for this request: use a smaller area or batch size, or a lower GEODIFF_MAX_PIXELS",
            InvalidParameterError.exit_code,
        )
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"{exc.strerror or exc}{where}: free some space or choose a writable folder",
            OutputError.exit_code,
        )
    if exc.errno == errno.ENAMETOOLONG:
        return f"a file name is too long{where}: choose a shorter one", InvalidParameterError.exit_code
    return f"{exc.strerror or exc}{where}", CorruptFileError.exit_code


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning geodiff errors into a one-line message and an exit code."""
    try:
        with _signals_unwind():
            _exit_with_stdin()
            cli.main(args=argv, prog_name="geodiff", standalone_mode=False)
    except GeodiffError as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt (and so Terminated) into Abort
        if isinstance(exc.__cause__, Terminated):
            click.echo(f"Stopped by {exc.__cause__}: no output was written under the final name.", err=True)
            return 128 + exc.__cause__.signum
        click.echo("Aborted: no output was written under the final name.", err=True)
        return 130
    except Terminated as exc:
        click.echo(f"Stopped by {exc}: no output was written under the final name.", err=True)
        return 128 + exc.signum
    except KeyboardInterrupt:
        click.echo("Interrupted: no output was written under the final name.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (OSError, MemoryError) as exc:  # the last net: one line, never a traceback
        message, code = _os_error(exc)
        click.echo(f"Error: {message}", err=True)
        return code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
