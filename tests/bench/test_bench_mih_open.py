"""``benchmarks/bench_mih_open.py --quick`` end to end: every case measured, the results equal to
the flat scan's, the CPU printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

CASES = ["rebuild", "first start", "mapped", "mapped, verified"]


@pytest.mark.slow  # two fresh interpreters that load the index kernels
def test_quick_run_measures_every_case(tmp_path: Path) -> None:
    script = REPO / "benchmarks" / "bench_mih_open.py"
    env = {**os.environ, "AHCL_PROGRESS": "0"}
    common = ["--quick", "--n", "20000", "--nq", "16", "--workdir", str(tmp_path)]
    done = subprocess.run([sys.executable, str(script), *common, "--json"], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout)
    assert r["identical_to_flat"] and r["n"] == 20000 and r["n_bits"] == 64 and r["repeat"] == 1
    assert r["cpu"]["model"] and r["cpu"]["best_path"] and r["numba_threads"] >= 1
    assert r["file_bytes"] > 20000 * 8 and r["tables_bytes"] > 20000 * 8
    assert list(r["cases"]) == CASES
    for case in r["cases"].values():
        best = case["best"]
        assert 0 < best["open_s"] <= best["restart_s"] and best["later_search_s"] > 0
        assert best["restart_s"] == pytest.approx(best["open_s"] + best["first_search_s"])
    assert r["speedup_mapped_vs_rebuild"] > 0
    assert list(tmp_path.iterdir()) == []  # the temporary index is gone
    shown = subprocess.run([sys.executable, str(script), *common], capture_output=True,
                           text=True, timeout=600, env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.startswith("cpu: ") and "| mapped |" in shown.stdout
