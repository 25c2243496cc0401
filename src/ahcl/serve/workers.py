"""Several server processes over one archive (``ahcl serve --workers N``).

Each worker is a process of its own (its own interpreter lock) with its own
:class:`~ahcl.serve.store.Archive` over the same index files: writers are serialised across the
workers by the index's file lock, which also hands out ids, and every read first catches up with
what the other workers acknowledged (:meth:`Archive._current`), so an item added through one
worker is found through any other as soon as its addition is answered.

Uvicorn starts the workers (spawned, not forked: each builds its own thread pools) and shares
one listening socket between them; it needs the application as an import string, so the
parent hands each worker its options in the environment variable :data:`CONFIG_ENV` and the
worker builds the app with :func:`app_from_env`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from fastapi import FastAPI

from ahcl.serve.app import create_app
from ahcl.serve.settings import ServeSettings
from ahcl.serve.store import Archive

#: The environment variable that carries a worker's :class:`WorkerConfig` (JSON).
CONFIG_ENV = "AHCL_SERVE_WORKER"
#: The import string of the app factory uvicorn calls in each worker.
APP_FACTORY = "ahcl.serve.workers:app_from_env"


@dataclass
class WorkerConfig:
    """What a worker opens and how it serves it.

    Attributes:
        source: the run folder or index file served.
        run: the run that encodes queries (for an index file).
        run_options: keyword arguments of :func:`ahcl.run.load_run`.
        settings: the :class:`ServeSettings` fields.
        torch_threads: CPU threads of one forward pass in this worker.
        writer: additions in a writer process of this worker's, at a lower CPU priority
            (:mod:`ahcl.serve.writer`), instead of on its request threads.
    """

    source: str
    run: str | None = None
    run_options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    torch_threads: int = 1
    writer: bool = False

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> "WorkerConfig":
        return cls(**json.loads(text))


#: The interpreter's switch interval in a server process (Python's default is 5 ms): how long a
#: thread that wants the interpreter lock waits before it asks the thread holding it to let go.
#: A search hands off between the event loop and a request thread; with other requests' Python
#: work in the process each hand-off could wait that long. A probe on 2 cores (search by id on
#: 1M items, 6 rounds each, a noisy shared machine) gave p50 1.7-2.6 ms alone with 5 ms against
#: 1.35-2.4 ms with 0.5 ms; while a client added, 2.4-3.7 against 1.9-4.0 ms.
SWITCH_INTERVAL_S = 0.0005


def open_app(config: WorkerConfig) -> FastAPI:
    """The app of one server process: its thread count and switch interval set, its archive
    opened."""
    torch.set_num_threads(config.torch_threads)  # this process is the server's: its count
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    archive = Archive.open(config.source, run=config.run, run_options=config.run_options,
                           writer=config.writer)
    return create_app(archive, ServeSettings(**config.settings))


def app_from_env() -> FastAPI:
    """The app factory of a worker process (uvicorn calls it with no arguments).

    Raises:
        KeyError: not started by ``ahcl serve --workers`` (no :data:`CONFIG_ENV`).
    """
    return open_app(WorkerConfig.from_env(os.environ[CONFIG_ENV]))
