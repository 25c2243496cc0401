"""``benchmarks/bench_device.py --smoke``: the prepared accelerator benchmark runs end to end on
the CPU at a tiny size (the real run needs a GPU: see the README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_bench_device_smoke(tmp_path):
    env = {**os.environ, "AHCL_CACHE": str(tmp_path / "cache"), "AHCL_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_device.py"),
                           "--smoke", "--device", "cpu", "--out", str(tmp_path / "out"),
                           "--data", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["method"] for r in results["finetune"]} == {"ahcl", "adsh", "dpsh"}
    assert all(0 <= r["map"] <= 1 for r in results["finetune"])
    assert results["encode"]["images"] > 0 and results["encode"]["images_per_s"] > 0
    assert results["code_step"]["bits_equal"] > 0.999
    text = (tmp_path / "out" / "results.md").read_text()
    assert "## Code step" in text and results["machine"]["device"] == "cpu"
