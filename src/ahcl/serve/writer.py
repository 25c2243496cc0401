"""Additions in a process of their own, at a lower CPU priority (what ``ahcl serve`` runs when
writes are allowed).

An addition is mostly CPU work (decoding the upload, a forward pass, writing the image) and
Python glue under an interpreter lock. Done in the server process, it holds that lock and the
cores while searches wait: on 2 cores a search's p50 went from 1.57 ms to 3.24 ms while another
client added continuously (``benchmarks/bench_archive.py``, ``--inline-writes``).
:class:`WriterProcess` runs the additions in a spawned child process with its own
:class:`~ahcl.serve.store.Archive` over the same index files and a ``nice`` value of
:data:`WRITER_NICE`, so the scheduler serves searches first and the two never share an
interpreter lock. The server process only checks write access, reads an addition's body and
forwards it whole; the child parses the form (:class:`ahcl.serve.middleware.WriterAdditions`).

This is the service's multi-process design of the index (:mod:`ahcl.index.store`) used once
more: the child is one more writer of the archive, serialised with every other by the index's
file lock, which hands out the ids; the server process catches up with the child's
acknowledged records (a read of the new log bytes) before it answers, so a search after an
addition's answer finds its items.

Messages on the pipe are JSON headers and raw bytes (no pickles): ``{"op": "add", "id", "n",
"max_pixels", "label"}`` followed by ``n`` upload bodies; ``{"op": "add_form", "id", "n": 1,
"content_type", "max_pixels"}`` followed by the raw body of a ``POST /api/items``, which the
child parses (:mod:`ahcl.serve.forms`); or ``{"op": "close"}``. Replies are ``{"id", "items"}``
or ``{"id", "error": {"kind", "message", "status"}}`` (``{"kind": "form", "errors"}`` for a
form the route's parameters refuse).

If the child dies (killed, out of memory), the additions in flight fail with
:class:`WriterError` (each one was stored entirely or not at all) and the next addition starts a
new child. When the server process dies, the child sees its pipe close, finishes the additions
it has begun and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ahcl.errors import AhclError
from ahcl.serve.forms import FormError, parse_add_form
from ahcl.serve.uploads import UploadError

#: How much lower the writer's CPU priority is than the server's (``nice`` increment): searches
#: first, additions with the cores that are left. ``benchmarks/bench_archive.py`` on 2 cores,
#: search p50 on 1M items alone -> while a client adds: 1.39 -> 2.26 ms (x1.63) with the writer
#: process, 1.57 -> 3.24 ms (x2.06) with ``--inline-writes`` in the same run (x1.57 against
#: x1.60 in a later run); 19 was not measurably different.
WRITER_NICE = 10
#: Additions the child works on at once (the server's request threads: each a request's
#: decode; they share forward passes and group commits, :mod:`ahcl.serve.batching`).
WRITER_THREADS = 40
#: How long closing waits for the child's additions in flight before it is terminated.
CLOSE_TIMEOUT_S = 60.0


class WriterError(AhclError):
    """The writer process could not start, stopped, or failed an addition."""


class WriterProcess:
    """A child process that adds uploads to the archive ``source`` (thread-safe).

    Args:
        opener: what opens the archive in the child, ``opener(source, run,
            run_options=run_options)`` (:meth:`ahcl.serve.store.Archive.open`, passed by
            reference to the spawned child); the archive it returns has
            ``add_files(datas, max_pixels, label)`` and ``close()``.
        source, run, run_options: the archive opened.
        torch_threads: CPU threads of the child's forward passes.
        nice: the child's ``nice`` increment.

    Raises:
        AhclError: the child could not open the archive (its message).
    """

    def __init__(self, opener: Callable[..., Any], source: str | Path,
                 run: str | Path | None = None, run_options: dict[str, Any] | None = None, *,
                 torch_threads: int = 1, nice: int = WRITER_NICE) -> None:
        self._args = (opener, str(source), None if run is None else str(run),
                      dict(run_options or {}), int(torch_threads), int(nice))
        self._lock = threading.Lock()  # starting, stopping, and each request's messages
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count()
        self._conn: Any = None
        self._proc: Any = None
        self._closed = False
        with self._lock:
            self._start()
        atexit.register(self.close)

    @property
    def pid(self) -> int | None:
        """The child's process id (None while none runs)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def _start(self) -> None:
        """Start the child and wait until it has opened the archive (caller holds the lock)."""
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child_main, args=(child, *self._args), name="ahcl-writer")
        proc.start()
        child.close()
        try:
            hello = json.loads(parent.recv_bytes())
        except (EOFError, OSError):
            proc.join()
            parent.close()
            raise WriterError(f"the writer process exited at start (exit code {proc.exitcode})"
                              ) from None
        if "error" in hello:
            proc.join()
            parent.close()
            raise AhclError(hello["error"]["message"])
        self._conn, self._proc = parent, proc
        threading.Thread(target=self._receive, args=(parent,), daemon=True,
                         name="ahcl-writer-replies").start()

    def _receive(self, conn: Any) -> None:
        """Hand each reply to its request; when the pipe closes, fail what is in flight."""
        try:
            while True:
                reply = json.loads(conn.recv_bytes())
                with self._lock:
                    future = self._pending.pop(reply["id"], None)
                if future is not None:
                    future.set_result(reply)
        except (EOFError, OSError):
            pass
        proc = self._proc
        if proc is not None and self._conn is conn:
            proc.join(5)  # reaped, so that its exit code can be told
        with self._lock:
            if self._conn is not conn:
                return
            self._conn, pending, self._pending = None, self._pending, {}
            code = self._proc.exitcode if self._proc is not None else None
        for future in pending.values():
            future.set_exception(WriterError(
                f"the writer process stopped (exit code {code}) during this addition: it was "
                "stored entirely or not at all; look the images up before sending them again"))

    def add(self, datas: list[bytes], max_pixels: int, label: int | None = None
            ) -> list[dict[str, Any]]:
        """Check, decode, encode and store uploaded files in the child, durable when it returns:
        the new items' records (:meth:`ahcl.serve.store.Archive.add_files`).

        Raises:
            UploadError: a file is refused (as :func:`ahcl.serve.uploads.decode_uploads`).
            WriterError: the child failed the addition or stopped during it.
        """
        return self._call({"op": "add", "n": len(datas), "max_pixels": int(max_pixels),
                           "label": label}, datas)

    def add_form(self, content_type: str, body: bytes, max_pixels: int
                 ) -> list[dict[str, Any]]:
        """:meth:`add` from the raw body of a ``POST /api/items``, parsed in the child
        (:func:`ahcl.serve.forms.parse_add_form`).

        Raises:
            UploadError: the form or a file is refused (:class:`~ahcl.serve.forms.FormError`
                for what the route's parameters refuse).
            WriterError: the child failed the addition or stopped during it.
        """
        return self._call({"op": "add_form", "n": 1, "content_type": content_type,
                           "max_pixels": int(max_pixels)}, [body])

    def _call(self, head: dict[str, Any], blobs: list[bytes]) -> list[dict[str, Any]]:
        """Send one request (``head`` and its ``n`` blobs) and wait for its reply."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise WriterError("the writer process is closed")
            if self._conn is None:  # the last one died: a new one
                self._start()
            request = next(self._ids)
            self._pending[request] = future
            try:
                self._conn.send_bytes(json.dumps({**head, "id": request}).encode())
                for blob in blobs:
                    self._conn.send_bytes(blob)
            except OSError:
                self._pending.pop(request, None)
                raise WriterError("the writer process is gone: nothing was sent") from None
        reply = future.result()
        error = reply.get("error")
        if error is None:
            return reply["items"]
        if error["kind"] == "form":
            raise FormError(error["errors"])
        if error["kind"] == "upload":
            raise UploadError(error["message"], status=int(error["status"]))
        raise WriterError(error["message"])

    def close(self) -> None:
        """Let the child finish its additions in flight and exit (terminated after
        :data:`CLOSE_TIMEOUT_S`); idempotent."""
        with self._lock:
            self._closed = True
            conn, proc, self._conn = self._conn, self._proc, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send_bytes(b'{"op": "close"}')
        if proc is not None:
            proc.join(CLOSE_TIMEOUT_S)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        if conn is not None:
            conn.close()
        atexit.unregister(self.close)


def _child_main(conn: Any, opener: Callable[..., Any], source: str, run: str | None,
                run_options: dict[str, Any], torch_threads: int, nice: int) -> None:
    """The writer process: open the archive, then add what the pipe brings until it closes."""
    # Ctrl-C reaches the whole process group: the server stops this process itself, once the
    # additions in flight are done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(nice)
    import torch

    torch.set_num_threads(torch_threads)
    try:
        archive = opener(source, run, run_options=run_options)
    except AhclError as exc:
        conn.send_bytes(json.dumps({"error": {"message": str(exc)}}).encode())
        return
    send_lock = threading.Lock()

    def reply(message: dict[str, Any]) -> None:
        with send_lock, contextlib.suppress(OSError):  # the server is gone: nobody to tell
            conn.send_bytes(json.dumps(message).encode())

    def work(head: dict[str, Any], blobs: list[bytes]) -> None:
        request = int(head["id"])
        try:
            if head["op"] == "add_form":
                datas, label = parse_add_form(head["content_type"], blobs[0], archive.classes)
            else:
                datas, label = blobs, head["label"]
            items = archive.add_files(datas, int(head["max_pixels"]), label)  # in-process
        except FormError as exc:
            reply({"id": request, "error": {"kind": "form", "errors": exc.errors}})
        except UploadError as exc:
            reply({"id": request, "error": {"kind": "upload", "message": str(exc),
                                            "status": exc.status}})
        except Exception as exc:  # noqa: BLE001 - reported to the request that asked
            reply({"id": request, "error": {"kind": type(exc).__name__,
                                            "message": str(exc) or type(exc).__name__}})
        else:
            reply({"id": request, "items": items})

    conn.send_bytes(b'{"ready": true}')
    with ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="ahcl-writer") as pool:
        while True:
            try:
                head = json.loads(conn.recv_bytes())
                if head["op"] not in ("add", "add_form"):
                    break
                blobs = [conn.recv_bytes() for _ in range(int(head["n"]))]
            except (EOFError, OSError):
                break  # the server is gone
            pool.submit(work, head, blobs)
    archive.close()
