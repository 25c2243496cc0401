"""The download -> verify -> extract ladder against a local HTTP server (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import json
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

import ahcl.data.registry as registry
from ahcl.data.download import download_url, extract_archive
from ahcl.data.folder import read_image_folder
from ahcl.data.registry import MARKER, DatasetInfo, ensure_dataset
from ahcl.errors import ChecksumError, DatasetError

CLASSES = ("alpha", "beta")
PER_CLASS = 3


def _members() -> dict[str, bytes]:
    """Archive members: Mini/Images/<class>/<i>.png plus a README beside the images."""
    out = {"Mini/README.txt": b"fake dataset for tests\n"}
    for k, cls in enumerate(CLASSES):
        for i in range(PER_CLASS):
            rng = np.random.default_rng([k, i])
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
            out[f"Mini/Images/{cls}/{i}.png"] = buf.getvalue()
    return out


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _info(filename: str, data: bytes, **changes: object) -> DatasetInfo:
    fields = dict(name="mini", title="Mini", url=None, filename=filename, md5=None,
                  sha256=hashlib.sha256(data).hexdigest(), classes=CLASSES,
                  n_images=len(CLASSES) * PER_CLASS, image_size=8, license="test",
                  citation="none", folder="Mini/Images", homepage="http://example.invalid/")
    fields.update(changes)
    return DatasetInfo(**fields)  # type: ignore[arg-type]


class _Server(ThreadingHTTPServer):
    files: dict[str, bytes]
    mode: str  # "ok", "cut" (close after half the body), "ignore_range"
    ranges: list[str | None]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, asked = 0, self.headers.get("Range")
        if asked and srv.mode != "ignore_range":
            start = int(asked.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if srv.mode == "cut" else body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.mode, srv.ranges = {}, "ok", []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: _Server, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") or p.name == "mini")


@pytest.mark.parametrize("filename,build", [("mini.zip", _zip), ("mini.tar.gz", _targz)])
def test_download_verify_extract(tmp_path: Path, server: _Server, filename: str,
                                 build: object) -> None:
    data = build(_members())  # type: ignore[operator]
    server.files["/" + filename] = data
    info = _info(filename, data)
    class_dir = ensure_dataset(info, root=tmp_path, url=_url(server, "/" + filename))
    assert class_dir == tmp_path / "mini" / "Mini" / "Images"
    assert (tmp_path / "mini" / MARKER).is_file()
    assert (tmp_path / filename).read_bytes() == data
    assert _leftovers(tmp_path) == ["mini"]
    folder = read_image_folder(class_dir)
    assert folder.classes == list(CLASSES) and len(folder) == 6
    n_requests = len(server.ranges)
    assert ensure_dataset(info, root=tmp_path, download=False) == class_dir  # present: no I/O
    assert len(server.ranges) == n_requests
    assert registry.local_path(info, tmp_path) == class_dir


def test_wrong_checksum_leaves_nothing(tmp_path: Path, server: _Server) -> None:
    data = _zip(_members())
    server.files["/mini.zip"] = data
    info = _info("mini.zip", data, sha256="0" * 64)
    with pytest.raises(ChecksumError, match="expected 0000"):
        ensure_dataset(info, root=tmp_path, url=_url(server, "/mini.zip"))
    assert list(tmp_path.iterdir()) == []


def test_present_archive_with_wrong_checksum_is_not_extracted(tmp_path: Path) -> None:
    data = _zip(_members())
    (tmp_path / "mini.zip").write_bytes(data)
    with pytest.raises(ChecksumError, match="delete it and download again"):
        ensure_dataset(_info("mini.zip", data, md5="f" * 32, sha256=None), root=tmp_path)
    assert _leftovers(tmp_path) == []


def test_cut_off_download_then_resume_with_range(tmp_path: Path, server: _Server) -> None:
    data = _zip(_members())
    server.files["/mini.zip"] = data
    info, url = _info("mini.zip", data), _url(server, "/mini.zip")
    server.mode = "cut"
    with pytest.raises(DatasetError, match="cut off after .* run the same command again"):
        ensure_dataset(info, root=tmp_path, url=url)
    part = tmp_path / "mini.zip.part"
    assert part.stat().st_size == len(data) // 2
    assert _leftovers(tmp_path) == []
    server.mode = "ok"
    ensure_dataset(info, root=tmp_path, url=url)
    assert server.ranges[-1] == f"bytes={len(data) // 2}-"
    assert (tmp_path / "mini.zip").read_bytes() == data and not part.exists()


def test_server_ignoring_range_restarts(tmp_path: Path, server: _Server) -> None:
    data = _zip(_members())
    server.files["/mini.zip"] = data
    (tmp_path / "mini.zip.part").write_bytes(b"x" * 100)  # a stale partial file
    server.mode = "ignore_range"
    dest = download_url(_url(server, "/mini.zip"), tmp_path / "mini.zip",
                        sha256=hashlib.sha256(data).hexdigest())
    assert server.ranges == ["bytes=100-"]
    assert dest.read_bytes() == data


def test_stale_complete_part_gets_416_and_is_verified(tmp_path: Path, server: _Server) -> None:
    data = _zip(_members())
    server.files["/mini.zip"] = data
    (tmp_path / "mini.zip.part").write_bytes(b"y" * len(data))  # right length, wrong bytes
    dest = download_url(_url(server, "/mini.zip"), tmp_path / "mini.zip",
                        md5=hashlib.md5(data).hexdigest())
    assert dest.read_bytes() == data and server.ranges == [f"bytes={len(data)}-", None]


def test_http_error_is_one_clear_line(tmp_path: Path, server: _Server) -> None:
    with pytest.raises(DatasetError, match="HTTP 404"):
        download_url(_url(server, "/missing.zip"), tmp_path / "m.zip")


def test_interrupted_extraction_leaves_no_dataset(tmp_path: Path, server: _Server,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = _zip(_members())
    (tmp_path / "mini.zip").write_bytes(data)
    info = _info("mini.zip", data)

    def half_then_crash(archive: Path, dest: Path) -> None:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist()[:3]:
                zf.extract(name, dest)
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "extract_archive", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(info, root=tmp_path, download=False)
    assert _leftovers(tmp_path) == []
    assert registry.local_path(info, tmp_path) is None
    monkeypatch.setattr(registry, "extract_archive", extract_archive)
    # a half-filled dataset folder from an older crash is not taken, but replaced
    (tmp_path / "mini" / "Mini" / "Images" / "alpha").mkdir(parents=True)
    (tmp_path / "mini" / "Mini" / "Images" / "beta").mkdir(parents=True)
    assert registry.local_path(info, tmp_path) is None
    class_dir = ensure_dataset(info, root=tmp_path, download=False)
    assert len(read_image_folder(class_dir)) == 6
    assert _leftovers(tmp_path) == ["mini"]


def test_corrupt_archive_and_wrong_count(tmp_path: Path) -> None:
    members = _members()
    data = bytearray(_zip(members))
    payload = members["Mini/Images/alpha/0.png"]
    at = bytes(data).index(payload)
    data[at + 20] ^= 0xFF  # break the CRC of one member
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="cannot extract"):
        ensure_dataset(_info("bad.zip", bytes(data)), root=tmp_path)
    good = _zip(members)
    (tmp_path / "mini.zip").write_bytes(good)
    with pytest.raises(DatasetError, match="extracted to 6 images, expected 7"):
        ensure_dataset(_info("mini.zip", good, n_images=7), root=tmp_path)
    assert _leftovers(tmp_path) == []


def test_unsafe_archives_are_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "evil.zip").write_bytes(_zip({"a/ok.txt": b"1", "a/../../evil.txt": b"2"}))
    with pytest.raises(DatasetError, match="unsafe member path"):
        extract_archive(tmp_path / "evil.zip", tmp_path / "out")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("a/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    (tmp_path / "link.tar").write_bytes(buf.getvalue())
    with pytest.raises(DatasetError, match="link or special file"):
        extract_archive(tmp_path / "link.tar", tmp_path / "out")
    (tmp_path / "abs.tar.gz").write_bytes(_targz({"/tmp/abs.txt": b"x"}))
    with pytest.raises(DatasetError, match="unsafe member path"):
        extract_archive(tmp_path / "abs.tar.gz", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path.parent / "evil.txt").exists()


def test_rar_without_support_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "x.rar").write_bytes(b"Rar!\x1a\x07\x00" + b"\x00" * 32)
    (tmp_path / "out").mkdir()
    try:
        import rarfile  # noqa: F401
    except ImportError:
        with pytest.raises(DatasetError, match="pip install rarfile"):
            extract_archive(tmp_path / "x.rar", tmp_path / "out")
    else:  # with rarfile but (maybe) no tool: still one clear line
        with pytest.raises(DatasetError, match="rar"):
            extract_archive(tmp_path / "x.rar", tmp_path / "out")


def test_not_found_message_and_url_from_environment(tmp_path: Path, server: _Server,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = _zip(_members())
    server.files["/mirror/mini.zip"] = data
    info = _info("mini.zip", data, url="http://example.invalid/mini.zip")
    with pytest.raises(DatasetError, match="download http://example.invalid/mini.zip and put "
                       "it at .*mini.zip"):
        ensure_dataset(info, root=tmp_path, download=False)
    monkeypatch.setenv("AHCL_DATASET_URL_MINI", _url(server, "/mirror/mini.zip"))
    assert ensure_dataset(info, root=tmp_path).is_dir()
    assert server.ranges == [None]


def test_hand_extracted_folder_is_accepted(tmp_path: Path) -> None:
    for name, data in _members().items():
        path = tmp_path / "mini" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    info = _info("mini.zip", b"")
    assert ensure_dataset(info, root=tmp_path, download=False) == tmp_path / "mini/Mini/Images"
    assert (tmp_path / "mini" / MARKER).is_file()


def test_cli_download_with_url(tmp_path: Path, server: _Server,
                               monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from ahcl.cli import main

    data = _targz(_members())
    server.files["/m.tar.gz"] = data
    monkeypatch.setitem(registry._REGISTRY, "mini", _info("mini.tar.gz", data))
    assert main(["datasets", "download", "mini", "--root", str(tmp_path), "--url",
                 _url(server, "/m.tar.gz")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "mini" / "Mini" / "Images")
    assert main(["datasets", "list", "--root", str(tmp_path), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert rows["mini"]["present"] is True
