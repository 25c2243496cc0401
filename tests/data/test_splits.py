"""Stratified query/database splits, validation carving, and the JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ahcl.data.splits import Split, carve_validation, load_split, make_split, save_split
from ahcl.errors import DatasetError

LABELS = np.array([0] * 10 + [1] * 5 + [2] * 3, dtype=np.int64)


def test_fraction_counts_hand_worked() -> None:
    split = make_split(LABELS, query_fraction=0.2, seed=3)
    # per class: round-half-up(0.2 * n), at least 1 -> 10: 2, 5: 1, 3: 1 (0.6 -> 1)
    assert np.bincount(LABELS[split.query]).tolist() == [2, 1, 1]
    assert np.bincount(LABELS[split.db]).tolist() == [8, 4, 2]
    assert split.query.dtype == np.int64 and split.db.dtype == np.int64
    assert (np.diff(split.query) > 0).all() and (np.diff(split.db) > 0).all()
    assert not np.intersect1d(split.query, split.db).size
    assert np.union1d(split.query, split.db).tolist() == list(range(len(LABELS)))


def test_per_class_and_zero_fraction() -> None:
    split = make_split(LABELS, query_per_class=2, seed=0)
    assert np.bincount(LABELS[split.query]).tolist() == [2, 2, 2]
    assert split.query_fraction is None and split.query_per_class == 2
    everything = make_split(LABELS, query_fraction=0)
    assert everything.query.size == 0 and everything.db.tolist() == list(range(len(LABELS)))


def test_reproducible_and_seed_dependent() -> None:
    a, b = make_split(LABELS, 0.3, seed=7), make_split(LABELS, 0.3, seed=7)
    assert a.query.tolist() == b.query.tolist()
    draws = {tuple(make_split(LABELS, 0.3, seed=s).query) for s in range(10)}
    assert len(draws) > 1


def test_too_small_class_is_an_error() -> None:
    with pytest.raises(DatasetError, match="class 2 has 3 item"):
        make_split(LABELS, query_per_class=3)
    with pytest.raises(DatasetError, match="class 1 has 1 item"):
        make_split(np.array([0, 0, 0, 1]), query_fraction=0.5)
    with pytest.raises(DatasetError, match="query_fraction"):
        make_split(LABELS, query_fraction=1.0)


def test_carve_validation_stratified_and_disjoint() -> None:
    split = make_split(LABELS, query_fraction=0.2, seed=0)
    train, val = carve_validation(split.db, LABELS, fraction=0.25, seed=1)
    # db per class [8, 4, 2] -> val round-half-up(0.25 n) capped at n-1: [2, 1, 1]
    assert np.bincount(LABELS[val], minlength=3).tolist() == [2, 1, 1]
    assert not np.intersect1d(train, val).size
    assert np.union1d(train, val).tolist() == split.db.tolist()
    assert not np.intersect1d(val, split.query).size
    t2, v2 = split.validation(LABELS, fraction=0.25, seed=1)
    assert t2.tolist() == train.tolist() and v2.tolist() == val.tolist()
    single_train, single_val = carve_validation(np.array([0, 10]), LABELS, 0.5)
    assert single_val.size == 0 and single_train.tolist() == [0, 10]  # 1 item per class stays


def test_json_round_trip_and_path_check(tmp_path: Path) -> None:
    paths = [f"c{label}/{i}.jpg" for i, label in enumerate(LABELS)]
    split = make_split(LABELS, query_fraction=0.2, seed=5)
    save_split(split, tmp_path / "s.json", paths=paths)
    back = load_split(tmp_path / "s.json", folder=paths)
    assert isinstance(back, Split)
    assert back.query.tolist() == split.query.tolist() and back.db.tolist() == split.db.tolist()
    assert (back.seed, back.query_fraction, back.n_items) == (5, 0.2, len(LABELS))
    renamed = list(paths)
    renamed[4] = "c0/other.jpg"
    with pytest.raises(DatasetError, match="item 4 is 'c0/4.jpg'.*'c0/other.jpg'"):
        load_split(tmp_path / "s.json", folder=renamed)
    with pytest.raises(DatasetError, match="made for 18 images but the folder has 17"):
        load_split(tmp_path / "s.json", folder=paths[:-1])


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read split file"):
        load_split(tmp_path / "x.json")
    split = make_split(LABELS, query_fraction=0.2)
    save_split(split, tmp_path / "s.json")
    obj = json.loads((tmp_path / "s.json").read_text())
    obj["db"].append(obj["query"][0])
    (tmp_path / "o.json").write_text(json.dumps(obj))
    with pytest.raises(DatasetError, match="overlap"):
        load_split(tmp_path / "o.json")
    with pytest.raises(DatasetError, match="no image paths"):
        load_split(tmp_path / "s.json", folder=["a"] * len(LABELS))
