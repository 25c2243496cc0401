"""Instance bits end to end through the CLI: train, evaluate --near-duplicates, search, index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ahcl
from ahcl.cli import main
from ahcl.errors import RunError
from ahcl.index import HammingIndex

FAST = ["--backbone", "tiny_cnn", "--bits", "32", "--set", "outer_iters=1", "--set", "hidden=16",
        "--workers", "0"]


@pytest.fixture(scope="module")
def split_run(synthetic_scenes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("split") / "run"
    assert main(["train", "--data", str(synthetic_scenes), "--out", str(out), *FAST]) == 0
    return out


def test_default_split_and_what_the_run_holds(split_run, capsys):
    run = ahcl.load_run(split_run)
    assert (run.semantic_bits, run.instance_bits) == (8, 24)
    info = json.loads((split_run / "run.json").read_text())
    assert (info["version"], info["semantic_bits"], info["instance_bits"]) == (2, 8, 24)
    # The stored instance part is the projection of the database images' own features.
    enc = run.encoder()
    np.testing.assert_array_equal(run.db_codes[:, 1:], enc.instance_codes(run.db_paths))
    # A query's code is its semantic code followed by its instance code, one forward pass.
    codes = run.encode(run.db_paths[:3])
    np.testing.assert_array_equal(codes[:, 1:], run.db_codes[:3, 1:])


def test_instance_bits_zero_is_the_method_alone(synthetic_scenes, tmp_path, capsys):
    out = tmp_path / "plain"
    assert main(["train", "--data", str(synthetic_scenes), "--out", str(out), *FAST,
                 "--instance-bits", "0", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["semantic_bits"], summary["instance_bits"]) == (32, 0)
    run = ahcl.load_run(out)
    assert run.instance is None and not (out / "instance.npz").exists()
    assert run.search(run.db_paths[:1], k=2)[0][0].instance_distance is None


@pytest.mark.parametrize("value, words", [("12", "multiple of 8"), ("32", "at least 8 semantic"),
                                          ("x", "not 'auto' or an integer")])
def test_bad_instance_bits_are_one_line_and_write_nothing(synthetic_scenes, tmp_path, capsys,
                                                          value, words):
    out = tmp_path / "bad"
    code = main(["train", "--data", str(synthetic_scenes), "--out", str(out), *FAST,
                 "--instance-bits", value])
    assert code in (1, 2)
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_near_duplicates(split_run, capsys):
    assert main(["evaluate", str(split_run), "--near-duplicates", "12", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    near = body["near_duplicates"]
    assert near["n"] == 12 and 1 <= near["mean_rank"] <= 60
    assert set(near["recall_at"]) == {"1", "10", "60"}  # 100 clipped to the 60 database items
    assert body["semantic_bits"] == 8 and body["instance_bits"] == 24
    assert main(["evaluate", str(split_run), "--near-duplicates", "5"]) == 0
    text = capsys.readouterr().out
    assert "8 semantic + 24 instance" in text and "near-duplicates 5:" in text
    # The same protocol through the library gives the same numbers.
    again = ahcl.load_run(split_run).near_duplicates(12)
    assert again.to_dict() == near
    assert main(["evaluate", str(split_run), "--near-duplicates", "-1"]) == 1


def test_search_and_index_use_the_split(split_run, tmp_path, capsys):
    run = ahcl.load_run(split_run)
    assert main(["search", str(split_run), run.db_paths[0], "-k", "4"]) == 0
    assert "inst=" in capsys.readouterr().out
    index_path = tmp_path / "a.index"
    assert main(["index", "build", str(split_run), "--out", str(index_path)]) == 0
    capsys.readouterr()
    assert main(["index", "info", str(index_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format_version"], info["semantic_bits"], info["instance_bits"]) == (2, 8, 24)
    assert main(["search", str(index_path), run.db_paths[0], "--run", str(split_run), "-k", "4",
                 "--json"]) == 0
    from_index = json.loads(capsys.readouterr().out)["queries"][0]["hits"]
    from_run = [h.to_dict() for h in run.search(run.db_paths[:1], k=4)[0]]
    assert [(h["id"], h["distance"], h["instance_distance"]) for h in from_index] == \
        [(h["id"], h["distance"], h["instance_distance"]) for h in from_run]
    # A plain index of the same width is not what this run makes: one clear line.
    plain = tmp_path / "plain.index"
    HammingIndex(32).save(plain)
    assert main(["search", str(plain), run.db_paths[0], "--run", str(split_run)]) == 1
    assert "8 semantic + 24 instance" in capsys.readouterr().err


def test_damaged_instance_projection_is_refused(split_run, tmp_path):
    copy = Path(shutil.copytree(split_run, tmp_path / "run"))
    with open(copy / "instance.npz", "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    with pytest.raises(RunError, match="instance.npz"):
        ahcl.load_run(copy)
