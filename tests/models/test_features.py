"""Feature extraction: hits by content, matches a direct forward pass, reports unreadable images."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from ahcl.data.images import ImageReadError
from ahcl.device import Placement
from ahcl.models.backbones import create_backbone
from ahcl.models.features import UnreadableImagesError, extract_features, image_features
from ahcl.models.inference import CPU, inference_model
from tests.models._helpers import N_IMAGES, Counting, close, direct_features


def test_shapes_and_values_match_a_direct_forward(images, tmp_path, tiny):
    bb, count = tiny
    feats = extract_features(images, bb, cache_dir=tmp_path / "cache", batch_size=3)
    assert feats.shape == (N_IMAGES, 64) and feats.dtype == np.float32
    assert count.n == N_IMAGES
    close(feats, direct_features(create_backbone("tiny_cnn", seed=0), images))


def test_second_call_reads_the_cache_bit_identically(images, tmp_path, tiny):
    bb, count = tiny
    first = extract_features(images, bb, cache_dir=tmp_path / "cache", batch_size=3)
    second = extract_features(images, bb, cache_dir=tmp_path / "cache", batch_size=3)
    assert count.n == N_IMAGES
    assert np.array_equal(first, second)
    by_name = extract_features(images, "tiny_cnn", cache_dir=tmp_path / "cache")
    assert np.array_equal(first, by_name)


def test_renamed_and_moved_files_hit_the_cache(images, tmp_path, tiny):
    bb, count = tiny
    first = extract_features(images, bb, cache_dir=tmp_path / "cache")
    moved_dir = tmp_path / "elsewhere"
    moved_dir.mkdir()
    moved = [p.rename(moved_dir / f"renamed_{i}.png") for i, p in enumerate(reversed(images))]
    again = extract_features(moved, bb, cache_dir=tmp_path / "cache")
    assert count.n == N_IMAGES
    assert np.array_equal(again, first[::-1])


def test_identical_files_are_computed_once(images, tmp_path, tiny):
    bb, count = tiny
    copy = images[0].with_name("copy.png")
    shutil.copy(images[0], copy)
    feats = extract_features([images[0], copy, images[1]], bb, cache_dir=tmp_path / "cache")
    assert count.n == 2 and np.array_equal(feats[0], feats[1])


def test_unreadable_images_are_reported_after_the_others_are_cached(images, tmp_path, tiny):
    bb, count = tiny
    broken = images[0].with_name("broken.png")
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(UnreadableImagesError, match="broken.png") as info:
        extract_features([*images, broken], bb, cache_dir=tmp_path / "cache", batch_size=3)
    assert info.value.paths == [str(broken)] and "\n" not in str(info.value)
    assert count.n == N_IMAGES
    extract_features(images, bb, cache_dir=tmp_path / "cache")
    assert count.n == N_IMAGES
    with pytest.raises(ImageReadError, match="broken.png"):
        extract_features([broken, *images], bb, cache_dir=tmp_path / "cache2", strict=True)
    with pytest.raises(ImageReadError, match="missing.png"):
        extract_features([tmp_path / "missing.png"], bb, cache_dir=tmp_path / "cache")


def test_read_errors_carry_their_paths_through_pickling(images, tmp_path, tiny):
    bb, _ = tiny
    broken = images[0].with_name("broken.png")
    broken.write_bytes(b"not a png")
    with pytest.raises(UnreadableImagesError) as info:
        extract_features([broken, *images[:2]], bb, cache_dir=tmp_path / "cache")
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is UnreadableImagesError and again.paths == [str(broken)]
    assert str(again) == str(info.value)
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageReadError) as info:
        extract_features([missing], bb, cache_dir=tmp_path / "cache")
    assert info.value.path == str(missing)


@pytest.mark.parametrize("batch_size", [2, 3, 8])
def test_worker_processes_give_the_same_features_and_leave_the_backbone_alone(images, tmp_path,
                                                                              batch_size):
    bb = create_backbone("tiny_cnn").train()
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    serial = extract_features(images, bb, cache_dir=tmp_path / "a", batch_size=batch_size,
                              num_workers=0)
    workers = extract_features(images, bb, cache_dir=tmp_path / "b", batch_size=batch_size,
                               num_workers=2)
    by_default = extract_features(images, bb, cache_dir=tmp_path / "c", batch_size=batch_size)
    assert np.array_equal(serial, workers) and np.array_equal(serial, by_default)
    assert bb.training
    assert all(torch.equal(v, bb.state_dict()[k]) for k, v in before.items())


def test_the_device_argument_still_works_and_placement_is_exclusive(images, tmp_path, tiny):
    bb, _ = tiny
    default = extract_features(images, bb, cache_dir=tmp_path)
    assert np.array_equal(extract_features(images, bb, cache_dir=tmp_path, device="cpu"), default)
    assert np.array_equal(
        extract_features(images, bb, cache_dir=tmp_path, placement=CPU, num_workers=0), default)
    with pytest.raises(ValueError, match="not both"):
        extract_features(images, bb, cache_dir=tmp_path, device="cpu", placement=CPU)


def test_an_inference_form_is_used_as_given(images, tmp_path, tiny):
    bb, count = tiny
    fast = inference_model(bb)
    feats = extract_features(images, fast, cache_dir=tmp_path, batch_size=3)
    assert count.n == N_IMAGES
    assert np.array_equal(extract_features(images, bb, cache_dir=tmp_path), feats)  # same key
    assert count.n == N_IMAGES
    close(feats, direct_features(create_backbone("tiny_cnn", seed=0), images))
    with pytest.raises(ValueError, match="fast1-cpu-fp32"):
        extract_features(images, fast, cache_dir=tmp_path,
                         placement=Placement(torch.device("cpu"), "bf16"))


def test_image_features_skip_the_cache_and_stop_at_the_first_unreadable(images, tmp_path, tiny):
    bb, count = tiny
    fast = inference_model(bb)
    feats = image_features(images, fast, batch_size=3, num_workers=2)
    assert count.n == N_IMAGES
    close(feats, direct_features(create_backbone("tiny_cnn", seed=0), images))
    assert not (tmp_path / "cache").exists()
    broken = images[0].with_name("broken.png")
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="broken.png") as info:
        image_features([*images[:2], broken], fast, num_workers=0)
    assert info.value.path == str(broken)


def test_mobilenet_features_and_cache(images, tmp_path, mobilenet_weights, monkeypatch):
    bb = create_backbone("mobilenet_v2")
    count = Counting(bb, monkeypatch)
    first = extract_features(images[:4], bb, cache_dir=tmp_path, batch_size=2)
    assert first.shape == (4, 1280) and first.dtype == np.float32 and (first >= 0).all()
    assert np.array_equal(extract_features(images[:4], bb, cache_dir=tmp_path), first)
    assert count.n == 4
