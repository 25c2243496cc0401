"""``ahcl serve``: the query-by-image web service over a run or an index."""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket

from ahcl.cli._common import add_device_args, run_options
from ahcl.errors import AhclError, InvalidValueError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve query-by-image search over HTTP (API and web page)",
                       description="Serve a run folder (or an index file with --run) over HTTP: "
                                   "the web page at /, the API under /api, its docs at /docs.")
    p.add_argument("source", metavar="RUN_OR_INDEX")
    p.add_argument("--run", metavar="RUN", help="the run that encodes queries (for an index)")
    add_device_args(p, workers=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token", help="bearer token for writes (default $AHCL_TOKEN)")
    p.add_argument("--allow-writes", action="store_true",
                   help="allow adding/removing items without a token (loopback hosts only)")
    p.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="largest request body in MiB (default 20)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="largest image, width x height (default 40000000)")
    p.add_argument("--torch-threads", type=int, default=SERVE_TORCH_THREADS, metavar="N",
                   help="CPU threads of one forward pass (default 1: concurrent requests, "
                        "batched into shared passes, and searches use the other cores)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="server processes sharing the port and the archive (default 1): each "
                        "has its own interpreter lock, and an item added through one is found "
                        "through every other as soon as its addition is answered; worth it "
                        "only with cores to spare (on 2 cores it was no faster)")
    p.add_argument("--inline-writes", action="store_true",
                   help="add uploads on the server's own threads instead of in a writer process "
                        "at a lower CPU priority (the default when writes are allowed, so that "
                        "searches keep their latency while clients add)")
    p.set_defaults(func=run)


#: A server's forward passes run on one CPU thread each: under concurrent requests a pass
#: spread over all cores spends its time waiting at barriers for cores that other requests hold
#: (measured: tiny_cnn, one image, 2.3 ms on one thread against 11.5 ms on two while the machine
#: was busy), and a search finds a core free.
SERVE_TORCH_THREADS = 1


def _check_port_free(host: str, port: int) -> None:
    """One line instead of uvicorn's exit 3 when the address is taken (checked before the
    archive is opened, so nothing is loaded for nothing)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise AhclError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another "
                            "--port or stop the other server", host=host, port=port) from None


def run(args: argparse.Namespace) -> int:
    # The service stack (FastAPI, uvicorn) is imported only by the verb that needs it.
    import uvicorn

    from ahcl.serve import Archive, ServeSettings
    from ahcl.serve.settings import is_loopback
    from ahcl.serve.workers import APP_FACTORY, CONFIG_ENV, WorkerConfig, open_app

    token = args.token or os.environ.get("AHCL_TOKEN") or None
    if args.allow_writes and not token and not is_loopback(args.host):
        raise AhclError(f"--allow-writes without a token only works on a loopback host, not "
                        f"{args.host}: set --token (or AHCL_TOKEN), or bind 127.0.0.1")
    if not 0 <= args.port <= 65535:
        raise AhclError(f"--port must be in [0, 65535], got {args.port}")
    if not 1 <= args.torch_threads <= 1024:
        raise InvalidValueError("--torch-threads", args.torch_threads, "an integer in [1, 1024]")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise InvalidValueError("--workers", args.workers, f"an integer in [1, {MAX_WORKERS}]")
    settings = ServeSettings(host=args.host, token=token, allow_writes=args.allow_writes,
                             max_upload_bytes=int(args.max_upload_mb * 2**20),
                             max_pixels=args.max_pixels)
    _check_port_free(args.host, args.port)
    config = WorkerConfig(source=args.source, run=args.run, run_options=run_options(args),
                          settings=dataclasses.asdict(settings), torch_threads=args.torch_threads,
                          writer=bool(token or args.allow_writes) and not args.inline_writes)
    log_level = "info" if args.verbose else "warning"
    if args.workers == 1:
        app = open_app(config)
        try:
            uvicorn.run(app, host=args.host, port=args.port, log_level=log_level)
        finally:
            app.state.archive.close()  # the writer process, after its additions in flight
        return 0
    # Opened once here so that a bad source is one clear line: uvicorn would restart a worker
    # that fails to open it, again and again.
    Archive.open(args.source, run=args.run, run_options=config.run_options)
    os.environ[CONFIG_ENV] = config.to_env()  # the workers' environment (spawned from this one)
    uvicorn.run(APP_FACTORY, factory=True, workers=args.workers, host=args.host, port=args.port,
                log_level=log_level, timeout_worker_healthcheck=WORKER_HEALTHCHECK_S)
    return 0


#: Most ``--workers``; and how long a worker may not answer its supervisor's ping before it is
#: restarted (uvicorn's default, 5 s, is shorter than a long compaction may hold the GIL).
MAX_WORKERS = 64
WORKER_HEALTHCHECK_S = 60
