"""Removing items from an index read from a file: the metadata left stays undecoded (no pass over
every item's JSON), and every later read, removal, save and reload sees exactly the items left."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ahcl.index import HammingIndex
from ahcl.index import format as fmt


def _meta(i: int) -> dict | None:
    return None if i % 7 == 3 else {"path": f"/archive/{i}.png", "n": i}


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    index = HammingIndex(64)
    index.add(rng.integers(0, 256, (500, 8), dtype=np.uint8), meta=[_meta(i) for i in range(500)])
    index.save(tmp_path / "a.index")
    return tmp_path / "a.index"


def _check(index: HammingIndex, left: list[int]) -> None:
    assert len(index) == len(left)
    np.testing.assert_array_equal(np.sort(index.ids), left)
    assert index.meta_of(np.array(left)) == [_meta(i) for i in left]


def test_removals_keep_a_files_metadata_undecoded_and_exact(saved: Path, tmp_path: Path,
                                                             monkeypatch) -> None:
    index = HammingIndex.load(saved)
    assert isinstance(index._segments[0].meta, tuple)  # a file's lazily decoded form
    left = list(range(500))
    decoded: list[bytes] = []
    real = json.loads
    monkeypatch.setattr(fmt.json, "loads", lambda b, **kw: decoded.append(b) or real(b, **kw))
    for gone in ([0], [499], list(range(100, 150)), [3, 5, 7, 250, 251, 400]):
        assert index.remove(gone) == len(gone)
        left = [i for i in left if i not in gone]
    assert decoded == []  # no item's JSON was read to remove others
    seg = index._segments[0]
    assert isinstance(seg.meta, tuple) and len(seg.meta) == 3
    _check(index, left)
    index.save(tmp_path / "b.index")  # written from the runs of rows left
    again = HammingIndex.load(tmp_path / "b.index", verify=True)
    _check(again, left)
    assert again.remove([1, 2]) == 2
    _check(again, [i for i in left if i not in (1, 2)])


def test_removing_every_other_row_then_all_but_one(saved: Path, tmp_path: Path) -> None:
    index = HammingIndex.load(saved)
    index.remove(np.arange(0, 500, 2))
    left = list(range(1, 500, 2))
    _check(index, left)
    index.remove(left[:-1])
    _check(index, [499])
    index.save(tmp_path / "c.index")
    _check(HammingIndex.load(tmp_path / "c.index"), [499])


def _tagged(i: int) -> dict | None:
    if i % 5 == 0:
        return {"path": f"/u/{i}.png", "sha256": f"{i:064x}"}
    if i % 5 == 1:  # the key, but not at the top level
        return {"path": f"/odd/{i}", "source": {"sha256": "not an upload's"}}
    return None if i % 5 == 2 else {"path": f"/archive/{i}.png"}


def test_items_with_a_meta_key_are_found_without_decoding_the_others(tmp_path: Path,
                                                                     monkeypatch) -> None:
    rng = np.random.default_rng(5)
    index = HammingIndex(64)
    index.add(rng.integers(0, 256, (300, 8), dtype=np.uint8), meta=[_tagged(i) for i in range(300)])
    index.save(tmp_path / "t.index")
    loaded = HammingIndex.load(tmp_path / "t.index")
    loaded.remove(np.arange(0, 300, 3))  # leaves the file's metadata with picked rows
    loaded.add(rng.integers(0, 256, (2, 8), dtype=np.uint8), ids=[1000, 1001],
               meta=[{"sha256": "ab"}, {"path": "x"}])  # an in-memory segment too
    decoded: list[bytes] = []
    real_loads = json.loads
    monkeypatch.setattr(fmt.json, "loads", lambda b, *a, **k: decoded.append(b) or
                        real_loads(b, *a, **k))
    ids, metas = loaded.meta_with_key("sha256")
    want = [i for i in range(300) if i % 3 and i % 5 == 0] + [1000]
    assert ids.tolist() == want and metas == [_tagged(i) for i in want[:-1]] + [{"sha256": "ab"}]
    # only the rows that mention the key were read as JSON, each once
    mentioned = sum(1 for i in range(300) if i % 3 and i % 5 in (0, 1))
    assert len(decoded) == mentioned
    assert HammingIndex(64).meta_with_key("sha256")[0].shape == (0,)
