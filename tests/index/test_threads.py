"""Thread limits are per call and per calling thread: concurrent searches with different
``threads`` get their own numba thread count, the same results, and change no one else's count."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numba
import numpy as np
import pytest
from numba import njit, prange

from ahcl.index import HammingIndex, kernels, mih, selection
from tests.index._reference import brute_knn, brute_range, tied_codes

N_NUMBA = numba.config.NUMBA_NUM_THREADS
LOW, HIGH = 1, min(2, N_NUMBA)
ROUNDS = 25
N_BITS, RADIUS, K = 64, 26, 15

# Every parallel kernel the index launches, as (module, attribute) the index looks it up by.
KERNELS = [(kernels, "topk_scan"), (selection, "topk_finish"), (kernels, "range_fill"),
           (kernels, "sort_ranges"), (mih, "_build"), (mih, "mih_search")]


@njit(parallel=True, nogil=True)
def launch_width(n: int) -> int:
    """Threads of a parallel launch from the calling thread, as seen inside the parallel region."""
    seen = np.zeros(n, dtype=np.int64)
    for i in prange(n):
        seen[i] = numba.get_num_threads()
    return seen.max()


class KernelSpy:
    """Wraps the index's kernels; per Python thread, records the numba thread count at each launch:
    the calling thread's setting and the width of a parallel launch made at that moment."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: dict[int, list[tuple[str, int, int]]] = {}
        self._lock = threading.Lock()
        for module, name in KERNELS:
            monkeypatch.setattr(module, name, self._wrap(name, getattr(module, name)))

    def _wrap(self, name: str, kernel: Callable[..., Any]) -> Callable[..., Any]:
        def spied(*args: Any) -> Any:
            record = (name, numba.get_num_threads(), int(launch_width(64)))
            with self._lock:
                self.seen.setdefault(threading.get_ident(), []).append(record)
            return kernel(*args)
        return spied


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    db = tied_codes(rng, 3000, N_BITS, 60)
    ids = rng.permutation(10**6)[:3000].astype(np.int64)
    return db, ids, tied_codes(rng, 24, N_BITS, 60)


def _indexes(db: np.ndarray, ids: np.ndarray, threads: int) -> tuple[HammingIndex, HammingIndex]:
    """A flat and an MIH index over the same codes, in two segments (the scan carries state)."""
    flat, multi = HammingIndex(N_BITS, threads=threads), HammingIndex(N_BITS, mih=True,
                                                                      threads=threads)
    for index in (flat, multi):
        index.add(db[:1700], ids=ids[:1700])
        index.add(db[1700:], ids=ids[1700:])
    return flat, multi


def _results(flat: HammingIndex, multi: HammingIndex, queries: np.ndarray) -> list[np.ndarray]:
    multi.build_mih()  # a fresh MIH build every round: its kernel runs under the limit too
    return [*flat.search(queries, K), *multi.search(queries, K),
            *flat.range_search(queries, RADIUS)]


@pytest.mark.skipif(N_NUMBA < 2, reason="needs NUMBA_NUM_THREADS >= 2 to tell two limits apart")
def test_concurrent_searches_keep_their_own_thread_limits(monkeypatch):
    db, ids, queries = _data()
    # Single-threaded reference, checked against brute force once.
    reference = _results(*_indexes(db, ids, threads=1), queries)
    ref_d, ref_i = brute_knn(queries, db, ids, K, N_BITS)
    for got_d, got_i in (reference[0:2], reference[2:4]):
        np.testing.assert_array_equal(got_d, ref_d)
        np.testing.assert_array_equal(got_i, ref_i)
    lims, dist, found = reference[4:]
    assert [list(zip(dist[a:b].tolist(), found[a:b].tolist())) for a, b in zip(lims, lims[1:])] \
        == brute_range(queries, db, ids, RADIUS)

    main_before = numba.get_num_threads()
    spy = KernelSpy(monkeypatch)
    start = threading.Barrier(2, timeout=120)

    def worker(threads: int, baseline: int) -> int:
        # Each worker's own setting differs from the limit it asks for and from the other
        # worker's, so a limit that leaked across threads or was not restored shows up.
        numba.set_num_threads(baseline)
        indexes = _indexes(db, ids, threads)
        try:
            for _ in range(ROUNDS):
                start.wait()  # both searches run at the same time, round after round
                for got, want in zip(_results(*indexes, queries), reference):
                    np.testing.assert_array_equal(got, want)
                assert numba.get_num_threads() == baseline
        except BaseException:
            start.abort()
            raise
        return threading.get_ident()

    plan = {LOW: HIGH, HIGH: LOW}  # threads asked → the worker thread's own setting
    with ThreadPoolExecutor(2) as pool:
        jobs = {threads: pool.submit(worker, threads, baseline)
                for threads, baseline in plan.items()}
    errors = [job.exception() for job in jobs.values() if job.exception() is not None]
    errors.sort(key=lambda e: isinstance(e, threading.BrokenBarrierError))  # the cause first
    if errors:
        raise errors[0]
    idents = {threads: job.result() for threads, job in jobs.items()}

    assert numba.get_num_threads() == main_before
    for threads, ident in idents.items():
        records = spy.seen[ident]
        assert {name for name, _, _ in records} == {name for _, name in KERNELS}
        assert len(records) >= ROUNDS * len(KERNELS)
        wrong = [r for r in records if r[1:] != (threads, threads)]
        assert not wrong, f"threads={threads}: kernels launched with other counts: {wrong[:5]}"


def test_thread_limit_sets_and_restores_only_the_calling_threads_count():
    before = numba.get_num_threads()
    with kernels.thread_limit(None):
        assert numba.get_num_threads() == before
    with kernels.thread_limit(10**6):  # clamped to the pool numba started
        assert numba.get_num_threads() == N_NUMBA
    with pytest.raises(RuntimeError), kernels.thread_limit(1):
        assert numba.get_num_threads() == launch_width(8) == 1
        raise RuntimeError("restored on the way out too")
    assert numba.get_num_threads() == before

    inside = threading.Event()
    leave = threading.Event()
    other: list[int] = []

    def hold_a_limit() -> None:
        with kernels.thread_limit(1):
            inside.set()
            leave.wait(30)
            other.append(numba.get_num_threads())

    thread = threading.Thread(target=hold_a_limit)
    thread.start()
    try:
        assert inside.wait(30)
        assert numba.get_num_threads() == before  # another thread's limit is not ours
    finally:
        leave.set()
        thread.join(30)
    assert other == [1]


@pytest.mark.skipif(N_NUMBA < 2, reason="needs NUMBA_NUM_THREADS >= 2 to tell two counts apart")
@pytest.mark.parametrize("mih_index", [False, True])
def test_a_few_queries_launch_one_thread_per_block_of_queries(monkeypatch, mih_index):
    # One query is one block of the query loops: a second thread would only wait (spinning,
    # under GNU OpenMP). The database's side (MIH tables made at the first search) splits by
    # rows and keeps the index's count.
    db, ids, queries = _data()
    index = HammingIndex(N_BITS, mih=mih_index, threads=2)
    index.add(db, ids=ids)
    spy = KernelSpy(monkeypatch)
    before = numba.get_num_threads()
    single = [index.search(queries[i:i + 1], K) for i in range(3)]
    single_range = index.range_search(queries[:1], RADIUS)
    assert numba.get_num_threads() == before
    records = spy.seen[threading.get_ident()]
    queried = [r for r in records if r[0] != "_build"]
    assert queried and all(r[1:] == (1, 1) for r in queried), queried
    if mih_index:
        assert [r[1:] for r in records if r[0] == "_build"] == [(2, 2)]
    spy.seen.clear()
    many = index.search(queries, K)  # 24 queries: two blocks, two threads
    assert {r[1:] for r in spy.seen[threading.get_ident()]} == {(2, 2)}
    for i, (d, i_) in enumerate(single):
        np.testing.assert_array_equal(d[0], many[0][i])
        np.testing.assert_array_equal(i_[0], many[1][i])
    lims, dist, found = single_range
    assert list(zip(dist.tolist(), found.tolist())) == brute_range(queries[:1], db, ids,
                                                                    RADIUS)[0]


def test_query_threads_is_one_thread_per_block_of_queries():
    assert [kernels.query_threads(nq, 4) for nq in (0, 1, 16, 17, 48, 49, 10**6)] \
        == [1, 1, 1, 2, 3, 4, 4]
    assert kernels.query_threads(10**6, 1) == 1
