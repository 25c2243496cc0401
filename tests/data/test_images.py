"""load_rgb: conversion rules of ahcl.data.images, checked on hand-built files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from ahcl.data.images import ImageReadError, load_rgb, to_rgb_array


def test_8bit_modes_convert_to_rgb(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_rgb(tmp_path / "g.png"))
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert (out == grey[..., None]).all()
    assert (np.asarray(load_rgb(tmp_path / "a.png")) == [200, 0, 0]).all()  # alpha dropped


def test_stretch_matches_hand_computed_percentiles() -> None:
    band = np.arange(101, dtype=np.uint16).reshape(1, 101)  # p2 = 2, p98 = 98
    out = to_rgb_array(band)
    expected = np.clip(np.rint((np.arange(101) - 2) * 255 / 96), 0, 255).astype(np.uint8)
    assert (out[0, :, 0] == expected).all() and (out[..., 1] == out[..., 0]).all()
    assert to_rgb_array(np.full((2, 2), 7.5, np.float32)).max() == 0  # constant band -> 0


def test_16bit_single_band_tiff(tmp_path: Path) -> None:
    band = (np.arange(100, dtype=np.uint16) * 600).reshape(10, 10)
    tifffile.imwrite(tmp_path / "b.tif", band)
    out = np.asarray(load_rgb(tmp_path / "b.tif"))
    assert out.shape == (10, 10, 3)
    assert (out == to_rgb_array(band)).all()
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("planar", [False, True])
def test_multiband_tiff_first_three_or_chosen_bands(tmp_path: Path, planar: bool) -> None:
    rng = np.random.default_rng(0)
    cube = rng.integers(0, 4000, (12, 9, 5), dtype=np.uint16)
    path = tmp_path / "m.tif"
    if planar:
        tifffile.imwrite(path, np.moveaxis(cube, -1, 0), photometric="minisblack",
                         planarconfig="separate")
    else:
        tifffile.imwrite(path, cube, photometric="minisblack", planarconfig="contig")
    assert (np.asarray(load_rgb(path)) == to_rgb_array(cube[..., :3])).all()
    chosen = np.asarray(load_rgb(path, bands=(4, 3, 2)))
    assert (chosen == to_rgb_array(cube[..., [4, 3, 2]])).all()
    with pytest.raises(ImageReadError, match="out of range"):
        load_rgb(path, bands=(0, 1, 5))


def test_four_band_uint8_tiff_keeps_values(tmp_path: Path) -> None:
    cube = np.random.default_rng(1).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "u.tif", cube, photometric="minisblack", planarconfig="contig")
    assert (np.asarray(load_rgb(tmp_path / "u.tif")) == cube[..., :3]).all()


def test_bad_files_raise_naming_the_file(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
                    ).save(tmp_path / "ok.jpg", quality=90)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "cut.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    for name in ("cut.jpg", "text.jpg", "cut.tif", "missing.png"):
        with pytest.raises(ImageReadError, match=name):
            load_rgb(tmp_path / name)
    assert load_rgb(tmp_path / "ok.jpg").size == (64, 64)
