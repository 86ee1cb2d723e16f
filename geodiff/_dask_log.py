"""Dask's own logging kept off the user's terminal: in a log file while a geodiff cluster runs.

Imported only when Dask is used (``geodiff.distributed``). The client process's Dask, Tornado and asyncio
loggers (and the warnings Dask's modules raise) go to the file for the cluster's lifetime; the worker processes of a local
cluster send their stdout and stderr there (Dask's "Compute Failed" reports, a worker's traceback on Ctrl-C),
through a worker plugin so that a worker started later (one replacing a lost worker) does the same. Workers of
an existing cluster (``--scheduler``) are someone else's processes and are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

# the loggers Dask's own configuration gives a terminal handler, and those its event loop writes through
LOGGERS = ("distributed", "distributed.client", "distributed.gc", "bokeh", "tornado", "tornado.application",
           "asyncio", "py.warnings")  # fmt: skip
DASK_PACKAGES = ("distributed", "dask", "tornado", "bokeh")
FORMAT = "%(asctime)s - %(process)d - %(name)s - %(levelname)s - %(message)s"


class WorkerOutputToFile(WorkerPlugin):
    """On each worker process: stdout and stderr (so its log handlers and tracebacks) appended to ``path``."""

    name = "geodiff-worker-log"

    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, worker: object) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)


@contextlib.contextmanager
def client_logs_to(path: Path) -> Iterator[None]:
    """Dask's loggers of this process (and Dask's warnings) write to ``path`` instead of the terminal, then as
    before; other warnings are shown as usual."""
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter(FORMAT))
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    shown = warnings.showwarning

    def show(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if any(
            f"{os.sep}{name}{os.sep}" in filename for name in DASK_PACKAGES
        ):  # Dask's own (a port taken, ...)
            logging.getLogger("py.warnings").warning(
                warnings.formatwarning(message, category, filename, lineno, line)
            )
        else:  # geodiff's and the user's warnings stay on the terminal
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
        handler.close()
