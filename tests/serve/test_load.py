"""A short load run against a real server on 127.0.0.1: 16 clients mixing searches and additions
(the 20 s version with latencies is benchmarks/bench_serve.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ahcl.run import load_run
from ahcl.serve import Archive, ServeSettings, create_app
from benchmarks.loadgen import run_load
from tests.serve._server import ServerThread
from tests.serve.conftest import TOKEN, noise_png

pytestmark = pytest.mark.slow


def test_concurrent_searches_and_additions_lose_nothing(run_dir: Path) -> None:
    run = load_run(run_dir)
    queries = [Path(p).read_bytes() for p in run.db_paths[::9]]
    archive = Archive.open(run_dir)
    with ServerThread(create_app(archive, ServeSettings(token=TOKEN))) as server:
        report = run_load(server.url, clients=16, seconds=3.0, query_images=queries,
                          new_image=lambda n: noise_png(1000 + n, size=24), token=TOKEN,
                          add_fraction=0.3, seed=0)
    assert report.errors == []
    assert len(report.search_s) > 0 and len(report.add_s) > 0
    added = sorted(report.added_ids)
    assert len(set(added)) == len(added) == len(report.add_s)
    assert len(archive) == 72 + len(added)
    reopened = Archive.open(run_dir)  # every addition reached the file
    assert len(reopened) == 72 + len(added)
    client = TestClient(create_app(reopened, ServeSettings()), base_url="http://127.0.0.1:8000")
    assert all(client.get(f"/api/items/{i}").status_code == 200 for i in added)
    assert len(list((run_dir / "archive.images").iterdir())) == len(added)
