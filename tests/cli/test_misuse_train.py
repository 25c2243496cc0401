"""Misuse of ``ahcl train``: every bad value is one line, exit 1, and nothing on disk changes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ahcl.cli import main
from ahcl.config import config_from_dict, parse_set
from ahcl.errors import AhclError


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (and the folders, as empty entries)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root) + "/"] = ""
        for f in files:
            p = os.path.join(folder, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), "--backbone", "tiny_cnn",
                 "--bits", "16", "--set", "outer_iters=1", "--set", "hidden=16", *extra])


BAD = [
    ("lr=.inf", "lr must be a finite number > 0"), ("lam=.inf", "lam must be a finite number"),
    ("lam=.nan", "lam must be"), ("gamma=.nan", "gamma must be"),
    ("num_samples=0", "num_samples must be an integer >= 1"),
    ("code_sweeps=0", "code_sweeps must be an integer >= 1"),
    ("n_bits=16.0", "n_bits must be a positive multiple of 8"),
    ("outer_iters=1.5", "outer_iters must be an integer"), ("hidden=-5", "hidden must be"),
    ("dropout=2", "dropout must be a finite number >= 0 and < 1"),
    ("num_samples=-5", "num_samples must be"),
    ("batch_size_features=0", "batch_size_features must be an integer >= 1"),
    ("lr=.nan", "lr must be"), ("weight_decay=.nan", "weight_decay must be"),
    ("n_bits=100000", "at most 4096"), ("seed=-1", "seed must be an integer >= 0"),
    ("lr_milestones=3", "lr_milestones must be a list of integers"),
    ("pretrained=maybe", "pretrained must be true or false"),
]


@pytest.mark.parametrize("setting, message", BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_one_line_and_write_nothing(synthetic_scenes, tmp_path, capsys,
                                                   setting, message):
    before = snapshot(tmp_path)
    assert _train(synthetic_scenes, tmp_path / "run", "--set", setting) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert snapshot(tmp_path) == before


def test_yaml_config_that_is_a_folder_or_binary(synthetic_scenes, tmp_path, capsys):
    (tmp_path / "cfg.d").mkdir()
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    before = snapshot(tmp_path)
    for cfg, text in (("cfg.d", "is a folder"), ("bin.yaml", "cannot be read")):
        assert _train(synthetic_scenes, tmp_path / "run", "--config", str(tmp_path / cfg)) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0], err
    assert snapshot(tmp_path) == before


def test_resume_checks_a_finished_run_and_refuses_foreign_folders(synthetic_scenes, tmp_path,
                                                                  capsys):
    run = tmp_path / "run"
    assert _train(synthetic_scenes, run) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert _train(synthetic_scenes, run, "--method", "adsh", "--resume") == 1
    assert "made with another config" in capsys.readouterr().err
    assert _train(synthetic_scenes, run, "--resume") == 0  # the same run: just loaded
    capsys.readouterr()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own files")
    before = snapshot(tmp_path)
    assert _train(synthetic_scenes, mine, "--resume") == 1
    assert "not an ahcl run folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    before = snapshot(tmp_path)
    assert _train(synthetic_scenes, tmp_path / "afile") == 1
    assert "is a file" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_diverging_loss_stops_with_the_iteration(synthetic_scenes, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(synthetic_scenes, run, "--set", "lr=1e30", "--set", "outer_iters=3",
                  "--set", "optimizer=sgd") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ahcl:")]
    assert len(err) == 1 and "training diverged" in err[0] and "outer iteration 2" in err[0]
    assert "checkpoint" in err[0] and (run / "checkpoint.pt").exists()
    assert not (run / "run.json").exists()


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.lists(st.integers(-3, 3), max_size=3))
_KEYS = st.sampled_from(["n_bits", "lam", "gamma", "lr", "outer_iters", "epochs", "num_samples",
                         "batch_size", "hidden", "dropout", "code_sweeps", "seed", "weight_decay",
                         "similarity", "optimizer", "lr_milestones", "query_fraction",
                         "batch_size_features", "num_workers", "pretrained", "strict",
                         "device", "precision", "augment", "mode"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, max_size=3))
def test_fuzzed_settings_are_accepted_or_refused_cleanly(values):
    """Any mix of values either validates or raises an AhclError, never anything else."""
    try:
        config_from_dict({"data": "x", **values}).validate()
    except AhclError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_fuzzed_set_strings_parse_or_refuse(text):
    try:
        parse_set([text])
    except AhclError:
        pass
