"""Misuse: each answered with the status a user would expect, and nothing changed on disk."""

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


def bomb_png(side: int) -> bytes:
    """A small file that decodes to ``side`` x ``side`` pixels (1-bit, compresses to KBs)."""
    return png_bytes(Image.new("1", (side, side)))


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(noise_png(5, size=64))).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


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


@pytest.mark.parametrize("path", ["/api/search", "/api/items"])
def test_50mb_upload_is_413(guarded, path: str) -> None:
    client, _, _ = guarded
    big = b"\xff" * (50 * 2**20)
    r = client.post(path, headers=AUTH, files={"image": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413


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


@pytest.mark.parametrize("path", ["/api/search", "/api/items"])
@pytest.mark.parametrize("data, status", [
    (b"this is a text file, not an image\n" * 20, 415),
    (b"", 415),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 415),  # a PNG signature and nothing readable
])
def test_non_image_is_415(guarded, path: str, data: bytes, status: int) -> None:
    client, _, _ = guarded
    r = client.post(path, headers=AUTH, files={"image": ("notes.jpg", data, "image/jpeg")})
    assert r.status_code == status, r.text


@pytest.mark.parametrize("side", [7000, 20000])  # over our 40 Mpx cap; over Pillow's bomb limit
@pytest.mark.parametrize("path", ["/api/search", "/api/items"])
def test_decompression_bomb_is_400(guarded, side: int, path: str) -> None:
    client, _, _ = guarded
    data = bomb_png(side)
    assert len(data) < 2**20
    r = client.post(path, headers=AUTH, files={"image": ("bomb.png", data, "image/png")})
    assert r.status_code == 400 and "pixels" in r.json()["detail"]


@pytest.mark.parametrize("path", ["/api/search", "/api/items"])
def test_truncated_jpeg_is_400(guarded, path: str) -> None:
    client, _, _ = guarded
    data = jpeg_bytes()
    r = client.post(path, headers=AUTH,
                    files={"image": ("cut.jpg", data[:len(data) // 2], "image/jpeg")})
    assert r.status_code == 400 and "truncated" in r.json()["detail"]


@pytest.mark.parametrize("raw", [
    "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%252F..%252Fetc%252Fpasswd",
    "%2E%2E", "1%2F..%2F2", "..%5C..%5Cwindows", "3%00", "0x10", "1e3", "%20", "99999999999999999999",
    "-1", "..",
])
@pytest.mark.parametrize("suffix", ["", "/image"])
def test_path_traversal_in_ids_is_404(guarded, raw: str, suffix: str) -> None:
    client, _, _ = guarded
    url = f"/api/items/{raw}{suffix}"
    assert client.get(url).status_code == 404, url
    if not suffix:
        assert client.delete(url, headers=AUTH).status_code in (404, 405), url


def test_traversal_strings_in_search_are_rejected(guarded) -> None:
    client, _, _ = guarded
    assert client.post("/api/search", json={"id": "../../etc/passwd"}).status_code == 422


def test_writes_without_the_token_are_401(guarded) -> None:
    client, _, _ = guarded
    assert client.post("/api/items", files={"image": ("a.png", noise_png(1))}).status_code == 401
    assert client.delete("/api/items/1").status_code == 401
    assert client.delete("/api/items/1", headers={"Authorization": "Basic abc"}).status_code == 401


@pytest.mark.parametrize("body", [b"{", b"{\"id\": 1,}", b"[1, 2]", b"null", b"\xff\xfe"])
def test_malformed_json_is_422(guarded, body: bytes) -> None:
    client, _, _ = guarded
    r = client.post("/api/search", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422


def test_non_utf8_json_is_422(guarded) -> None:
    client, _, _ = guarded
    r = client.post("/api/search", content=b"\xff{", headers={"Content-Type": "application/json"})
    assert r.status_code == 422


@pytest.mark.parametrize("path", ["/api/search", "/api/items"])
def test_too_many_form_parts_are_400(guarded, path: str) -> None:
    client, _, _ = guarded
    img = noise_png(1, size=8)
    files = [("image", (f"{i}.png", img)) for i in range(65)]
    assert client.post(path, headers=AUTH, files=files).status_code == 400
    fields = {f"f{i}": "1" for i in range(17)}
    r = client.post(path, headers=AUTH, data=fields, files={"image": ("a.png", img)})
    assert r.status_code == 400


@pytest.fixture()
def open_loopback(run_dir: Path):
    """A tokenless server with --allow-writes on 127.0.0.1 (the mode other sites target)."""
    app = create_app(Archive.open(run_dir), ServeSettings(allow_writes=True))
    before = snapshot(run_dir)
    yield TestClient(app, base_url="http://127.0.0.1:8000"), run_dir, before


@pytest.mark.parametrize("method, path, headers, files", [
    ("post", "/api/items", {"Origin": "http://evil.example"}, True),
    ("post", "/api/items", {"Sec-Fetch-Site": "cross-site"}, True),
    ("delete", "/api/items/5", {"Host": "evil.example:8000"}, False),
    ("delete", "/api/items/5", {"Origin": "null"}, False),
    ("post", "/api/items", {"Host": "attacker.test"}, True),
])
def test_other_sites_cannot_write(open_loopback, method, path, headers, files) -> None:
    client, run_dir, before = open_loopback
    kwargs = {"files": {"image": ("a.png", noise_png(1), "image/png")}} if files else {}
    r = getattr(client, method)(path, headers=headers, **kwargs)
    assert r.status_code == 403, r.text
    assert snapshot(run_dir) == before


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


@pytest.mark.parametrize("body", [{"id": True}, {"id": 1.0}, {"id": 1, "k": 1.7},
                                  {"id": "1"}])
def test_search_ids_and_k_are_strict_integers(guarded, body) -> None:
    client, _, _ = guarded
    assert client.post("/api/search", json=body).status_code == 422


def test_unknown_id_detail_has_no_stray_quote(guarded) -> None:
    client, _, _ = guarded
    r = client.get("/api/items/1e3")
    assert r.status_code == 404 and r.json()["detail"] == "no archive item has id 1e3"


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
