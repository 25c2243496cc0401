"""An archive that grows (issue #14): single additions over HTTP against archive size, a stream of
additions into a large index, and searches while another client adds.

    python benchmarks/bench_archive.py [--small 10000] [--large 1000000] [--repeats 100]
                                       [--stream-n 10000000] [--stream 10000] [--clients 4,16]
                                       [--workers 1]

1. Trains a tiny run (tiny_cnn on synthetic scenes, seconds) that encodes uploads.
2. Two index files of random 64-bit codes (the run's 16 + 48 split) with a path per item (``--small`` and ``--large``
   items); each served by `ahcl serve` on 127.0.0.1 (its writer process). A single-image addition
   (``POST /api/items``: decode, encode, one fsynced log record) is timed ``--repeats`` times on
   each, in blocks alternated between the two; the figure is the ratio of the medians (large /
   small) and the large archive's p50.
3. Search p50 over HTTP (by id) on the large archive from a client process, alone and while
   another client process adds continuously: to the searched server, through a second server
   of the same archive (the searched one catches up with each addition), and to a server of the
   small archive (the machine's share: the same cores, nothing shared); alternated in rounds,
   served by ``ahcl serve --workers W`` (``--workers`` server processes, started as a user
   would): with its writer process (the default), then with ``--inline-writes`` as the
   reference, then (on 2 or more CPUs) with its writer process again, the searched server and
   the searching client pinned to the first half of the CPUs and everything the additions
   bring (the adding client, the writer process, the other servers) to the second half: a
   machine with cores to spare for the writes, where the slowdown left is the searched
   server's own (it still takes each addition's request and catches up with its record).
4. Deletions over HTTP (``DELETE /api/items/ID``) on the large archive, each of an item just
   added through the writer process (so another process's change for the server process): the
   first one (which builds the table of uploads by content) and the p50 of the next ``--repeats``.
5. ``--stream`` single additions through the API from ``--clients`` client processes into an
   index of ``--stream-n`` codes, served the same way (one stream per client count); wall time,
   then the index reopened from disk to check every acknowledged id is there.

Prints the CPU; writes ``benchmarks/results/archive.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from ahcl._io import atomic_write_json
from ahcl.cli.serve import SERVE_TORCH_THREADS
from ahcl.index import HammingIndex
from ahcl.run import load_run

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the harness lives in the repo
from benchmarks.bench_encode import cpu_info  # noqa: E402
from benchmarks.bench_serve import train_tiny_run  # noqa: E402
from benchmarks.loadgen import multipart  # noqa: E402
from tests.serve._server import (child_pids, free_port, serve_process,  # noqa: E402
                                 wait_healthy)

TOKEN = "bench-token"


def ms(values: list[float]) -> dict[str, float]:
    p50, p95 = np.percentile(np.asarray(values) * 1e3, [50, 95])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "n": len(values)}


def png(seed: int) -> bytes:
    rng = np.random.default_rng([7, seed])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


def build_index(path: Path, run: Path, n: int, meta: bool = True) -> None:
    """``n`` random codes of the run's length and split, labels, and a path each (``meta``)."""
    rng = np.random.default_rng(n)
    index = load_run(run).new_index()
    chunk = 1_000_000
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        index.add(rng.integers(0, 256, (m, 8), dtype=np.uint8), labels=rng.integers(0, 8, m),
                  meta=[{"path": f"/archive/scene_{lo + i:08d}.png"} for i in range(m)]
                  if meta else None)
    index.save(path)


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//")[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def post(self, path: str, body: bytes, ctype: str, auth: bool = False) -> tuple[float, dict]:
        return self.request("POST", path, body, {"Content-Type": ctype}, auth)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, auth: bool = False
                ) -> tuple[float, dict]:
        """One request: (seconds, its JSON answer); an error status raises."""
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = f"Bearer {TOKEN}"
        start = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        payload = response.read()
        took = time.perf_counter() - start
        if response.status not in (200, 201):
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {payload[:200]!r}")
        return took, json.loads(payload)

    def add(self, seed: int, data: bytes | None = None) -> tuple[float, list[int]]:
        """One single-image addition (``data``, else the PNG of ``seed``): (seconds, ids)."""
        body, ctype = multipart({}, [("image", f"n{seed}.png",
                                      png(seed) if data is None else data)])
        took, out = self.post("/api/items", body, ctype, auth=True)
        return took, [item["id"] for item in out["items"]]

    def delete(self, item_id: int) -> float:
        """One deletion: its seconds."""
        return self.request("DELETE", f"/api/items/{item_id}", auth=True)[0]

    def search(self, item_id: int) -> float:
        return self.post("/api/search", json.dumps({"id": item_id, "k": 10}).encode(),
                         "application/json")[0]


def write_pngs(path: Path, seeds: range) -> None:
    """The PNGs of ``seeds``, made before the clock starts so that the load generator, which
    shares the machine's cores with the server, spends no CPU on them while timed: one
    ``.npz`` of their bytes and offsets."""
    datas = [png(seed) for seed in seeds]
    np.savez(path, blob=np.frombuffer(b"".join(datas), np.uint8),
             ends=np.cumsum([len(d) for d in datas]))


def read_pngs(path: str) -> list[bytes]:
    with np.load(path) as f:
        blob, ends = f["blob"].tobytes(), f["ends"]
    return [blob[a:b] for a, b in zip(np.concatenate([[0], ends[:-1]]), ends)]


def client_loop(url: str, first: int, count: int, step: int, pngs: str
                ) -> tuple[list[int], list[str]]:
    """Additions ``first, first + step, ... < count`` from one connection, of the images
    :func:`write_pngs` saved in ``pngs``: (ids, errors)."""
    client, ids = Client(url), []
    try:
        for j, data in zip(range(first, count, step), read_pngs(pngs)):
            ids += client.add(10**7 + j, data)[1]
    except Exception as exc:  # recorded, the run reports it
        return ids, [str(exc)[:200]]
    return ids, []


def pin(pid: int, cpus: set[int] | None) -> None:
    """Every thread of process ``pid`` and of its descendants onto ``cpus`` (threads they start
    later inherit it); nothing when ``cpus`` is None."""
    if cpus is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)
    for child in child_pids(pid):
        pin(child, cpus)


@contextlib.contextmanager
def serve_cli(index_path: Path, run: Path, workers: int, *extra: str,
              cpus: set[int] | None = None, writer_cpus: set[int] | None = None
              ) -> Iterator[str]:
    """``ahcl serve INDEX --run RUN --workers W [EXTRA...]`` as its own process: its URL. Once
    it answers, its processes are pinned to ``cpus`` and its children (the writer process) to
    ``writer_cpus``, where given."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve_process(str(index_path), "--run", str(run), "--token", TOKEN, "--port",
                         str(port), "--workers", str(workers),
                         "--torch-threads", str(SERVE_TORCH_THREADS), *extra)
    try:
        wait_healthy(url, proc)
        pin(proc.pid, cpus)
        if writer_cpus is not None:
            for child in child_pids(proc.pid):
                pin(child, writer_cpus)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)


#: Blocks of single additions alternated between the archives (drift falls on both alike).
ADD_BLOCKS = 5


def single_additions(run: Path, root: Path, sizes: list[int], repeats: int) -> dict:
    """Single additions over HTTP, one archive per size, each served by its own ``ahcl serve``
    (both up at once), in :data:`ADD_BLOCKS` alternated blocks: ``repeats`` timed per size."""
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for n in sizes:
        build_index(root / f"a{n}.index", run, n)
    with contextlib.ExitStack() as stack:
        urls = {n: stack.enter_context(serve_cli(root / f"a{n}.index", run, 1)) for n in sizes}
        # connected once all are up: uvicorn closes a keep-alive connection idle for 5 s
        clients = {n: Client(url) for n, url in urls.items()}
        for n in sizes:
            for i in range(5):
                clients[n].add(10**6 + i)  # warm: first log record, compiled kernels
        block = -(-repeats // ADD_BLOCKS)
        for start in range(0, repeats, block):
            for n in sizes:
                times[n] += [clients[n].add(n + i)[0]
                             for i in range(start, min(start + block, repeats))]
    out = {str(n): ms(times[n]) for n in sizes}
    for n in sizes:
        print(f"single addition over HTTP, {n:>9,} items: p50 {out[str(n)]['p50_ms']:7.2f} ms  "
              f"p95 {out[str(n)]['p95_ms']:7.2f} ms", file=sys.stderr)
    return out


def search_loop(url: str, picks: list[int], cpus: set[int] | None = None) -> list[float]:
    """Searches by id, one after another from one connection (this process pinned to ``cpus``
    where given): their times."""
    pin(os.getpid(), cpus)
    client = Client(url)
    for i in picks[:5]:
        client.search(int(i))  # warm
    return [client.search(int(i)) for i in picks]


def add_until(url: str, stop_file: str, pause_file: str, pngs: str,
              cpus: set[int] | None = None) -> int:
    """Additions one after another (of the images :func:`write_pngs` saved in ``pngs``, in a
    cycle) until ``stop_file`` exists, idle while ``pause_file`` exists (this process pinned to
    ``cpus`` where given): how many."""
    pin(os.getpid(), cpus)
    client, datas, n = Client(url), read_pngs(pngs), 0
    while not os.path.exists(stop_file):
        if os.path.exists(pause_file):
            time.sleep(0.01)
            continue
        client.add(0, datas[n % len(datas)])
        n += 1
    return n


#: Rounds of searches alone and while adding (each way), alternated on one server: the machine's
#: own drift (other tenants of a shared host) falls on every side alike. Eight, not three: with
#: three, the sides' p50s moved by 0.2-0.5 ms between runs of the same code on 2 cores.
SEARCH_ROUNDS = 8
#: Where the adding client sends its additions, beside the searched server ("here"): another
#: ``ahcl serve`` of the same archive (the searched server catches up with each addition), and
#: another of another archive (the machine's share: same cores, nothing shared).
ADD_SIDES = ("here", "same_archive", "elsewhere")


def search_while_adding(run: Path, root: Path, n: int, repeats: int, workers: int,
                        *extra: str, elsewhere: Path,
                        cores: tuple[set[int], set[int]] | None = None) -> dict:
    """Search p50 from a client process on ``ahcl serve EXTRA`` over the archive of ``n``
    items: alone, and while another client process adds continuously to each of
    :data:`ADD_SIDES` (``elsewhere``: the other archive); alternated :data:`SEARCH_ROUNDS`
    times. With ``cores`` (searching, adding): the searched server and the searching client
    run on the first CPUs only, and everything the additions bring (the adding client, the
    searched server's writer process, the other two servers) on the second: a machine with a
    core to spare for the writes, where what is left is the searched server's own share."""
    search_cpus, add_cpus = cores if cores is not None else (None, None)
    path = root / f"a{n}.index"
    picks = [int(i) for i in np.random.default_rng(1).integers(0, n, repeats)]
    stop_file = root / "stop-adding"
    pauses = {side: root / f"pause-adding-{side}" for side in ADD_SIDES}
    stop_file.unlink(missing_ok=True)
    for pause in pauses.values():
        pause.touch()
    pngs = root / "adder.npz"
    if not pngs.exists():
        write_pngs(pngs, range(5 * 10**6, 5 * 10**6 + 2000))
    sides = ("alone", *ADD_SIDES)
    times: dict[str, list[float]] = {side: [] for side in sides}
    rounds = []
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(serve_cli(path, run, workers, *extra, cpus=search_cpus,
                                            writer_cpus=add_cpus))
        targets = {"here": url,
                   "same_archive": stack.enter_context(serve_cli(path, run, workers, *extra,
                                                                 cpus=add_cpus)),
                   "elsewhere": stack.enter_context(serve_cli(elsewhere, run, workers, *extra,
                                                              cpus=add_cpus))}
        pool = stack.enter_context(ProcessPoolExecutor(1 + len(ADD_SIDES),
                                                       mp_context=get_context("spawn")))
        list(pool.map(time.sleep, [1.0] * (1 + len(ADD_SIDES))))  # all started before the clock
        adding = {side: pool.submit(add_until, targets[side], str(stop_file), str(pauses[side]),
                                    str(pngs), add_cpus) for side in ADD_SIDES}
        pool.submit(search_loop, url, picks[:20], search_cpus).result()  # warm
        for _ in range(SEARCH_ROUNDS):
            got = {}
            for side in sides:
                if side in pauses:
                    pauses[side].unlink()
                time.sleep(0.5)  # additions under way, or the one in flight ended
                got[side] = pool.submit(search_loop, url, picks, search_cpus).result()
                if side in pauses:
                    pauses[side].touch()
                times[side] += got[side]
            rounds.append([ms(got[side])["p50_ms"] for side in sides])
        stop_file.touch()
        added = {side: future.result() for side, future in adding.items()}
    alone = ms(times["alone"])["p50_ms"]
    result = {"alone": ms(times["alone"]), "while_adding": ms(times["here"]),
              "ratio_p50": round(ms(times["here"])["p50_ms"] / alone, 2),
              "while_adding_through_another_server": ms(times["same_archive"]),
              "ratio_p50_through_another_server": round(
                  ms(times["same_archive"])["p50_ms"] / alone, 2),
              "while_adding_elsewhere": ms(times["elsewhere"]),
              "ratio_p50_elsewhere": round(ms(times["elsewhere"])["p50_ms"] / alone, 2),
              "rounds_p50_ms": {side: [r[j] for r in rounds] for j, side in enumerate(sides)},
              "additions_meanwhile": added, "server_workers": workers,
              "server_options": list(extra)}
    where = ""
    if cores is not None:
        result["cpus"] = {"searching": sorted(search_cpus), "adding": sorted(add_cpus)}
        where = f", searches on CPUs {sorted(search_cpus)}, additions on {sorted(add_cpus)}"
    print(f"search by id over HTTP, {n:,} items, ahcl serve {' '.join(extra)}{where}: alone p50 "
          f"{alone:.2f} ms; while another client adds p50 "
          f"{result['while_adding']['p50_ms']:.2f} ms (x{result['ratio_p50']}), through another "
          f"server of the archive {result['while_adding_through_another_server']['p50_ms']:.2f}"
          f" ms (x{result['ratio_p50_through_another_server']}), to another archive's server "
          f"{result['while_adding_elsewhere']['p50_ms']:.2f} ms "
          f"(x{result['ratio_p50_elsewhere']}); rounds {result['rounds_p50_ms']}; additions "
          f"meanwhile {added}", file=sys.stderr)
    return result


def deletions(run: Path, root: Path, n: int, repeats: int) -> dict:
    """Deletions over HTTP of items just added through the writer process, on the archive of
    ``n`` items (:func:`single_additions` built it): the first, then ``repeats`` more."""
    with serve_cli(root / f"a{n}.index", run, 1) as url:
        client = Client(url)
        times = [client.delete(client.add(7 * 10**6 + i)[1][0]) for i in range(repeats + 1)]
    result = {"first_ms": round(times[0] * 1e3, 2), "next": ms(times[1:])}
    print(f"deletion over HTTP after an addition, {n:,} items: first {result['first_ms']:.2f} ms "
          f"(builds the table of uploads by content), next p50 {result['next']['p50_ms']:.2f} ms",
          file=sys.stderr)
    return result


def stream(run: Path, root: Path, n: int, count: int, clients: int, workers: int) -> dict:
    path = root / f"s{n}_{clients}.index"  # its own images folder too: no upload seen before
    start = time.perf_counter()
    build_index(path, run, n, meta=False)
    built = time.perf_counter() - start
    ids: list[int] = []
    errors: list[str] = []
    pngs = [str(root / f"pngs{c}.npz") for c in range(clients)]
    for c, where in enumerate(pngs):
        write_pngs(Path(where), range(10**7 + c, 10**7 + count, clients))
    with serve_cli(path, run, workers) as url:
        Client(url).add(0)  # warm
        # The clients are other processes, as real ones are (not threads beside the server).
        with ProcessPoolExecutor(clients, mp_context=get_context("spawn")) as pool:
            # every worker started (and its imports done) before the clock does: workers are
            # spawned on demand, one per task submitted while the others are busy
            list(pool.map(time.sleep, [1.0] * clients))
            start = time.perf_counter()
            for got, failed in pool.map(client_loop, [url] * clients, range(clients),
                                        [count] * clients, [clients] * clients, pngs):
                ids += got
                errors += failed
            wall = time.perf_counter() - start
    reopened = HammingIndex.load(path)
    present = np.isin(np.asarray(ids, dtype=np.int64), reopened.ids).all()
    result = {"index_items": n, "additions": len(ids), "clients": clients,
              "server_workers": workers,
              "seconds": round(wall, 2), "per_s": round(len(ids) / wall, 1),
              "build_s": round(built, 1), "all_present_after_reopen": bool(present),
              "errors": errors[:5]}
    print(f"{len(ids):,} single additions over HTTP ({clients} clients, {workers} server "
          f"processes) into {n:,} codes: "
          f"{wall:.1f} s ({result['per_s']}/s); all in the reopened index: {present}",
          file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--stream-n", type=int, default=10_000_000)
    parser.add_argument("--stream", type=int, default=10_000)
    parser.add_argument("--clients", type=lambda t: [int(c) for c in t.split(",")],
                        default=[4, 16], help="client processes of the stream, comma-separated "
                                              "for several streams (default 4,16)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes of the searches and the stream (ahcl serve "
                             "--workers)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "archive.json"))
    args = parser.parse_args()
    os.environ.setdefault("AHCL_PROGRESS", "0")
    torch.set_num_threads(SERVE_TORCH_THREADS)  # the servers run in this process, as `ahcl serve`
    cpu = cpu_info()
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores), flags {cpu['flags']}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench_archive_", dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        os.environ["AHCL_CACHE"] = str(root / "cache")
        run = train_tiny_run(root)
        adds = single_additions(run, root, [args.small, args.large], args.repeats)
        ratio = adds[str(args.large)]["p50_ms"] / adds[str(args.small)]["p50_ms"]
        print(f"ratio of p50s, {args.large:,} / {args.small:,} items: {ratio:.2f}x "
              "(target <= 1.5x, large p50 <= 100 ms)", file=sys.stderr)
        elsewhere = root / f"a{args.small}.index"
        searches = {"writer_process": search_while_adding(run, root, args.large, args.repeats,
                                                          args.workers, elsewhere=elsewhere),
                    "inline_writes": search_while_adding(run, root, args.large, args.repeats,
                                                         args.workers, "--inline-writes",
                                                         elsewhere=elsewhere)}
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cpus) >= 2:  # the writes on a core of their own (Linux: pinned through /proc)
            half = len(cpus) // 2
            searches["writer_process_additions_on_other_cores"] = search_while_adding(
                run, root, args.large, args.repeats, args.workers, elsewhere=elsewhere,
                cores=(set(cpus[:half]), set(cpus[half:])))
        deleted = deletions(run, root, args.large, args.repeats)
        streamed = [stream(run, root, args.stream_n, args.stream, c, args.workers)
                    for c in args.clients] if args.stream else None
    result = {"cpu": cpu, "encoder": "tiny_cnn, 64 bits (benchmarks/bench_serve.py's run)",
              "single_addition": adds, "ratio_large_small_p50": round(ratio, 2),
              "search_while_adding": searches, "deletion_after_addition": deleted,
              "stream": streamed,
              "command": "python benchmarks/bench_archive.py " + " ".join(sys.argv[1:])}
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
