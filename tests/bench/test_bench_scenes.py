"""``benchmarks/bench_scenes.py --quick`` end to end on two tiny scenes built from RSSCN7 chips:
the JSON it writes has every figure, in the right relations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("rasterio", reason="rasterio is needed to write and tile the GeoTIFF scenes")

SIZES = (512, 384)  # 2 x 2 tiles and 1 tile of 256
CACHEMAX = 16


@pytest.mark.slow  # six fresh interpreters (per scene: two GDAL cache settings, one without workers)
def test_quick_run_writes_every_field(tmp_path: Path, rsscn7_dir: Path) -> None:
    out = tmp_path / "scenes.json"
    env = {**os.environ, "AHCL_CACHE": str(tmp_path / "cache"), "AHCL_PROGRESS": "0"}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_scenes.py"), "--quick",
         "--sizes", ",".join(map(str, SIZES)), "--gdal-cachemax", str(CACHEMAX),
         "--workers", "2", "--data", str(rsscn7_dir), "--workdir", str(tmp_path / "work"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("cpu: ") and "tiles/s" in done.stdout
    r = json.loads(out.read_text())
    assert r["quick"] and r["content"] == "rsscn7" and r["chips"] > 0
    assert r["cpu"]["cores"] >= 1 and set(r["cpu"]["flags"] or {}) >= {"avx2", "popcnt"}
    assert r["command"].startswith("python benchmarks/bench_scenes.py --quick")
    assert r["backbone"] == "tiny_cnn" and r["n_bits"] == 64 and r["tile"] == r["stride"] == 256
    assert "ru_maxrss" in r["memory_method"]
    assert [s["side"] for s in r["scenes"]] == list(SIZES)
    # 384 px: one tile fits, the other 3 grid positions cross the edge
    for scene, tiles, edge in zip(r["scenes"], (4, 1), (0, 3)):
        assert scene["file_mb"] > 0
        assert [m["gdal_cachemax"] for m in scene["measured"]] == [
            os.environ.get("GDAL_CACHEMAX"), str(CACHEMAX), str(CACHEMAX)]
        assert [m["workers"] for m in scene["measured"]] == [0, 0, 2]  # CPU: read in-process
        for m in scene["measured"]:
            assert (m["tiles"], m["edge_skipped"], m["nodata_skipped"]) == (tiles, edge, 0)
            assert 0 < m["read_s"] and 0 < m["encode_s"] <= m["total_s"]
            # encode_s and total_s are rounded to 1 ms; quick runs last milliseconds, so the
            # share recomputed from them is only good to that rounding's error.
            e, t = m["encode_s"], m["total_s"]
            slack = 0.001 + 0.0005 * (1 / t + e / t ** 2)
            assert abs(m["encode_share"] - e / t) <= slack
            assert 0 < m["read_share"] and 0 < m["encode_share"] <= 1
            assert m["tiles_s"] > 0 and m["read_tiles_s"] > 0 and m["encode_tiles_s"] > 0
            rates = m["encode_batch_tiles_s"]
            assert rates["batches"] == 1 and 0 < rates["median"] <= rates["best"]
            assert m["read_cpu_s"] > 0 and m["total_cpu_s"] > 0
            assert m["repeats"] == 1 and m["runs"] == {"read_s": [m["read_s"]],
                                                       "total_s": [m["total_s"]]}
            assert 0 < m["rss_after_warmup_mb"] <= m["peak_rss_mb"]
    for key in ("gdal_default", f"gdal_cachemax_{CACHEMAX}"):
        assert set(r["memory"][key]["peak_rss_mb"]) == {str(s) for s in SIZES}
        assert r["memory"][key]["largest_over_smallest"] > 0
    assert not any(p for p in tmp_path.iterdir() if p.name not in ("scenes.json", "work", "cache"))
