"""Feature cache: survives truncation and corruption, keyed by backbone, shared by processes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ahcl.models.backbones import create_backbone
from ahcl.models.feature_cache import HEADER_SIZE, KEY_SIZE, FeatureCache, default_cache_dir
from ahcl.models.features import content_key, extract_features
from tests.models._helpers import N_IMAGES, TINY_RECORD, Counting, close, direct_features


def test_default_cache_dir_follows_ahcl_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("AHCL_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("AHCL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "ahcl" / "features"


def _single_segment(images, tmp_path, bb) -> tuple[Path, bytes, np.ndarray]:
    """Fill a fresh cache in one call; return its only segment, the segment bytes, the features."""
    reference = extract_features(images, bb, cache_dir=tmp_path / "cache", batch_size=3)
    [segment] = FeatureCache.for_backbone(bb, tmp_path / "cache").segments()
    data = segment.read_bytes()
    assert len(data) == HEADER_SIZE + N_IMAGES * TINY_RECORD
    return segment, data, reference


def _only(segment: Path, data: bytes) -> None:
    """Leave ``data`` as the one segment of its folder."""
    for other in segment.parent.glob("seg-*.bin"):
        other.unlink()
    segment.write_bytes(data)


@pytest.mark.parametrize("cut", [0, 5, HEADER_SIZE, HEADER_SIZE + 1, HEADER_SIZE + 40,
                                 HEADER_SIZE + TINY_RECORD - 1, HEADER_SIZE + TINY_RECORD,
                                 HEADER_SIZE + 3 * TINY_RECORD + 100,
                                 HEADER_SIZE + N_IMAGES * TINY_RECORD - 1])
def test_truncated_segment_loses_only_the_cut_records(images, tmp_path, tiny, cut):
    bb, count = tiny
    segment, data, reference = _single_segment(images, tmp_path, bb)
    _only(segment, data[:cut])
    count.n = 0
    feats = extract_features(images, bb, cache_dir=tmp_path / "cache", batch_size=3)
    kept = max(0, (cut - HEADER_SIZE) // TINY_RECORD)  # records were written in path order
    assert count.n == N_IMAGES - kept
    assert np.array_equal(feats[:kept], reference[:kept])
    close(feats, reference)


@pytest.mark.parametrize("where", ["key", "feature", "crc"])
@pytest.mark.parametrize("record", [0, 5, N_IMAGES - 1])
def test_corrupted_record_is_recomputed(images, tmp_path, tiny, record, where):
    bb, count = tiny
    segment, data, reference = _single_segment(images, tmp_path, bb)
    offset = HEADER_SIZE + record * TINY_RECORD + {"key": 3, "feature": KEY_SIZE + 17,
                                                   "crc": TINY_RECORD - 2}[where]
    corrupted = bytearray(data)
    corrupted[offset] ^= 0x10
    _only(segment, bytes(corrupted))
    cache = FeatureCache.for_backbone(bb, tmp_path / "cache")
    _, found = cache.get_many([content_key(p) for p in images])
    assert found.tolist() == [i != record for i in range(N_IMAGES)]
    assert cache.n_bad_records == 1
    count.n = 0
    feats = extract_features(images, bb, cache_dir=tmp_path / "cache")
    assert count.n == 1
    close(feats, reference)


def test_bad_header_ignores_the_segment(images, tmp_path, tiny):
    bb, count = tiny
    segment, data, reference = _single_segment(images, tmp_path, bb)
    _only(segment, data[:9] + bytes([data[9] ^ 1]) + data[10:])  # version field
    count.n = 0
    close(extract_features(images, bb, cache_dir=tmp_path / "cache"), reference)
    assert count.n == N_IMAGES


def test_get_many_put_many_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5)]
    feats = rng.standard_normal((5, 7)).astype(np.float32)
    with FeatureCache(tmp_path, "model|w|t|7", 7) as cache:
        cache.put_many(keys[:3], feats[:3])
        cache.put_many(keys[3:4], feats[3:4])
        with pytest.raises(ValueError, match="shape"):
            cache.put_many(keys[:2], feats[:1])
        with pytest.raises(ValueError, match="sha256"):
            cache.put_many(["not-a-digest"], feats[:1])
    got, found = FeatureCache(tmp_path, "model|w|t|7", 7).get_many(keys)
    assert found.tolist() == [True, True, True, True, False]
    assert np.array_equal(got[:4], feats[:4]) and not got[4].any()
    _, found = FeatureCache(tmp_path, "model|w|t2|7", 7).get_many(keys)
    assert not found.any()


def test_a_reader_sees_another_writers_later_appends(tmp_path):
    keys = [hashlib.sha256(bytes([i])).hexdigest() for i in range(2)]
    reader, writer = FeatureCache(tmp_path, "m|w|t|3", 3), FeatureCache(tmp_path, "m|w|t|3", 3)
    assert not reader.get_many(keys)[1].any()
    writer.put_many(keys, np.ones((2, 3), np.float32))  # not closed: still "live"
    assert reader.get_many(keys)[1].all()
    writer.close()


def test_compact_merges_idle_segments_and_skips_live_ones(tmp_path):
    rng = np.random.default_rng(2)
    keys = [hashlib.sha256(bytes([i])).hexdigest() for i in range(4)]
    feats = rng.standard_normal((4, 3)).astype(np.float32)
    for i in range(3):
        with FeatureCache(tmp_path, "m|w|t|3", 3) as cache:
            cache.put_many(keys[i:i + 1], feats[i:i + 1])
    live = FeatureCache(tmp_path, "m|w|t|3", 3)
    live.put_many(keys[3:], feats[3:])
    compactor = FeatureCache(tmp_path, "m|w|t|3", 3)
    assert len(compactor.segments()) == 4
    assert compactor.compact() == 3
    assert len(compactor.segments()) == 2  # the merged one and the live one
    live.close()
    got, found = FeatureCache(tmp_path, "m|w|t|3", 3).get_many(keys)
    assert found.all() and np.array_equal(got, feats)


def test_cache_key_changes_with_weights_and_transform(images, tmp_path, monkeypatch):
    a, b = create_backbone("tiny_cnn", seed=0), create_backbone("tiny_cnn", seed=1)
    assert a.cache_key != b.cache_key
    c = create_backbone("tiny_cnn", seed=0)
    c.transform_id = c.transform_id.replace("resize64", "resize72")
    caches = {FeatureCache.for_backbone(m, tmp_path).path for m in (a, b, c)}
    assert len(caches) == 3
    extract_features(images, a, cache_dir=tmp_path)
    for other in (b, c):
        count = Counting(other, monkeypatch)
        extract_features(images, other, cache_dir=tmp_path)
        assert count.n == N_IMAGES


# A child process: waits for the go file, then appends one record at a time (reading between
# appends, so reads meet the other writer's partial records) and finally runs extract_features.
CHILD = """
import hashlib, sys, time
from pathlib import Path
import numpy as np
from ahcl.models.features import FeatureCache, extract_features
cache_dir, go, first = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
cache = FeatureCache(cache_dir, "m|w|t|16", 16)
order = range(300) if first == 0 else reversed(range(300))
for i in order:
    key = hashlib.sha256(str(i).encode()).hexdigest()
    cache.put_many([key], np.full((1, 16), i, np.float32) + np.arange(16, dtype=np.float32))
    cache.get_many([hashlib.sha256(str(299 - i).encode()).hexdigest()])
cache.close()
extract_features(sys.argv[4:], "tiny_cnn", cache_dir=cache_dir, batch_size=1)
"""


def test_two_processes_share_one_cache_dir(images, tmp_path):
    cache_dir, go = tmp_path / "cache", tmp_path / "go"
    jobs = [subprocess.Popen([sys.executable, "-c", CHILD, str(cache_dir), str(go), str(i),
                              *map(str, images if i == 0 else images[::-1])])
            for i in range(2)]
    go.touch()
    assert [job.wait(timeout=120) for job in jobs] == [0, 0]
    cache = FeatureCache(cache_dir, "m|w|t|16", 16)
    assert len(cache.segments()) == 2  # one per process
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(300)]
    feats, found = cache.get_many(keys)
    assert found.all() and cache.n_bad_records == 0
    assert np.array_equal(feats, np.arange(300, dtype=np.float32)[:, None] + np.arange(16))
    bb = create_backbone("tiny_cnn")
    tiny_cache = FeatureCache.for_backbone(bb, cache_dir)
    feats, found = tiny_cache.get_many([content_key(p) for p in images])
    assert found.all() and tiny_cache.n_bad_records == 0
    close(feats, direct_features(bb, images))
