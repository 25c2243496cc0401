"""Several server processes over one archive (``ahcl serve --workers N``): an item added through
one is found through any other as soon as its addition is answered, and ids never clash."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import httpx2 as httpx
import pytest

from ahcl.cli import main
from ahcl.serve import Archive
from ahcl.serve.offload import run_blocking
from ahcl.serve.uploads import decode_uploads
from ahcl.serve.workers import CONFIG_ENV, WorkerConfig, app_from_env
from tests.serve._server import free_port, serve_process, wait_healthy
from tests.serve.conftest import TOKEN, noise_png


def _add(archive: Archive, seed: int) -> int:
    return archive.add(decode_uploads([noise_png(seed)], 10**6))[0]["id"]


@pytest.mark.parametrize("persisted", [False, True])
def test_an_addition_through_one_archive_is_read_at_once_through_another(
        run_dir: Path, persisted: bool) -> None:
    """Two archives over the same files, as two workers have: reads catch up before answering
    (``persisted=False``: a run folder whose index file the first addition writes)."""
    if persisted:
        Archive.open(run_dir).add(decode_uploads([noise_png(99)], 10**6))  # writes the file
    a, b = Archive.open(run_dir), Archive.open(run_dir)
    ids = []
    for seed in range(6):
        writer, reader = (a, b) if seed % 2 else (b, a)
        new = _add(writer, seed)
        assert reader.item(new)["uploaded"]  # no wait, no refresh call
        assert any(h.id != new for h in reader.search(reader.code_of(new), 3, exclude=new))
        assert len(reader) == len(writer)
        ids.append(new)
    assert len(set(ids)) == len(ids)


def _fresh_table(archive: Archive) -> dict[str, set[int]]:
    """The uploads-by-content table built from scratch from the archive's current snapshot."""
    archive._current()
    saved, archive._uploads = archive._uploads, None
    try:
        return archive._upload_ids()
    finally:
        archive._uploads = saved


def test_another_archives_changes_keep_the_uploads_table_without_a_rebuild(run_dir: Path
                                                                         ) -> None:
    """What one archive (another worker, the writer process) adds and deletes updates the
    other's table of uploads by content in place: its next deletion does not build it again,
    and shared files go only with their last owner. A file rewritten by a compaction drops it."""
    Archive.open(run_dir).add(decode_uploads([noise_png(99)], 10**6))  # writes the file
    a, b = Archive.open(run_dir), Archive.open(run_dir)
    mine = a.add(decode_uploads([noise_png(1)], 10**6))[0]["id"]
    table = a._upload_ids()  # built once
    theirs = b.add(decode_uploads([noise_png(1), noise_png(2)], 10**6))  # shares 1's file
    shared, alone = theirs[0]["id"], theirs[1]["id"]
    a._current()
    assert a._uploads is table and table == _fresh_table(a)
    files = sorted((run_dir / "archive.images").iterdir())
    b.delete(shared)  # a's item still holds the file
    a._current()
    assert a._uploads is table and table == _fresh_table(a)
    assert sorted((run_dir / "archive.images").iterdir()) == files
    a.delete(alone)  # added by b, known to a without a rebuild: its file goes
    a.delete(mine)  # the last owner of the shared file
    assert a._uploads is table and table == _fresh_table(a)
    assert len(list((run_dir / "archive.images").iterdir())) == len(files) - 2
    again = b.add(decode_uploads([noise_png(3)], 10**6))[0]["id"]
    b._store.compact()  # the file is rewritten: a reopens it, and builds the table again
    a._current()
    assert a._uploads is None
    assert any(again in ids for ids in a._upload_ids().values())


def test_run_blocking_runs_off_the_loop_and_raises_there() -> None:
    def where() -> str:
        return threading.current_thread().name

    def fail() -> None:
        raise KeyError("x")

    async def go() -> str:
        with pytest.raises(KeyError):
            await run_blocking(fail)
        return await run_blocking(where)

    assert asyncio.run(go()).startswith("ahcl-request")


def test_worker_app_comes_from_the_environment(run_dir: Path, monkeypatch) -> None:
    config = WorkerConfig(source=str(run_dir), settings={"token": TOKEN}, torch_threads=1)
    monkeypatch.setenv(CONFIG_ENV, config.to_env())
    app = app_from_env()
    assert app.state.settings.token == TOKEN
    assert len(app.state.archive) == len(Archive.open(run_dir))
    assert WorkerConfig.from_env(config.to_env()) == config


def test_bad_workers_is_one_line(run_dir: Path, capsys) -> None:
    assert main(["serve", str(run_dir), "--workers", "0"]) == 1
    assert "--workers" in capsys.readouterr().err


def test_a_bad_source_stops_before_any_worker_starts(tmp_path: Path, tiny_run_dir: Path,
                                                    capsys) -> None:
    (tmp_path / "x.index").write_bytes(b"")
    assert main(["serve", str(tmp_path / "x.index"), "--run", str(tiny_run_dir), "--workers",
                 "2", "--port", str(free_port())]) == 1
    assert "truncated index file" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def test_two_worker_processes_serve_one_archive(run_dir: Path) -> None:
    n0 = len(Archive.open(run_dir))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve_process(str(run_dir), "--port", str(port), "--token", TOKEN, "--workers", "2")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_healthy(url, proc)
        ids = []
        for seed in range(16):
            # a new connection per request: each may land on either worker
            r = httpx.post(f"{url}/api/items", headers=auth, timeout=60,
                           files={"image": (f"{seed}.png", noise_png(seed))})
            assert r.status_code == 201, r.text
            new = r.json()["items"][0]["id"]
            ids.append(new)
            assert httpx.get(f"{url}/api/items/{new}", timeout=60).status_code == 200
            found = httpx.post(f"{url}/api/search", json={"id": new, "k": 5}, timeout=60)
            assert found.status_code == 200 and found.json()["query"]["id"] == new
            assert httpx.get(f"{url}/api/info", timeout=60).json()["items"] == n0 + seed + 1
        assert len(set(ids)) == len(ids)
        assert sum(1 for c in _children(proc.pid)
                   if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert len(Archive.open(run_dir)) == n0 + 16
