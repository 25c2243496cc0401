"""The run folder's integrity: every file is checksummed in run.json and verified on load, and a
damaged file is one clear RunError (the CLI turns it into one line)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import ahcl
from ahcl.cli import main
from ahcl.errors import RunError


@pytest.fixture(scope="module")
def good_run(tiny_run) -> Path:
    return tiny_run


@pytest.fixture
def run(good_run, tmp_path) -> Path:
    return Path(shutil.copytree(good_run, tmp_path / "run"))


def test_every_file_is_listed(good_run) -> None:
    files = json.loads((good_run / "run.json").read_text())["files"]
    assert set(files) == {"config.json", "split.json", "model.pt", "db_codes.npy", "db.json",
                          "code_state.npz", "instance.npz"}


def _flip(path: Path, at: int = 200, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    for i in range(at, min(at + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.pt", "db.json", "code_state.npz", "split.json"])
def test_flipped_bytes_are_caught(run, name, capsys) -> None:
    _flip(run / name, at=10)
    with pytest.raises(RunError, match=f"{name} does not match its checksum"):
        ahcl.load_run(run)
    assert main(["evaluate", str(run)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _rewrite(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    path.write_text(json.dumps(edit(obj)))


@pytest.mark.parametrize("what, edit, message", [
    ("run.json", lambda o: [o], "not a JSON object"),
    ("run.json", lambda o: {k: v for k, v in o.items() if k != "n_bits"}, "lacks or garbles"),
    ("run.json", lambda o: {**o, "n_bits": "x"}, "lacks or garbles"),
    ("run.json", lambda o: {**o, "files": {"../x": "0"}}, "outside the run"),
])
def test_damaged_run_json(run, what, edit, message) -> None:
    _rewrite(run / what, edit)
    with pytest.raises(RunError, match=message):
        ahcl.load_run(run)


def test_labels_out_of_range_are_refused(run) -> None:
    def bad_labels(o):
        o["labels"][0] = 99
        return o

    _rewrite(run / "db.json", bad_labels)
    info = json.loads((run / "run.json").read_text())
    info["files"].pop("db.json")  # as a run written before checksums, so the label check runs
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="labels must be class ids"):
        ahcl.load_run(run)


def test_queries_of_one_class_are_a_valid_set(good_run, synthetic_scenes, tmp_path) -> None:
    shutil.copytree(synthetic_scenes / "forest", tmp_path / "q" / "forest")
    report = ahcl.load_run(good_run).evaluate(tmp_path / "q", topk=(10,))
    assert report.n_queries == len(list((tmp_path / "q" / "forest").iterdir()))
