"""Misuse that needs the app itself (ASGI-level body streaming, a token server, decoding
internals); the misuse table over real HTTP is tests/misuse/test_service.py."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from ahcl.serve import Archive, ServeSettings, create_app
from tests.serve.conftest import TOKEN, noise_png, png_bytes, snapshot

AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 20 * 2**20


@pytest.fixture()
def guarded(run_dir: Path):
    """(client, app, run_dir) with the disk snapshot checked unchanged after the test."""
    app = create_app(Archive.open(run_dir), ServeSettings(token=TOKEN, max_upload_bytes=LIMIT))
    before = snapshot(run_dir)
    yield TestClient(app, base_url="http://127.0.0.1:8000"), app, run_dir
    assert snapshot(run_dir) == before
    assert not (run_dir / "archive.index").exists()


def asgi_post(app, path: str, headers: list[tuple[bytes, bytes]], receive) -> list[dict]:
    """Call the app directly as ASGI (so the test controls how the body arrives)."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
             "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent


def test_body_limit_streams_and_stops_early(guarded) -> None:
    """Driven at the ASGI level with no Content-Length: the app stops pulling chunks just past
    the limit instead of reading 50 MB into memory first."""
    _, app, _ = guarded
    chunk = 2**20
    pulled = 0
    head = (b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n")

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        if pulled > 50:
            return {"type": "http.request", "body": b"\r\n--xyz--\r\n", "more_body": False}
        body = head if pulled == 1 else b"\0" * chunk
        return {"type": "http.request", "body": body, "more_body": True}

    sent = asgi_post(app, "/api/search",
                     [(b"content-type", b"multipart/form-data; boundary=xyz")], receive)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert pulled <= LIMIT // chunk + 2  # never more than the limit plus one chunk


def test_declared_length_refused_before_reading(guarded) -> None:
    _, app, _ = guarded
    pulled = []

    async def receive() -> dict:
        pulled.append(1)
        return {"type": "http.request", "body": b"", "more_body": False}

    sent = asgi_post(app, "/api/items", [(b"content-length", str(50 * 2**20).encode()),
                                         (b"content-type", b"multipart/form-data; boundary=x")],
                     receive)
    assert sent[0]["status"] == 413 and not pulled


def test_writes_without_the_token_are_401(guarded) -> None:
    client, _, _ = guarded
    assert client.post("/api/items", files={"image": ("a.png", noise_png(1))}).status_code == 401
    assert client.delete("/api/items/1").status_code == 401
    assert client.delete("/api/items/1", headers={"Authorization": "Basic abc"}).status_code == 401


@pytest.fixture()
def open_loopback(run_dir: Path):
    """A tokenless server with --allow-writes on 127.0.0.1 (the mode other sites target)."""
    app = create_app(Archive.open(run_dir), ServeSettings(allow_writes=True))
    before = snapshot(run_dir)
    yield TestClient(app, base_url="http://127.0.0.1:8000"), run_dir, before


def test_same_origin_page_still_writes(open_loopback) -> None:
    client, run_dir, _ = open_loopback
    r = client.post("/api/items", files={"image": ("a.png", noise_png(1), "image/png")},
                    headers={"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 201, r.text
    assert client.delete("/api/items/5", headers={"Host": "localhost:8000"}).status_code == 200


def test_token_writes_still_refuse_other_origins(guarded) -> None:
    client, _, _ = guarded
    r = client.delete("/api/items/5", headers={**AUTH, "Origin": "http://evil.example"})
    assert r.status_code == 403


def test_huge_uploads_are_kept_small_and_decoded_two_at_a_time(monkeypatch) -> None:
    """A 40-Mpx blank PNG (a few KB) is shrunk right after decoding; a big JPEG decodes at
    reduced scale; at most two decodes run at once."""
    import threading

    from ahcl.serve import uploads

    png = png_bytes(Image.new("RGB", (7000, 5700)))
    assert len(png) < 200_000
    up = uploads.decode_upload(png, max_pixels=40_000_000)
    assert max(up.image.size) == uploads.KEPT_SIDE
    buf = io.BytesIO()
    Image.new("RGB", (6000, 4000), (90, 120, 30)).save(buf, "JPEG")
    up = uploads.decode_upload(buf.getvalue(), max_pixels=40_000_000)
    assert max(up.image.size) == uploads.KEPT_SIDE
    inside, peak, lock = [0], [0], threading.Lock()
    original = uploads.load_rgb

    def counting(*args, **kwargs):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            import time

            time.sleep(0.05)
            return original(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(uploads, "load_rgb", counting)
    small = png_bytes(Image.new("RGB", (32, 32)))
    threads = [threading.Thread(target=uploads.decode_upload, args=(small, 10**6))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
