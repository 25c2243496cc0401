"""Service latency on a 1M-item archive, and a 20 s load run of concurrent searches and additions.

    python benchmarks/bench_serve.py [--n 1000000] [--seconds 20] [--clients 16]

1. Trains a tiny run (tiny_cnn on synthetic scenes, seconds) to encode queries, and indexes
   ``--n`` random 64-bit codes as the archive.
2. Search latency, p50/p95 over repeated single queries: the archive's search alone, the same
   as a brute-force numpy reference (all distances + argpartition, measured here: the ratio is
   the figure to compare across machines), then end to end over HTTP on 127.0.0.1 by id (JSON)
   and by uploaded image (decode + encode + search).
3. Load: ``--clients`` keep-alive clients for ``--seconds`` against the run's own archive,
   30 % additions (with a token) and 70 % upload searches; prints p50/p95 and checks that every
   addition is in the index afterwards (in memory and after reopening the file).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ahcl.cli import main
from ahcl.index import HammingIndex
from ahcl.index.hamming import hamming_distances
from ahcl.serve import Archive, ServeSettings, create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness lives in the repo
from benchmarks.loadgen import multipart, run_load  # noqa: E402
from tests.serve._server import ServerThread  # noqa: E402

TOKEN = "bench-token"


def pct(values: list[float]) -> str:
    p50, p95 = np.percentile(np.asarray(values) * 1e3, [50, 95])
    return f"p50 {p50:7.2f} ms   p95 {p95:7.2f} ms"


def train_tiny_run(root: Path) -> Path:
    quiet = open(os.devnull, "w")
    old, sys.stdout = sys.stdout, quiet
    try:
        main(["datasets", "synthetic", "--out", str(root / "data"), "--per-class", "15",
              "--size", "48", "--seed", "0"])
        main(["train", "--data", str(root / "data"), "--out", str(root / "run"), "--backbone",
              "tiny_cnn", "--no-pretrained", "--bits", "64", "--seed", "0",
              "--set", "outer_iters=3"])
    finally:
        sys.stdout = old
    return root / "run"


def timed_requests(url: str, bodies: list[tuple[bytes, str]]) -> list[float]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    out = []
    for body, ctype in bodies:
        start = time.perf_counter()
        conn.request("POST", "/api/search", body=body, headers={"Content-Type": ctype})
        response = conn.getresponse()
        payload = response.read()
        out.append(time.perf_counter() - start)
        assert response.status == 200, payload[:200]
    conn.close()
    return out


def latency(run: Path, root: Path, n: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    index = HammingIndex(64)
    index.add(codes, labels=rng.integers(0, 8, n))
    index.save(root / "big.index")
    archive = Archive.open(root / "big.index", run=run)
    print(f"archive: {len(archive):,} items of 64 bits, index file "
          f"{(root / 'big.index').stat().st_size / 2**20:.0f} MiB")
    picks = rng.integers(0, n, repeats)
    archive.search(codes[:1], 10)  # compile / warm
    t_ours = []
    for i in picks:
        start = time.perf_counter()
        archive.search(codes[i:i + 1], 10)
        t_ours.append(time.perf_counter() - start)
    t_ref = []
    for i in picks[:max(10, repeats // 10)]:
        start = time.perf_counter()
        d = hamming_distances(codes[i:i + 1], codes)[0]
        top = np.argpartition(d, 10)[:10]
        top[np.lexsort((top, d[top]))]
        t_ref.append(time.perf_counter() - start)
    print(f"search, index only        {pct(t_ours)}")
    print(f"search, numpy brute force {pct(t_ref)}   "
          f"(ratio of medians: {np.median(t_ref) / np.median(t_ours):.1f}x)")
    query = (root / "run").joinpath("..", "data").resolve()
    image = next(query.rglob("*.png")).read_bytes()
    with ServerThread(create_app(archive, ServeSettings())) as server:
        by_id = [(json.dumps({"id": int(i), "k": 10}).encode(), "application/json")
                 for i in picks]
        timed_requests(server.url, by_id[:5])
        print(f"HTTP search by id         {pct(timed_requests(server.url, by_id))}")
        uploads = [multipart({"k": "10"}, [("image", "q.png", image)])
                   for _ in range(max(20, repeats // 2))]
        print(f"HTTP search by upload     {pct(timed_requests(server.url, uploads))}")


def load(run: Path, root: Path, clients: int, seconds: float) -> int:
    archive_dir = Path(shutil.copytree(run, root / "load_run"))
    archive = Archive.open(archive_dir)
    start_n = len(archive)
    queries = [Path(p).read_bytes() for p in archive.run.db_paths[::10]]

    def new_image(n: int) -> bytes:
        rng = np.random.default_rng([1, n])
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
        return buf.getvalue()

    with ServerThread(create_app(archive, ServeSettings(token=TOKEN))) as server:
        report = run_load(server.url, clients=clients, seconds=seconds, query_images=queries,
                          new_image=new_image, token=TOKEN, add_fraction=0.3, seed=0)
    s = report.summary()
    print(f"load: {clients} clients x {seconds:.0f} s: {s['searches']} searches, "
          f"{s['additions']} additions, {s['errors']} errors, {s['requests_per_s']} req/s")
    if report.search_s:
        print(f"  searches  {pct(report.search_s)}")
    if report.add_s:
        print(f"  additions {pct(report.add_s)}")
    reopened = len(Archive.open(archive_dir))
    expect = start_n + len(report.added_ids)
    ok = not report.errors and len(archive) == expect == reopened \
        and len(set(report.added_ids)) == len(report.add_s)
    print(f"  count check: {start_n} + {len(report.added_ids)} added = {expect}; in memory "
          f"{len(archive)}, reopened {reopened}: {'OK' if ok else 'MISMATCH'}")
    for line in report.errors[:5]:
        print("  error:", line)
    return 0 if ok else 1


def main_bench() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    os.environ.setdefault("AHCL_PROGRESS", "0")
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        root = Path(tmp)
        os.environ["AHCL_CACHE"] = str(root / "cache")
        run = train_tiny_run(root)
        latency(run, root, args.n, args.repeats)
        return load(run, root, args.clients, args.seconds)


if __name__ == "__main__":
    sys.exit(main_bench())
