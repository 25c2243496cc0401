"""`ahcl datasets ...` run in-process through ahcl.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ahcl.cli import main


def test_list_table_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["datasets", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ucmerced" in out and "2,100" in out and "present" in out
    assert main(["datasets", "list", "--root", str(tmp_path), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert rows["resisc45"]["classes"] == 45 and rows["resisc45"]["present"] is False


def test_synthetic_then_info(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "syn"
    assert main(["datasets", "synthetic", "--out", str(out), "--per-class", "2", "--size",
                 "16", "--seed", "3", "--classes", "water,forest,roads"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    (out / "water" / "broken.png").write_text("not a png")
    assert main(["datasets", "info", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == {"forest": 2, "roads": 2, "water": 2}
    assert report["skipped"][0]["path"] == "water/broken.png"
    assert main(["datasets", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "6 images in 3 classes" in text and "water/broken.png" in text
    assert main(["datasets", "info", str(out), "--strict"]) == 1
    assert "broken.png" in capsys.readouterr().err


def test_user_errors_exit_1_with_one_line(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    assert main(["datasets", "download", "nope", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ahcl: error: unknown dataset") and err.count("\n") == 1
    assert main(["datasets", "download", "aid", "--root", str(tmp_path)]) == 1
    assert "captain-whu.github.io/AID" in capsys.readouterr().err
    assert main(["datasets", "info", str(tmp_path / "missing")]) == 1
    assert main(["datasets", "synthetic"]) == 2  # --out is required: usage error
