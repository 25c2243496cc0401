"""Output paths and the machine refusing a write: one line, exit 1, nothing half-written."""

from __future__ import annotations

import contextlib
import errno
import socket
from pathlib import Path

import pytest

import ahcl
from ahcl.cli import encode as encode_cli
from ahcl.cli import main

from .test_misuse_train import snapshot


def _one_line(capsys, text: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and text in err[0], err


@pytest.fixture
def image(tiny_run) -> str:
    return ahcl.load_run(tiny_run, device="cpu").db_paths[0]


def test_encode_out_is_a_folder(tiny_run, image, tmp_path, capsys) -> None:
    before = snapshot(tmp_path)
    assert main(["encode", str(tiny_run), image, "--out", str(tmp_path)]) == 1
    _one_line(capsys, "is a folder: give a file name")
    assert snapshot(tmp_path) == before


def test_index_build_out_is_a_folder(tiny_run, tmp_path, capsys) -> None:
    assert main(["index", "build", str(tiny_run), "--out", str(tmp_path)]) == 1
    _one_line(capsys, "is a folder")


def test_out_under_a_file(tiny_run, image, tmp_path, capsys) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["encode", str(tiny_run), image, "--out", str(tmp_path / "f" / "c.npy")]) == 1
    _one_line(capsys, "is a file, not a folder")


def test_evaluate_plots_at_a_file(tiny_run, tmp_path, capsys) -> None:
    (tmp_path / "plots").write_text("x")
    assert main(["evaluate", str(tiny_run), "--plots", str(tmp_path / "plots")]) == 1
    _one_line(capsys, "is a file: give a folder")


def test_disk_full_is_one_line(tiny_run, image, tmp_path, capsys, monkeypatch) -> None:
    @contextlib.contextmanager
    def full(path, mode="wb"):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
        yield  # pragma: no cover

    monkeypatch.setattr(encode_cli, "atomic_write", full)
    assert main(["encode", str(tiny_run), image, "--out", str(tmp_path / "c.npy")]) == 1
    _one_line(capsys, "No space left on device")
    assert not (tmp_path / "c.npy").exists()


def test_serve_on_a_busy_port(tiny_run, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", str(tiny_run), "--port", str(port)]) == 1
    _one_line(capsys, f"cannot listen on 127.0.0.1:{port}")


def test_search_k_beyond_the_archive(tiny_run, image, tmp_path, capsys) -> None:
    index = tmp_path / "a.index"
    assert main(["index", "build", str(tiny_run), "--out", str(index)]) == 0
    capsys.readouterr()
    assert main(["search", str(index), image, "--run", str(tiny_run), "-k", "1000000000",
                 "--json"]) == 0
    import json

    hits = json.loads(capsys.readouterr().out)["queries"][0]["hits"]
    assert len(hits) == len(ahcl.load_run(tiny_run).db_labels)
    assert all(h["class"] is not None for h in hits)  # class names, not numeric labels


def test_a_damaged_model_says_why(tiny_run, tmp_path, capsys) -> None:
    import shutil

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    from ahcl.run import read_model
    from ahcl.errors import RunError

    (run / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(RunError) as err:
        read_model(run / "model.pt")
    assert "weights_only=False" not in str(err.value) and "only ever loaded as tensors" in str(
        err.value)
