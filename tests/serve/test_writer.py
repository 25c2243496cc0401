"""Additions in a writer process (#14): the archive's additions run in a spawned child at a
lower CPU priority, and the server process sees them as soon as they are answered."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from ahcl.index import HammingIndex
from ahcl.serve import Archive, ServeSettings, create_app
from ahcl.serve.uploads import UploadError, decode_uploads
from ahcl.errors import AhclError
from ahcl.serve.writer import WRITER_NICE, WriterError, WriterProcess
from tests.serve._server import wait_exited
from tests.serve.conftest import TOKEN, noise_png

MAX_PIXELS = 10**7


@pytest.fixture()
def archive(run_dir: Path):
    archive = Archive.open(run_dir, writer=True)
    yield archive
    archive.close()


def test_additions_run_in_a_lower_priority_process_and_are_seen_at_once(archive, run_dir):
    pid = archive._writer.pid
    assert pid is not None and pid != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(os.nice(0) + WRITER_NICE, 19)
    before = len(archive)
    datas = [noise_png(1), noise_png(2)]
    items = archive.add_files(datas, MAX_PIXELS)
    ids = [it["id"] for it in items]
    assert len(set(ids)) == 2 and min(ids) >= before
    assert len(archive) == before + 2  # this process caught up before answering
    # The codes the child stored are the ones this process's network gives the same images.
    expected = archive.encode([u.image for u in decode_uploads(datas, MAX_PIXELS)])
    np.testing.assert_array_equal(np.concatenate([archive.code_of(i) for i in ids]), expected)
    assert ids[0] in [h.id for h in archive.search(expected[:1], k=len(archive), radius=0)]
    # The run folder's index file was written by the child; its images are stored.
    on_disk = HammingIndex.load(run_dir / "archive.index")
    assert set(ids) <= set(on_disk.ids.tolist())
    assert len(list((run_dir / "archive.images").iterdir())) == 2
    # A labelled addition goes the same way (the database-code step of that class).
    labelled = archive.add_files([noise_png(3)], MAX_PIXELS, label=1)
    assert labelled[0]["label"] == 1 and labelled[0]["id"] > max(ids)


def test_a_refused_upload_is_the_same_error_and_adds_nothing(archive):
    before = len(archive)
    with pytest.raises(UploadError) as got:
        archive.add_files([b"not an image at all"], MAX_PIXELS)
    with pytest.raises(UploadError) as inline:
        decode_uploads([b"not an image at all"], MAX_PIXELS)
    assert (got.value.status, str(got.value)) == (inline.value.status, str(inline.value)) \
        and got.value.status == 415
    with pytest.raises(UploadError, match="over the limit"):
        archive.add_files([noise_png(4, size=64)], max_pixels=100)
    assert len(archive) == before


def test_a_killed_writer_is_replaced_and_ids_are_never_reused(archive):
    first = archive.add_files([noise_png(5)], MAX_PIXELS)[0]["id"]
    pid = archive._writer.pid
    os.kill(pid, signal.SIGKILL)
    wait_exited(pid)
    deadline = time.monotonic() + 10  # the reply thread notices the closed pipe
    while archive._writer._conn is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert archive._writer._conn is None  # noticed: the next addition starts a new child
    second = archive.add_files([noise_png(6)], MAX_PIXELS)[0]["id"]
    assert archive._writer.pid not in (None, pid)
    assert second > first and len({first, second}) == 2
    assert {first, second} <= set(archive.index.ids.tolist())


def test_close_lets_the_child_exit_and_refuses_later_additions(run_dir):
    archive = Archive.open(run_dir, writer=True)
    archive.add_files([noise_png(7)], MAX_PIXELS)
    pid = archive._writer.pid
    archive.close()
    wait_exited(pid, timeout=5)
    with pytest.raises(WriterError, match="closed"):
        archive.add_files([noise_png(8)], MAX_PIXELS)
    archive.close()  # idempotent


def test_a_child_that_cannot_open_the_archive_fails_with_its_message(tmp_path, tiny_run_dir):
    with pytest.raises(AhclError, match="neither a run folder nor an index file"):
        WriterProcess(Archive.open, tmp_path / "missing.index", run=tiny_run_dir)


def test_the_api_adds_through_the_writer_and_a_stopped_writer_is_a_503(archive, monkeypatch):
    client = TestClient(create_app(archive, ServeSettings(token=TOKEN)),
                        base_url="http://127.0.0.1:8000")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.post("/api/items", files={"image": ("a.png", noise_png(9))}, headers=auth)
    assert r.status_code == 201, r.text
    new = r.json()["items"][0]["id"]
    assert r.json()["count"] == len(archive)
    found = client.post("/api/search", json={"id": new, "k": 1}, headers=auth)
    assert found.status_code == 200 and client.get(f"/api/items/{new}").status_code == 200
    r = client.post("/api/items", files={"image": ("b.txt", b"plain text")}, headers=auth)
    assert r.status_code == 415 and "not an image" in r.json()["detail"]

    def stopped(*args, **kwargs):
        raise WriterError("the writer process stopped (exit code -9) during this addition")

    monkeypatch.setattr(archive._writer, "add_form", stopped)
    r = client.post("/api/items", files={"image": ("c.png", noise_png(10))}, headers=auth)
    assert r.status_code == 503 and "writer process stopped" in r.json()["detail"]
