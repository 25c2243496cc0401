"""The registered public datasets: complete, consistent records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ahcl.data.registry import default_root, get_dataset, list_datasets
from ahcl.errors import DatasetError

EXPECTED = {"ucmerced": (21, 2100), "aid": (30, 10000), "resisc45": (45, 31500),
            "whu_rs19": (19, 1005), "rsscn7": (7, 2800), "patternnet": (38, 30400),
            "eurosat": (10, 27000)}


def test_records_are_complete() -> None:
    infos = {d.name: d for d in list_datasets()}
    assert EXPECTED.keys() <= infos.keys()
    for name, (n_classes, n_images) in EXPECTED.items():
        d = infos[name]
        assert (len(d.classes), d.n_images) == (n_classes, n_images), name
        assert list(d.classes) == sorted(set(d.classes)), name  # folder-reader order
        assert d.md5 is None or re.fullmatch(r"[0-9a-f]{32}", d.md5), name
        assert d.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", d.sha256), name
        assert d.url is None or d.url.startswith("https://"), name
        assert d.filename and d.license and d.citation and d.homepage, name


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'nope'; known: aid, eurosat"):
        get_dataset("nope")
    assert get_dataset("ucmerced").folder == "UCMerced_LandUse/Images"


def test_default_root_honours_environment(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("AHCL_DATA", str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.delenv("AHCL_DATA")
    assert default_root() == Path.home() / ".cache" / "ahcl" / "datasets"
