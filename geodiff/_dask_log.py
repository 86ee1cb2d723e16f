"""Dask's own logging kept off the user's terminal: in a log file while a geodiff cluster runs.

Imported only when Dask is used (``geodiff.distributed``). The client process's Dask, Tornado and asyncio
loggers (and Python warnings) go to the file for the cluster's lifetime; the worker processes of a local
cluster send their stdout and stderr there (Dask's "Compute Failed" reports, a worker's traceback on Ctrl-C),
through a worker plugin so that a worker started later (one replacing a lost worker) does the same. Workers of
an existing cluster (``--scheduler``) are someone else's processes and are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

# the loggers Dask's own configuration gives a terminal handler, and those its event loop writes through
LOGGERS = ("distributed", "distributed.client", "distributed.gc", "bokeh", "tornado", "tornado.application",
           "asyncio", "py.warnings")  # fmt: skip
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
    """Dask's loggers of this process (and warnings) write to ``path`` instead of the terminal, then as before."""
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter(FORMAT))
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
        handler.close()
