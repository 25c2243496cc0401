"""Seeded alterations of the near-duplicate protocol (ahcl.data.alter)."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from ahcl.data.alter import (BRIGHTNESS, CROP_FRACTION, JPEG_QUALITY, alter_image, altered_copies,
                             altered_copy, copy_rng, near_duplicate_rows)
from ahcl.data.images import ImageReadError


def scene(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A smooth RGB test scene (gradients plus a few blocks), ``size`` = (width, height)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                    np.full((h, w), 90)], axis=2).astype(np.uint8)
    for _ in range(4):
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        img[y0:y0 + 8, x0:x0 + 8] = rng.integers(0, 256, 3)
    return Image.fromarray(img, "RGB")


@pytest.fixture()
def paths(tmp_path: Path) -> list[Path]:
    out = []
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        scene(i).save(path)
        out.append(path)
    return out


def test_deterministic_for_a_seed() -> None:
    img = scene(0)
    a, pa = alter_image(img, np.random.default_rng(7))
    b, pb = alter_image(img, np.random.default_rng(7))
    assert pa == pb and np.array_equal(np.asarray(a), np.asarray(b))
    c, pc = alter_image(img, np.random.default_rng(8))
    assert pc != pa


def test_parameters_in_range_and_json_safe() -> None:
    img, rotations = scene(1, (80, 80)), set()
    for seed in range(60):
        out, p = alter_image(img, np.random.default_rng(seed))
        assert json.loads(json.dumps(p)) == p
        assert set(p) == {"crop_box", "crop_fraction", "rotate", "brightness", "jpeg_quality"}
        left, top, right, bottom = p["crop_box"]
        fw, fh = p["crop_fraction"]
        assert CROP_FRACTION[0] <= fw <= CROP_FRACTION[1]
        assert CROP_FRACTION[0] <= fh <= CROP_FRACTION[1]
        assert right - left == round(fw * 80) and bottom - top == round(fh * 80)
        assert 0 <= left and 0 <= top and right <= 80 and bottom <= 80
        assert p["rotate"] in (0, 90, 180, 270)
        rotations.add(p["rotate"])
        assert BRIGHTNESS[0] <= p["brightness"] <= BRIGHTNESS[1]
        assert JPEG_QUALITY[0] <= p["jpeg_quality"] <= JPEG_QUALITY[1]
        assert out.mode == "RGB" and out.size == (80, 80)
    assert rotations == {0, 90, 180, 270}


def test_output_differs_from_input() -> None:
    img = scene(2)
    for seed in range(5):
        out, _ = alter_image(img, np.random.default_rng(seed))
        assert not np.array_equal(np.asarray(out), np.asarray(img))


def test_steps_in_order_reproduce_the_output() -> None:
    """Crop + bilinear resize, transpose, brightness, JPEG: redone by hand from the params."""
    img = scene(3, (72, 72))
    out, p = alter_image(img, np.random.default_rng(11))
    step = img.crop(tuple(p["crop_box"])).resize(img.size, Image.Resampling.BILINEAR)
    step = step.rotate(p["rotate"], expand=True) if p["rotate"] else step
    step = ImageEnhance.Brightness(step).enhance(p["brightness"])
    buf = BytesIO()
    step.save(buf, format="JPEG", quality=p["jpeg_quality"])
    assert np.array_equal(np.asarray(Image.open(BytesIO(buf.getvalue())).convert("RGB")),
                          np.asarray(out))


def test_non_square_sides_swap_only_on_quarter_turns() -> None:
    img = scene(4, (60, 40))
    for seed in range(20):
        out, p = alter_image(img, np.random.default_rng(seed))
        assert out.size == ((40, 60) if p["rotate"] in (90, 270) else (60, 40))


def test_other_modes_become_rgb() -> None:
    grey = scene(5).convert("L")
    out, _ = alter_image(grey, np.random.default_rng(0))
    assert out.mode == "RGB" and out.size == grey.size
    rgba = scene(5).convert("RGBA")
    assert alter_image(rgba, np.random.default_rng(0))[0].mode == "RGB"


# ---------------------------------------------------------------- rows and copies


def test_rows_are_sorted_distinct_seeded() -> None:
    rows = near_duplicate_rows(100, 10, seed=3)
    assert rows.dtype == np.int64 and len(rows) == 10
    assert (np.diff(rows) > 0).all() and rows.min() >= 0 and rows.max() < 100
    assert (near_duplicate_rows(100, 10, seed=3) == rows).all()
    assert not (near_duplicate_rows(100, 10, seed=4) == rows).all()
    assert set(rows) <= set(near_duplicate_rows(100, 40, seed=3))  # nested in n


def test_rows_clamp_to_the_items() -> None:
    assert near_duplicate_rows(5, 50, seed=0).tolist() == [0, 1, 2, 3, 4]
    assert near_duplicate_rows(5, 0, seed=0).tolist() == []
    assert near_duplicate_rows(0, 3, seed=0).tolist() == []
    with pytest.raises(ValueError, match=">= 0"):
        near_duplicate_rows(5, -1, seed=0)


def test_copy_does_not_depend_on_the_other_rows(paths: list[Path]) -> None:
    alone = altered_copies(paths, [3], seed=9)[0]
    together = altered_copies(paths, [0, 3, 5], seed=9)
    reordered = altered_copies(paths, [5, 3], seed=9)
    assert np.array_equal(np.asarray(alone), np.asarray(together[1]))
    assert np.array_equal(np.asarray(alone), np.asarray(reordered[1]))
    other_seed = altered_copies(paths, [3], seed=10)[0]
    assert not np.array_equal(np.asarray(alone), np.asarray(other_seed))


def test_copies_match_alter_image_with_the_row_rng(paths: list[Path]) -> None:
    copies = altered_copies(paths, np.array([1, 4]), seed=2)
    assert [c.size for c in copies] == [(64, 64), (64, 64)]
    for row, copy in zip((1, 4), copies):
        expected, params = alter_image(Image.open(paths[row]), copy_rng(2, row))
        assert np.array_equal(np.asarray(copy), np.asarray(expected))
        img, p = altered_copy(paths[row], row, 2)
        assert p == params and np.array_equal(np.asarray(img), np.asarray(expected))


def test_copies_errors(paths: list[Path], tmp_path: Path) -> None:
    with pytest.raises(IndexError, match="out of range"):
        altered_copies(paths, [6], seed=0)
    with pytest.raises(IndexError, match="out of range"):
        altered_copies(paths, [-1], seed=0)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError):
        altered_copies([bad], [0], seed=0)
