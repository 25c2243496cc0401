"""read_image_folder on small folders built in tmp_path, and on the real RSSCN7 copy."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from ahcl.data.folder import read_image_folder
from ahcl.errors import DatasetError


def _img(path: Path, seed: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    """b/ and a/ classes with a 16-bit and a 4-band TIFF, a truncated JPEG, text named .jpg,
    a duplicate, hidden and non-image files, and a file directly in the root."""
    root = tmp_path / "ds"
    _img(root / "b" / "z.png", 1)
    _img(root / "b" / "y.jpg", 2, size=64)
    tifffile.imwrite(root / "b" / "w16.tif", np.arange(64, dtype=np.uint16).reshape(8, 8) * 900)
    _img(root / "a" / "k.png", 3)
    tifffile.imwrite(root / "a" / "four.tiff",
                     np.random.default_rng(4).integers(0, 255, (8, 8, 4), dtype=np.uint8),
                     photometric="minisblack", planarconfig="contig")
    data = (root / "b" / "y.jpg").read_bytes()
    (root / "a" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "a" / "text.jpg").write_text("hello")
    (root / "b" / "z_copy.png").write_bytes((root / "b" / "z.png").read_bytes())
    (root / "a" / ".hidden.png").write_bytes(b"")
    (root / "a" / "notes.txt").write_text("ignored")
    (root / "SHA256SUMS").write_text("ignored")
    (root / ".cache").mkdir()
    return root


def test_order_labels_and_skips(messy: Path) -> None:
    with pytest.warns(UserWarning, match=r"skipped 3 file\(s\) \(2 unreadable, 1 duplicate\)"):
        folder = read_image_folder(messy)
    assert folder.classes == ["a", "b"]
    assert folder.paths == ["a/four.tiff", "a/k.png", "b/w16.tif", "b/y.jpg", "b/z.png"]
    assert folder.labels.dtype == np.int64 and folder.labels.tolist() == [0, 0, 1, 1, 1]
    assert dict(folder.skipped).keys() == {"a/cut.jpg", "a/text.jpg", "b/z_copy.png"}
    assert "duplicate of b/z.png" in dict(folder.skipped)["b/z_copy.png"]
    assert "truncated" in dict(folder.skipped)["a/cut.jpg"]
    assert folder.absolute_paths[0] == messy / "a" / "four.tiff"
    assert folder.class_counts() == {"a": 2, "b": 3}


@pytest.mark.parametrize("bad", ["a/cut.jpg", "a/text.jpg", "b/z_copy.png"])
def test_strict_raises_naming_the_file(messy: Path, bad: str) -> None:
    for other in {"a/cut.jpg", "a/text.jpg", "b/z_copy.png"} - {bad}:
        (messy / other).unlink()
    with pytest.raises(DatasetError, match=Path(bad).name):
        read_image_folder(messy, strict=True)


def test_clean_folder_does_not_warn(tmp_path: Path) -> None:
    for i, cls in enumerate(["x", "y"]):
        _img(tmp_path / cls / "0.png", i)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_image_folder(tmp_path)) == 2


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_image_folder(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        read_image_folder(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        read_image_folder(empty)
    _img(tmp_path / "one" / "only" / "0.png", 0)
    with pytest.raises(DatasetError, match="only one class folder.*at least 2"):
        read_image_folder(tmp_path / "one")
    _img(tmp_path / "two" / "full" / "0.png", 0)
    (tmp_path / "two" / "hollow").mkdir()
    with pytest.raises(DatasetError, match="'hollow'.*no image files"):
        read_image_folder(tmp_path / "two")


def test_class_with_only_bad_files_is_an_error(tmp_path: Path) -> None:
    _img(tmp_path / "ok" / "0.png", 0)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "0.jpg").write_text("nope")
    with pytest.raises(DatasetError, match="'bad'.*no readable"):
        read_image_folder(tmp_path)


def test_rsscn7_has_7_classes_of_300(rsscn7_dir: Path) -> None:
    folder = read_image_folder(rsscn7_dir)
    assert folder.classes == ["aGrass", "bField", "cIndustry", "dRiverLake", "eForest",
                              "fResident", "gParking"]
    assert len(folder) == 2100 and not folder.skipped
    assert np.bincount(folder.labels).tolist() == [300] * 7


def test_symlink_loop_and_decompression_bomb_are_skipped(tmp_path):
    """One bad file does not break a dataset: a symlink loop and an image over Pillow's bomb
    limit are skipped with the counted warning (and stop the read with strict=True)."""
    import os
    import warnings

    from PIL import Image

    from ahcl.data.folder import read_image_folder
    from ahcl.errors import DatasetError

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 90, 40, 200 if cls == "a" else 10)).save(
                tmp_path / cls / f"{i}.png")
    os.symlink(tmp_path / "a" / "loop.png", tmp_path / "a" / "loop.png")
    Image.new("1", (20000, 20000)).save(tmp_path / "b" / "bomb.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = read_image_folder(tmp_path)
    assert sorted(folder.paths) == ["a/0.png", "a/1.png", "b/0.png", "b/1.png"]
    reasons = dict(folder.skipped)
    assert "symbolic links" in reasons["a/loop.png"]
    assert "too large to decode safely" in reasons["b/bomb.png"]
    assert any("skipped 2 file(s) (2 unreadable, 0 duplicate)" in str(w.message) for w in caught)
    with pytest.raises(DatasetError, match="strict mode"):
        read_image_folder(tmp_path, strict=True)
