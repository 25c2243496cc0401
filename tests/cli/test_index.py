"""``ahcl index`` in-process, with a fake run standing in for ``ahcl.run.load_run``
(patched where the verb module looks it up)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ahcl.cli import index as index_cli
from ahcl.cli import main
from ahcl.errors import RunError
from ahcl.index import HammingIndex

N_BITS = 32


class FakeRun:
    """The slice of the run contract the index CLI uses; codes are a hash of the path."""

    def __init__(self, n_bits: int = N_BITS) -> None:
        self.n_bits = n_bits
        self.classes = ["forest", "river"]
        rng = np.random.default_rng(0)
        self.db_codes = rng.integers(0, 256, size=(6, n_bits // 8), dtype=np.uint8)
        self.db_labels = np.array([0, 0, 1, 1, 0, 1], dtype=np.int64)
        self.db_paths = [f"/data/img{j}.tif" for j in range(6)]
        self.labelled_calls: list[list[int]] = []
        self.semantic_bits = n_bits

    def new_index(self) -> HammingIndex:
        return HammingIndex(self.n_bits)

    def check_index(self, index: HammingIndex, where: object) -> None:
        if index.n_bits != self.n_bits:
            raise RunError(f"run makes {self.n_bits}-bit codes but {where} holds "
                           f"{index.n_bits}-bit codes")

    def encode(self, paths: list[str]) -> np.ndarray:
        return np.array([[len(p) % 256] * (self.n_bits // 8) for p in paths], dtype=np.uint8)

    def codes_for_labelled(self, paths: list[str], labels: np.ndarray) -> np.ndarray:
        self.labelled_calls.append(labels.tolist())
        return np.full((len(paths), self.n_bits // 8), 255, dtype=np.uint8)


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    run = FakeRun()
    monkeypatch.setattr(index_cli, "load_run", lambda path, **options: run)
    return run


def test_build_info_add(tmp_path: Path, fake_run: FakeRun, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "db.ahix"
    assert main(["index", "build", "RUN", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["index", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["n"], info["n_bits"], info["labelled"], info["classes"]) == (6, N_BITS, 6, 2)
    index = HammingIndex.load(out)
    np.testing.assert_array_equal(index.labels, fake_run.db_labels)
    assert index.meta_of([2]) == [{"path": "/data/img2.tif"}]

    img = tmp_path / "new.tif"
    assert main(["index", "add", str(out), str(img), "--run", "RUN", "--label", "river",
                 "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["ids"] == [6] and added["n"] == 7
    assert fake_run.labelled_calls == [[1]]
    assert main(["index", "add", str(out), str(img), str(img) + "2", "--run", "RUN"]) == 0
    index = HammingIndex.load(out)
    assert index.labels_of([6, 7, 8]).tolist() == [1, -1, -1]
    assert index.meta_of([6]) == [{"path": str(img.resolve())}]
    d, i = index.search(np.full((1, N_BITS // 8), 255, np.uint8), 1)
    assert (d[0, 0], i[0, 0]) == (0, 6)
    assert main(["index", "info", str(out)]) == 0
    assert "n_bits" in capsys.readouterr().out


def test_user_errors_exit_1(tmp_path: Path, fake_run: FakeRun,
                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "db.ahix"
    assert main(["index", "info", str(out)]) == 1
    assert "no such index file" in capsys.readouterr().err
    assert main(["index", "build", "RUN", "--out", str(out)]) == 0
    assert main(["index", "add", str(out), "x.tif", "--run", "RUN", "--label", "desert"]) == 1
    assert "unknown class 'desert'" in capsys.readouterr().err
    fake_run.n_bits = 64
    assert main(["index", "add", str(out), "x.tif", "--run", "RUN"]) == 1
    assert "64-bit codes" in capsys.readouterr().err
    out.write_bytes(out.read_bytes()[:-5])
    assert main(["index", "info", str(out)]) == 1
    assert "truncated" in capsys.readouterr().err
    assert main(["index"]) == 2
