"""Two processes on 127.0.0.1 (torchrun --standalone, gloo): training, the sharded code step,
the feature cache, sharded encoding and recovery after one rank is killed.

Every launch pays for two Python processes importing torch, so each launch checks several things.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ahcl
from ahcl.cli import main
from ahcl.methods.solver import code_step, database_stats

from ._worker import code_step_inputs

pytestmark = pytest.mark.slow  # every test here launches torchrun (two Python processes)

WORKER = Path(__file__).with_name("_worker.py")
# Without dropout: ranks draw their own masks, which would make the runs differ by more than rounding.
FAST = ["--backbone", "tiny_cnn", "--bits", "16", "--set", "outer_iters=3", "--set", "hidden=32",
        "--set", "dropout=0"]
#: |mAP(2 ranks) − mAP(1 rank)| allowed. The two runs differ only by float rounding (the slices'
#: losses are summed by DDP instead of in one batch) and per-rank dropout masks (none here), so
#: the codes agree almost bit for bit; 0.02 is a fraction of one query's AP on 12 queries.
MAP_TOLERANCE = 0.02


def torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` (a free port is picked by torchrun)."""
    env = {**os.environ, "AHCL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _map(run: Path, capsys) -> float:
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["map"]


@pytest.fixture(scope="module")
def collectives(synthetic_scenes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("collectives")
    _ok(torchrun(str(WORKER), "collectives", str(out), str(synthetic_scenes)))
    return out


def test_all_reduce_and_gather(collectives):
    np.testing.assert_array_equal(np.load(collectives / "all_reduce.npy"), np.arange(4) * 3)
    np.testing.assert_array_equal(np.load(collectives / "gathered.npy"),
                                  [[0, 0], [1, 1], [1, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sharded_code_step_equals_one_process(collectives, dtype):
    x = code_step_inputs()
    V = x["V"].copy()
    code_step(V, x["U"], x["omega"], x["labels"], x["K"], x["r"], x["lam"], sweeps=2, dtype=dtype)
    got = np.load(collectives / f"code_step_{np.dtype(dtype).name}.npz")
    assert not np.array_equal(V, x["V"])  # the step did something
    np.testing.assert_array_equal(got["V"], V)


def test_reduced_database_stats_equal_one_process(collectives):
    x = code_step_inputs()
    whole = database_stats(x["V"], x["labels"], x["K"])
    got = np.load(collectives / "db_stats.npz")
    for name in ("gram", "class_sums", "total", "class_counts"):
        np.testing.assert_array_equal(got[name], getattr(whole, name), err_msg=name)


def test_feature_cache_with_two_writers(collectives, synthetic_scenes):
    from ahcl.models.backbones import create_backbone
    from ahcl.models.features import FeatureCache, content_key, extract_features

    paths = sorted(str(p) for p in Path(synthetic_scenes).rglob("*.png"))
    a, b = (np.load(collectives / f"features-{r}.npy") for r in (0, 1))
    fresh = extract_features(paths, "tiny_cnn", pretrained=False,
                             cache_dir=collectives / "fresh-cache", batch_size=8)
    np.testing.assert_array_equal(a, fresh)
    np.testing.assert_array_equal(b, fresh)
    backbone = create_backbone("tiny_cnn", pretrained=False)
    with FeatureCache.for_backbone(backbone, collectives / "cache") as cache:
        feats, found = cache.get_many([content_key(p) for p in paths])
        assert found.all() and cache.n_bad_records == 0
        assert len(cache.segments()) == 2  # one segment per writer
        np.testing.assert_array_equal(feats, fresh)


def test_adsh_two_ranks_matches_one(collectives, synthetic_scenes, tmp_path, capsys):
    one = ahcl.train(tmp_path / "adsh", data=str(synthetic_scenes), method="adsh",
                     backbone="tiny_cnn", n_bits=16, outer_iters=3, hidden=32, similarity="hard",
                     num_samples=40, batch_size=12, dropout=0.0)  # Ω ⊂ database; uneven batch
    two = ahcl.load_run(collectives / "adsh")
    assert two.method == "adsh" and len(two.db_labels) == len(one.db_labels)
    assert abs(_map(collectives / "adsh", capsys) - _map(one.path, capsys)) <= MAP_TOLERANCE


def test_ahcl_cli_two_ranks_matches_one(synthetic_scenes, tmp_path, capsys):
    proc = _ok(torchrun("-m", "ahcl", "train", "--data", str(synthetic_scenes),
                        "--out", str(tmp_path / "two"), *FAST, "--json"))
    assert json.loads(proc.stdout)["n_db"] == 60  # printed once, by rank 0
    assert main(["train", "--data", str(synthetic_scenes), "--out", str(tmp_path / "one"),
                 *FAST]) == 0
    two, one = ahcl.load_run(tmp_path / "two"), ahcl.load_run(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "timings.json").read_text())["processes"] == 2
    assert not (tmp_path / "two" / "checkpoint.pt").exists()
    np.testing.assert_array_equal(two.db_labels, one.db_labels)
    assert abs(_map(two.path, capsys) - _map(one.path, capsys)) <= MAP_TOLERANCE
    # The same objective, summed in another order: the losses agree to float32 rounding.
    rows = [[json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()]
            for p in (two.path, one.path)]
    for key in ("loss", "loss_pair", "loss_quant", "loss_ce"):
        np.testing.assert_allclose([r[key] for r in rows[0]], [r[key] for r in rows[1]],
                                   rtol=1e-4, err_msg=key)
