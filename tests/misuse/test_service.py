"""Misuse of the service (issue #16) over HTTP, against a real ``ahcl serve`` process on
127.0.0.1 with ``--allow-writes`` and no token (the mode other websites target): the status, a
one-line ``detail``, the served folder unchanged and the server still healthy.

The ``item`` column is the issue's numbered item; ``pre`` marks misuse the issue found already
handled.
"""

from __future__ import annotations

import io
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx2 as httpx
import pytest
from PIL import Image

from tests.misuse.inputs import blank_png
from tests.misuse.snapshot import snapshot
from tests.serve._server import free_port, serve_process, wait_healthy
from tests.serve.conftest import noise_png

UPLOAD_MB = 1  # the server's --max-upload-mb (small, so an oversized body fits in socket buffers)
#: 7000 x 5700 = 39.9 Mpx: just under the default --max-pixels, 116 KB as a blank PNG
HUGE = (7000, 5700)


@dataclass
class Server:
    url: str
    folder: Path
    pid: int
    n_items: int


@pytest.fixture(scope="module")
def server(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import ahcl

    folder = Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("served") / "run"))
    port = free_port()
    proc = serve_process(str(folder), "--port", str(port), "--allow-writes", "--device", "cpu",
                         "--max-upload-mb", str(UPLOAD_MB))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield Server(url, folder, proc.pid, len(ahcl.load_run(tiny_run).db_labels))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def test_concurrent_huge_uploads_keep_memory_bounded(server: Server) -> None:
    """Item 5: six concurrent searches with a blank 40-Mpx PNG (116 KB each) grew a server by
    about 1.3 GB when every request thread decoded (and kept its freed pixels); two decoder
    threads hold at most two of them."""
    small = noise_png(3)
    assert httpx.post(f"{server.url}/api/search/image", files={"image": ("a.png", small)},
                      timeout=60).status_code == 200
    before = _peak_rss_mb(server.pid)
    huge = blank_png("RGB", *HUGE)
    codes: list[int] = []

    def search() -> None:
        r = httpx.post(f"{server.url}/api/search/image", files={"image": ("h.png", huge)},
                       timeout=120)
        codes.append(r.status_code)

    threads = [threading.Thread(target=search) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 6
    assert _peak_rss_mb(server.pid) - before < 1000  # about 650 MB: two full decodes


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(noise_png(5, size=64))).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()[:len(buf.getvalue()) // 2]


def image(data: bytes | Callable[[], bytes], name: str = "a.png", n: int = 1
          ) -> Callable[[], dict[str, Any]]:
    """The request's multipart body: ``n`` copies of an image in the field ``image``."""
    def body() -> dict[str, Any]:
        blob = data() if callable(data) else data
        return {"files": [("image", (f"{i}{name}", blob)) for i in range(n)]}
    return body


def json_body(obj: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"json": obj}


def raw_json(content: bytes) -> Callable[[], dict[str, Any]]:
    return lambda: {"content": content, "headers": {"Content-Type": "application/json"}}


def with_headers(body: Callable[[], dict[str, Any]], **headers: str
                 ) -> Callable[[], dict[str, Any]]:
    return lambda: {**body(), "headers": headers}


@dataclass(frozen=True)
class Row:
    item: str
    method: str
    path: str
    body: Callable[[], dict[str, Any]] | None
    status: int
    says: str  # in the detail; for 200, unused
    check: Callable[[dict, Server], bool] | None = None


SMALL = image(lambda: noise_png(1))
EVIL = "http://evil.example"

ROWS = [
    # 4. k beyond the archive: bounded (1000 at most), the whole archive when it holds fewer
    Row("4", "post", "/api/search", json_body({"id": 1, "k": 10**9}), 422,
        "body.k: Input should be less than or equal to 1000"),
    Row("4", "post", "/api/search", json_body({"id": 1, "k": 1000}), 200, "",
        check=lambda body, s: len(body["hits"]) == s.n_items - 1),  # all but the query item
    # 5. what one request may make the server decode
    Row("5", "post", "/api/search/image", image(lambda: noise_png(1, 8), n=16), 422,
        "at most 1 images per request"),
    Row("5", "post", "/api/items", image(lambda: noise_png(1, 8), n=65), 400, "Too many files"),
    *[Row("5", "post", path, lambda: {**SMALL(), "data": {f"f{i}": "1" for i in range(17)}},
          400, "Too many fields") for path in ("/api/search/image", "/api/items")],
    Row("5", "post", "/api/search/image", image(lambda: blank_png("1", 7000, 7000)),
        400, "= 49000000 pixels, over the limit of 40000000"),
    Row("5", "post", "/api/items", image(lambda: blank_png("1", 7000, 7000)),
        400, "over the limit of 40000000"),
    Row("5", "post", "/api/search/image", image(b"\xff" * (2 * UPLOAD_MB * 2**20), "big.jpg"),
        413, f"request body over the limit of {UPLOAD_MB * 2**20} bytes"),
    Row("5", "post", "/api/items", image(b"\xff" * (2 * UPLOAD_MB * 2**20), "big.jpg"),
        413, "request body over the limit"),
    # 6. no token: writes from other websites refused (CSRF, DNS rebinding)
    Row("6", "post", "/api/items", with_headers(SMALL, Origin=EVIL), 403,
        "writes from another origin are refused"),
    Row("6", "post", "/api/items", with_headers(SMALL, **{"Sec-Fetch-Site": "cross-site"}), 403,
        "writes from another site are refused (Sec-Fetch-Site: cross-site)"),
    Row("6", "delete", "/api/items/5", lambda: {"headers": {"Host": "evil.example:8000"}}, 403,
        "writes without a token accept only requests addressed to 127.0.0.1"),
    Row("6", "delete", "/api/items/5", lambda: {"headers": {"Origin": "null"}}, 403,
        "writes from another origin are refused"),
    Row("6", "post", "/api/items", with_headers(SMALL, Host="attacker.test"), 403,
        "addressed to 127.0.0.1, ::1 or localhost"),
    # 8. a bomb or a broken image: one answer, never a traceback
    *[Row("8", "post", path, image(lambda: blank_png("1", 20000, 20000)), 400,
          "exceeds limit") for path in ("/api/search/image", "/api/items")],
    *[Row("8", "post", path, image(truncated_jpeg, "cut.jpg"), 400,
          "cannot read the JPEG image (truncated or corrupt?)")
      for path in ("/api/search/image", "/api/items")],
    *[Row("8", "post", path, image(data, "notes.jpg"), 415, says)
      for path in ("/api/search/image", "/api/search", "/api/items")
      for data, says in ((b"this is a text file, not an image\n" * 20, "not an image"),
                         (b"", "the upload is empty"),
                         (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image"))],
    # 11. ids and k are strict integers; the 404 detail shows the id as given
    *[Row("11", "post", "/api/search", json_body(body), 422, f"body.{field}: Input should be")
      for body, field in (({"id": True}, "id"), ({"id": 1.0}, "id"), ({"id": "1"}, "id"),
                          ({"id": 1, "k": 1.7}, "k"))],
    Row("11", "get", "/api/items/1e3", None, 404, "no archive item has id 1e3"),
    # pre: ids are numbers looked up in the index, never paths (those that decode to a path
    # match no route: "Not Found"); malformed JSON
    *[Row("pre", method, f"/api/items/{raw}{suffix}", None, 404, "")
      for raw in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                  "..%252F..%252Fetc%252Fpasswd", "%2E%2E", "1%2F..%2F2", "..%5C..%5Cwindows",
                  "3%00", "0x10", "%20", "99999999999999999999", "-1", "..")
      for method, suffix in (("get", ""), ("get", "/image"), ("delete", ""))],
    Row("pre", "post", "/api/search", json_body({"id": "../../etc/passwd"}), 422, "body.id"),
    *[Row("pre", "post", "/api/search", raw_json(body), 422, "JSON decode error")
      for body in (b"{", b"{\"id\": 1,}", b"\xff{", b"\xff\xfe")],
    *[Row("pre", "post", "/api/search", raw_json(body), 422, "body")
      for body in (b"[1, 2]", b"null")],
]


def _id(row: Row) -> str:
    return f"{row.item}:{row.method} {row.path[:40]}:{row.status}"


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_misuse_gets_one_line_and_changes_nothing(server: Server, row: Row) -> None:
    before = snapshot(server.folder)
    kwargs = row.body() if row.body is not None else {}
    r = httpx.request(row.method.upper(), server.url + row.path, timeout=60, **kwargs)
    assert r.status_code == row.status, r.text
    body = r.json()
    if row.status == 200:
        assert row.check is not None and row.check(body, server)
    else:
        detail = body["detail"]
        assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
        assert row.says in detail, detail
    assert snapshot(server.folder) == before
    assert httpx.get(f"{server.url}/api/health", timeout=10).status_code == 200
