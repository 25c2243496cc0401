"""A bounded load generator for the service: concurrent clients mixing searches and additions.

Used by ``tests/serve/test_load.py`` and ``benchmarks/bench_serve.py`` (import it as
``benchmarks.loadgen`` with the repository root on ``sys.path``). Each client is a thread with one
keep-alive HTTP connection (standard library only) that runs until the deadline; every request
is timed and every failure recorded, so a caller can check "no errors, no lost additions".
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


@dataclass
class LoadReport:
    """What a load run did.

    Attributes:
        search_s: seconds per successful search.
        add_s: seconds per successful addition.
        added_ids: ids the server returned for additions.
        errors: one line per failed request.
        seconds: wall time of the run.
    """

    search_s: list[float] = field(default_factory=list)
    add_s: list[float] = field(default_factory=list)
    added_ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int]:
        """Counts, p50/p95 latencies (ms) and throughput."""
        out: dict[str, float | int] = {"searches": len(self.search_s), "additions": len(self.add_s),
                                       "errors": len(self.errors), "seconds": round(self.seconds, 2)}
        for name, values in (("search", self.search_s), ("add", self.add_s)):
            if values:
                p50, p95 = np.percentile(np.asarray(values) * 1e3, [50, 95])
                out[f"{name}_p50_ms"], out[f"{name}_p95_ms"] = round(p50, 2), round(p95, 2)
        out["requests_per_s"] = round((len(self.search_s) + len(self.add_s))
                                      / max(self.seconds, 1e-9), 1)
        return out


def multipart(fields: dict[str, str], files: Sequence[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """Encode a ``multipart/form-data`` body: ``(body, content type)``.

    Args:
        fields: text fields.
        files: ``(field name, file name, bytes)`` per file.
    """
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    for name, filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def run_load(url: str, *, clients: int, seconds: float, query_images: Sequence[bytes],
             new_image: Callable[[int], bytes], token: str | None = None,
             add_fraction: float = 0.25, k: int = 10, seed: int = 0) -> LoadReport:
    """Run ``clients`` threads against ``url`` for ``seconds``.

    Each request is an upload search with one of ``query_images`` (probability
    ``1 - add_fraction``) or an addition of ``new_image(n)`` (``n`` unique across clients).

    Returns:
        the :class:`LoadReport`.
    """
    parts = urllib.parse.urlsplit(url)
    report = LoadReport()
    lock = threading.Lock()
    counter = iter(range(1 << 62))
    deadline = time.monotonic() + seconds
    auth = {"Authorization": f"Bearer {token}"} if token else {}

    def client(rank: int) -> None:
        rng = np.random.default_rng([seed, rank])
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            while time.monotonic() < deadline:
                adding = rng.random() < add_fraction
                if adding:
                    with lock:
                        n = next(counter)
                    body, ctype = multipart({}, [("image", f"new{n}.png", new_image(n))])
                    path, headers = "/api/items", {"Content-Type": ctype, **auth}
                else:
                    img = query_images[int(rng.integers(len(query_images)))]
                    body, ctype = multipart({"k": str(k)}, [("image", "q.png", img)])
                    path, headers = "/api/search", {"Content-Type": ctype}
                start = time.perf_counter()
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                    with lock:
                        report.errors.append(f"{path}: {type(exc).__name__}: {exc}")
                    continue
                took = time.perf_counter() - start
                with lock:
                    if response.status not in (200, 201):
                        report.errors.append(f"{path}: {response.status} {payload[:200]!r}")
                    elif adding:
                        report.add_s.append(took)
                        report.added_ids.extend(it["id"] for it in json.loads(payload)["items"])
                    else:
                        report.search_s.append(took)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(r,), daemon=True) for r in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.monotonic() - t0
    return report
