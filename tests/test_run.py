"""The run folder's integrity: every file is checksummed in run.json (what a damaged file gets:
tests/misuse/test_cli.py, item 10)."""

from __future__ import annotations

import json


def test_every_file_is_listed(tiny_run) -> None:
    files = json.loads((tiny_run / "run.json").read_text())["files"]
    assert set(files) == {"config.json", "split.json", "model.pt", "db_codes.npy", "db.json",
                          "code_state.npz", "instance.npz"}
