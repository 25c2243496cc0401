"""kill -9 of a real server process during a stream of additions: after it, every acknowledged
item is in the index file, the file verifies, and nothing half-added is visible (#14)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from ahcl.cli import main
from ahcl.index import HammingIndex
from tests.serve._server import (child_pids, free_port, serve_process, wait_exited,
                                 wait_healthy)
from tests.serve.conftest import noise_png

TOKEN = "t0ken"


def _serve(index: Path, run: Path, port: int) -> subprocess.Popen:
    return serve_process(str(index), "--run", str(run), "--port", str(port), "--allow-writes",
                         "--token", TOKEN)


def test_kill9_during_additions_loses_no_acknowledged_item(tiny_run, tmp_path):
    index = tmp_path / "a.index"
    assert main(["index", "build", str(tiny_run), "--out", str(index)]) == 0
    n0 = len(HammingIndex.load(index))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(index, tiny_run, port)
    acked: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        seed = 0
        with httpx.Client(base_url=url, timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            while not stop.is_set():
                seed += 1
                try:
                    r = client.post("/api/items", files={"image": (f"{seed}.png",
                                                                   noise_png(seed))})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 201:
                    acked.extend(it["id"] for it in r.json()["items"])

    try:
        wait_healthy(url, proc)
        worker = threading.Thread(target=stream)
        worker.start()
        deadline = time.monotonic() + 60
        while len(acked) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        writers = child_pids(proc.pid)
        assert writers  # the additions run in the server's writer process
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: a request is most likely in flight
        proc.wait(timeout=30)
        for pid in writers:  # the writer sees its pipe close, ends what it began, and exits
            wait_exited(pid)
        stop.set()
        worker.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 8
    after = HammingIndex.load(index, verify=True)  # whole and consistent
    ids = set(after.ids.tolist())
    assert set(acked) <= ids  # every acknowledged item is there
    extra = ids - set(acked) - set(range(n0))
    assert len(extra) <= 1  # at most the one in flight, and then whole (it verified)
    # A restarted server opens the file and hands out a fresh id.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(index, tiny_run, port)
    try:
        wait_healthy(url, proc)
        r = httpx.post(f"{url}/api/items", files={"image": ("x.png", noise_png(999))},
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert r.status_code == 201
        assert r.json()["items"][0]["id"] == max(ids) + 1
    finally:
        proc.kill()
        proc.wait(timeout=30)
