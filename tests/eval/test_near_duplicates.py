"""near_duplicate_ranks against a brute-force lexsort on tied codes; near_duplicate_report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ahcl.eval import (EvaluationError, NearDuplicateReport, near_duplicate_ranks,
                       near_duplicate_report)

SPLITS = [(8, None), (16, 8), (64, None), (64, 16), (72, 8), (128, 32), (136, 72), (200, None)]


def brute_ranks(q: np.ndarray, db: np.ndarray, sources: np.ndarray,
                semantic_bits: int | None) -> np.ndarray:
    """1-based position of ``sources[i]`` in ``np.lexsort((row, d_inst, d_sem))``."""
    n_bits = q.shape[1] * 8
    sb = n_bits if semantic_bits is None else semantic_bits
    qb = np.unpackbits(q, axis=1, bitorder="little").astype(bool)
    db_b = np.unpackbits(db, axis=1, bitorder="little").astype(bool)
    out = []
    for i in range(len(q)):
        diff = qb[i] != db_b
        d_sem, d_inst = diff[:, :sb].sum(1), diff[:, sb:].sum(1)
        order = np.lexsort((np.arange(len(db)), d_inst, d_sem))
        out.append(int(np.flatnonzero(order == sources[i])[0]) + 1)
    return np.array(out, dtype=np.int64)


def tied_codes(rng: np.random.Generator, count: int, n_bits: int, sb: int | None,
               distinct: int) -> np.ndarray:
    """Semantic and instance parts each drawn from ``distinct`` values: many ties."""
    nb, cut = n_bits // 8, (n_bits if sb is None else sb) // 8
    parts = [pool[rng.integers(0, distinct, count)]
             for pool in (rng.integers(0, 256, (distinct, w), dtype=np.uint8)
                          for w in (cut, nb - cut)) if pool.shape[1]]
    return np.concatenate(parts, axis=1)


@settings(max_examples=80, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.integers(0, len(SPLITS) - 1),
       nq=st.integers(1, 12), n=st.integers(1, 60), distinct=st.integers(1, 4),
       altered=st.booleans())
def test_ranks_match_brute_force(seed, split, nq, n, distinct, altered) -> None:
    n_bits, sb = SPLITS[split]
    rng = np.random.default_rng(seed)
    db = tied_codes(rng, n, n_bits, sb, distinct)
    sources = rng.integers(0, n, nq)
    q = db[sources].copy()
    if altered:  # flip a few bits of each copy, anywhere in the code
        bits = np.unpackbits(q, axis=1, bitorder="little")
        flips = rng.random(bits.shape) < 0.05
        q = np.packbits(bits ^ flips, axis=1, bitorder="little")
    got = near_duplicate_ranks(q, db, sources, semantic_bits=sb)
    assert got.dtype == np.int64 and got.shape == (nq,)
    assert (got == brute_ranks(q, db, sources, sb)).all()


def test_ties_rank_by_row() -> None:
    db = np.zeros((5, 2), np.uint8)  # all identical: rank = row + 1
    q = np.zeros((5, 2), np.uint8)
    assert near_duplicate_ranks(q, db, np.arange(5)).tolist() == [1, 2, 3, 4, 5]
    assert near_duplicate_ranks(q, db, np.arange(5), semantic_bits=8).tolist() == [1, 2, 3, 4, 5]


def test_split_ranks_semantic_first() -> None:
    # source row 2 is at semantic 0, instance 3; row 0 at semantic 1, instance 0 (Hamming 1)
    db = np.array([[1, 0], [0, 255], [0, 7]], np.uint8)
    q = np.zeros((1, 2), np.uint8)
    assert near_duplicate_ranks(q, db, np.array([2])).tolist() == [2]  # plain: after row 0
    assert near_duplicate_ranks(q, db, np.array([2]), semantic_bits=8).tolist() == [1]
    assert near_duplicate_ranks(q, db, np.array([2]), semantic_bits=16).tolist() == [2]


def test_threads_and_forms_do_not_change_ranks() -> None:
    rng = np.random.default_rng(4)
    db = tied_codes(rng, 500, 64, 16, 3)
    src = rng.integers(0, 500, 40)
    base = near_duplicate_ranks(db[src], db, src, semantic_bits=16)
    assert (near_duplicate_ranks(db[src], db, src, semantic_bits=16, threads=1) == base).all()
    pm1 = np.unpackbits(db, axis=1, bitorder="little").astype(np.int8) * 2 - 1
    assert (near_duplicate_ranks(pm1[src], pm1, src, semantic_bits=16) == base).all()


def test_no_queries_give_no_ranks() -> None:
    out = near_duplicate_ranks(np.zeros((0, 2), np.uint8), np.zeros((3, 2), np.uint8),
                               np.zeros(0, np.int64))
    assert out.shape == (0,) and out.dtype == np.int64


@pytest.mark.parametrize("kwargs, match", [
    (dict(sources=np.array([0])), "sources"),
    (dict(sources=np.array([0, 3])), "0..2"),
    (dict(sources=np.array([-1, 0])), "0..2"),
    (dict(sources=np.array([0.0, 1.0])), "integer"),
    (dict(sources=np.zeros((2, 1), int)), "sources"),
    (dict(db_codes=np.zeros((3, 3), np.uint8)), "same n_bits"),
    (dict(db_codes=np.zeros((0, 2), np.uint8)), "at least one"),
    (dict(semantic_bits=12), "semantic_bits"),
    (dict(semantic_bits=24), "semantic_bits"),
    (dict(query_codes=np.zeros((2, 16), bool)), "bool"),
])
def test_bad_inputs_raise(kwargs: dict, match: str) -> None:
    args = dict(query_codes=np.zeros((2, 2), np.uint8), db_codes=np.zeros((3, 2), np.uint8),
                sources=np.array([0, 2]))
    args.update(kwargs)
    with pytest.raises(EvaluationError, match=match):
        near_duplicate_ranks(args.pop("query_codes"), args.pop("db_codes"), args.pop("sources"),
                             **args)


# ---------------------------------------------------------------- report


def test_report_figures() -> None:
    rep = near_duplicate_report(np.array([1, 1, 4, 12, 300]))
    assert isinstance(rep, NearDuplicateReport) and rep.n == 5
    assert rep.recall_at == {1: 0.4, 10: 0.6, 100: 0.8}
    assert rep.mean_rank == pytest.approx(318 / 5) and rep.median_rank == 4.0
    d = json.loads(json.dumps(rep.to_dict()))
    assert d == {"n": 5, "recall_at": {"1": 0.4, "10": 0.6, "100": 0.8},
                 "mean_rank": pytest.approx(63.6), "median_rank": 4.0}


def test_report_clips_ks_to_the_database() -> None:
    rep = near_duplicate_report(np.array([1, 2, 30]), n_db=30)
    assert rep.recall_at == {1: pytest.approx(1 / 3), 10: pytest.approx(2 / 3), 30: 1.0}
    tiny = near_duplicate_report(np.array([1]), ks=(1, 10, 100), n_db=1)
    assert tiny.recall_at == {1: 1.0}
    assert near_duplicate_report(np.array([2, 1]), ks=(5,)).recall_at == {5: 1.0}


def test_report_of_ranks_from_the_kernel() -> None:
    rng = np.random.default_rng(0)
    db = tied_codes(rng, 200, 32, 8, 6)
    src = np.arange(0, 200, 10)
    ranks = near_duplicate_ranks(db[src], db, src, semantic_bits=8)
    rep = near_duplicate_report(ranks, n_db=200)
    assert rep.n == 20 and rep.recall_at[100] >= rep.recall_at[10] >= rep.recall_at[1]
    assert rep.mean_rank == pytest.approx(ranks.mean())


@pytest.mark.parametrize("ranks, kwargs, match", [
    (np.array([], np.int64), {}, "non-empty"),
    (np.array([[1]]), {}, "non-empty"),
    (np.array([0, 1]), {}, ">= 1"),
    (np.array([1.0]), {}, "integer"),
    (np.array([1]), dict(ks=(0,)), "positive"),
    (np.array([1, 5]), dict(n_db=4), "database of 4"),
    (np.array([1]), dict(n_db=0), "n_db"),
])
def test_report_bad_inputs(ranks, kwargs, match) -> None:
    with pytest.raises(EvaluationError, match=match):
        near_duplicate_report(ranks, **kwargs)
