"""Additions handed whole to the writer process (#14): with a writer process, the server reads
an addition's body and the writer parses it (:class:`ahcl.serve.middleware.WriterAdditions`);
every answer is the route's, as an ``--inline-writes`` server gives it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from ahcl.serve import Archive, ServeSettings, create_app
from ahcl.serve import forms
from ahcl.serve.writer import WriterError
from tests.serve.conftest import TOKEN, noise_png, snapshot

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PNG = noise_png(1)
#: (name, keyword arguments of client.post): good and bad forms of POST /api/items.
FORMS = [
    ("one image", {"files": {"image": ("a.png", PNG)}}),
    ("labelled", {"files": {"image": ("a.png", PNG)}, "data": {"label": "water"}}),
    ("empty label", {"files": {"image": ("a.png", PNG)}, "data": {"label": ""}}),
    ("two labels", {"files": {"image": ("a.png", PNG)}, "data": {"label": ["water", "forest"]}}),
    ("two images", {"files": [("image", ("a.png", PNG)), ("image", ("b.png", noise_png(2)))]}),
    ("unknown class", {"files": {"image": ("a.png", PNG)}, "data": {"label": "moon"}}),
    ("no image", {"files": {"other": ("a.png", PNG)}}),
    ("image as text", {"data": {"image": "hello"}, "files": {"x": ("a", b"1")}}),
    ("label as file", {"files": [("image", ("a.png", PNG)), ("label", ("l.txt", b"water"))]}),
    ("too many files", {"files": [("image", ("a.png", PNG))] * 65}),
    ("not an image", {"files": {"image": ("a.txt", b"plain text")}}),
    ("json", {"json": {"image": 1}}),
    ("urlencoded", {"data": {"image": "x"}}),
    ("garbage", {"content": b"garbage",
                 "headers": {**AUTH, "content-type": "multipart/form-data; boundary=zz"}}),
    ("no boundary", {"content": b"garbage",
                     "headers": {**AUTH, "content-type": "multipart/form-data"}}),
    ("other multipart", {"content": b"x",
                         "headers": {**AUTH, "content-type": "multipart/form-dataX"}}),
    ("no token", {"files": {"image": ("a.png", PNG)}, "headers": {}}),
    ("wrong token", {"files": {"image": ("a.png", PNG)},
                     "headers": {"Authorization": "Bearer nope"}}),
    ("other origin", {"files": {"image": ("a.png", PNG)},
                      "headers": {**AUTH, "Origin": "http://evil.example"}}),
]


def answers(run_dir: Path, writer: bool) -> list[tuple[int, dict, str | None]]:
    archive = Archive.open(run_dir, writer=writer)
    try:
        client = TestClient(create_app(archive, ServeSettings(token=TOKEN)),
                            base_url="http://127.0.0.1:8000")
        got = []
        for _, kwargs in FORMS:
            kwargs = {"headers": AUTH, **kwargs}
            r = client.post("/api/items", **kwargs)
            got.append((r.status_code, r.json(), r.headers.get("www-authenticate")))
        got.append((len(archive), {}, None))
        return got
    finally:
        archive.close()


def test_every_answer_is_the_routes(run_dir: Path, tmp_path: Path) -> None:
    inline_dir = Path(shutil.copytree(run_dir, tmp_path / "inline"))
    inline, through_writer = answers(inline_dir, False), answers(run_dir, True)
    for (name, _), want, got in zip(FORMS + [("size", {})], inline, through_writer):
        assert got == want, name
    statuses = dict(zip([name for name, _ in FORMS], [a[0] for a in inline]))
    assert statuses["one image"] == statuses["two labels"] == 201
    assert statuses["no image"] == statuses["label as file"] == statuses["unknown class"] == 422
    assert (statuses["too many files"], statuses["garbage"], statuses["json"]) == (400, 400, 415)
    assert (statuses["no token"], statuses["other origin"]) == (401, 403)
    assert inline[-1][0] == 72 + 6  # the five good forms added six images


def test_the_server_process_parses_no_addition(run_dir: Path, monkeypatch) -> None:
    archive = Archive.open(run_dir, writer=True)
    try:
        client = TestClient(create_app(archive, ServeSettings(token=TOKEN)),
                            base_url="http://127.0.0.1:8000")

        def refuse(*args, **kwargs):
            raise AssertionError("parsed in the server process")

        monkeypatch.setattr(Request, "form", refuse)  # the route's parser
        monkeypatch.setattr(forms, "_parse", refuse)  # the writer's, in this process
        r = client.post("/api/items", headers=AUTH, data={"label": "forest"},
                        files={"image": ("a.png", PNG)})
        assert r.status_code == 201, r.text
        (item,) = r.json()["items"]
        assert item["class"] == "forest" and item["image_url"] == f"/api/items/{item['id']}/image"
        assert r.json()["count"] == len(archive) == 73  # caught up before answering
        assert client.get(f"/api/items/{item['id']}").json()["class"] == "forest"

        def stopped(*args, **kwargs):
            raise WriterError("the writer process stopped (exit code -9) during this addition")

        monkeypatch.setattr(archive._writer, "add_form", stopped)
        r = client.post("/api/items", headers=AUTH, files={"image": ("c.png", PNG)})
        assert r.status_code == 503 and "writer process stopped" in r.json()["detail"]
    finally:
        archive.close()


def test_an_inline_archive_is_served_by_the_route(run_dir: Path, monkeypatch) -> None:
    archive = Archive.open(run_dir)
    client = TestClient(create_app(archive, ServeSettings(token=TOKEN)),
                        base_url="http://127.0.0.1:8000")
    calls = []
    form = Request.form

    def counted(self, *args, **kwargs):
        calls.append(self.url.path)
        return form(self, *args, **kwargs)

    monkeypatch.setattr(Request, "form", counted)
    r = client.post("/api/items", headers=AUTH, files={"image": ("a.png", PNG)})
    assert r.status_code == 201 and calls and set(calls) == {"/api/items"}


def test_the_body_limit_holds_for_additions_to_the_writer(run_dir: Path) -> None:
    archive = Archive.open(run_dir, writer=True)
    try:
        client = TestClient(create_app(archive, ServeSettings(token=TOKEN,
                                                              max_upload_bytes=4096)),
                            base_url="http://127.0.0.1:8000")
        before = snapshot(run_dir)

        def chunks():
            yield b"--zz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\n"
            for _ in range(100):
                yield b"x" * 1000

        r = client.post("/api/items", headers={**AUTH, "content-type":
                                                "multipart/form-data; boundary=zz"},
                        content=chunks())
        assert r.status_code == 413 and "over the limit" in r.json()["detail"]
        r = client.post("/api/items", headers=AUTH,
                        files={"image": ("big.png", noise_png(3, size=200))})
        assert r.status_code == 413
        assert snapshot(run_dir) == before and len(archive) == 72
    finally:
        archive.close()


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=zz", "text/plain"])
def test_parse_add_form_alone(content_type: str) -> None:
    body = (b"--zz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + PNG + b"\r\n--zz\r\n"
            b"Content-Disposition: form-data; name=\"label\"\r\n\r\nforest\r\n--zz--\r\n")
    if content_type == "text/plain":
        with pytest.raises(forms.UploadError) as got:
            forms.parse_add_form(content_type, body, ["water", "forest"])
        assert got.value.status == 415
        return
    assert forms.parse_add_form(content_type, body, ["water", "forest"]) == ([PNG], 1)
    with pytest.raises(forms.UploadError, match="unknown class 'forest'") as got:
        forms.parse_add_form(content_type, body, ["water"])
    assert got.value.status == 422
