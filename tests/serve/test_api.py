"""The HTTP API in-process (TestClient): every endpoint, checked against explicit references."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from ahcl.cli import main
from ahcl.errors import AhclError
from ahcl.run import load_run
from ahcl.serve import Archive, ServeSettings, create_app
from ahcl.serve.settings import is_loopback
from ahcl.serve.store import UnknownItemError
from ahcl.serve.uploads import UploadError
from tests.serve.conftest import TOKEN, noise_png, reference_hits, snapshot

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_client(source: Path, run: Path | None = None, **settings) -> tuple[TestClient, Archive]:
    archive = Archive.open(source, run=run, thumb_size=32)
    settings.setdefault("token", TOKEN)
    return (TestClient(create_app(archive, ServeSettings(**settings)),
                       base_url="http://127.0.0.1:8000"), archive)


@pytest.fixture()
def api(run_dir: Path) -> tuple[TestClient, Archive]:
    return make_client(run_dir)


def test_health_info_classes(api, tiny_run_dir: Path) -> None:
    client, _ = api
    run = load_run(tiny_run_dir)
    assert client.get("/api/health").json() == {"status": "ok", "items": 72}
    info = client.get("/api/info").json()
    assert (info["items"], info["n_bits"], info["classes"]) == (72, 32, run.classes)
    assert info["model"] == {"method": "ahcl", "backbone": "tiny_cnn", "mode": "frozen",
                             "run": "run"}
    assert (info["semantic_bits"], info["instance_bits"]) == (8, 24)
    assert info["index"] == {"format_version": 2, "revision": 0, "persisted": False}
    assert info["writes"] == "token"
    counts = np.bincount(run.db_labels, minlength=len(run.classes))
    assert client.get("/api/classes").json() == {
        "classes": [{"label": i, "name": n, "count": int(counts[i])}
                    for i, n in enumerate(run.classes)], "unlabelled": 0}


def test_browse_items_by_class(api, tiny_run_dir: Path) -> None:
    client, _ = api
    labels = load_run(tiny_run_dir).db_labels
    want = np.flatnonzero(labels == 2)  # a run's archive ids are its database rows
    page = client.get("/api/items", params={"label": 2, "offset": 3, "limit": 4}).json()
    assert page["total"] == want.shape[0]
    assert [it["id"] for it in page["items"]] == want[3:7].tolist()
    assert all(it["label"] == 2 and it["image_url"] == f"/api/items/{it['id']}/image"
               for it in page["items"])
    assert client.get("/api/items", params={"limit": 1000}).status_code == 422
    assert len(client.get("/api/items", params={"limit": 500}).json()["items"]) == 72


def test_item_is_path_free(api, tiny_run_dir: Path) -> None:
    client, _ = api
    run = load_run(tiny_run_dir)
    body = client.get("/api/items/7").json()
    assert body == {"id": 7, "label": int(run.db_labels[7]),
                    "class": run.classes[run.db_labels[7]], "uploaded": False,
                    "image_url": "/api/items/7/image"}
    assert str(run.data_root) not in client.get("/api/items/7").text
    assert client.get("/api/items/72").status_code == 404


def test_thumbnail_is_cached(api, monkeypatch: pytest.MonkeyPatch) -> None:
    import ahcl.serve.store as store

    client, _ = api
    calls = []
    real = store.load_rgb
    monkeypatch.setattr(store, "load_rgb", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    first = client.get("/api/items/3/image")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(first.content)).size) == 32  # 48 px scene, 32 px thumbs
    assert client.get("/api/items/3/image").content == first.content
    assert len(calls) == 1


def test_thumbnail_of_missing_file_is_404(api, tiny_run_dir: Path, tmp_path: Path) -> None:
    client, archive = api
    archive.index.remove([5])
    archive.index.add(archive.run.db_codes[5:6], ids=[5], meta=[{"path": str(tmp_path / "x.png")}])
    assert client.get("/api/items/5/image").status_code == 404


def test_search_by_upload_matches_brute_force(api, tiny_run_dir: Path) -> None:
    client, archive = api
    run = load_run(tiny_run_dir)
    data = Path(run.db_paths[20]).read_bytes()
    r = client.post("/api/search", files={"image": ("q.png", data, "image/png")}, data={"k": "7"})
    assert r.status_code == 200
    body = r.json()
    code = archive.run.encode_images([Image.open(io.BytesIO(data)).convert("RGB")])[0]
    assert body["query"]["code"]["hex"] == bytes(code).hex()
    assert len(body["query"]["code"]["bits"]) == 32
    want = reference_hits(code, run.db_codes, np.arange(72), 7, semantic_bits=run.semantic_bits)
    assert [(h["id"], h["distance"]) for h in body["hits"]] == want
    for h in body["hits"]:
        assert h["label"] == run.db_labels[h["id"]] and h["class"] == run.classes[h["label"]]
        assert h["image_url"] == f"/api/items/{h['id']}/image"


def test_search_by_id_excludes_the_query(api, tiny_run_dir: Path) -> None:
    client, _ = api
    run = load_run(tiny_run_dir)
    body = client.post("/api/search", json={"id": 30, "k": 9}).json()
    assert body["query"]["id"] == 30 and body["query"]["label"] == run.db_labels[30]
    assert body["query"]["code"]["hex"] == bytes(run.db_codes[30]).hex()
    want = reference_hits(run.db_codes[30], run.db_codes, np.arange(72), 9, exclude=30,
                          semantic_bits=run.semantic_bits)
    assert [(h["id"], h["distance"]) for h in body["hits"]] == want


def test_search_within_radius(api, tiny_run_dir: Path) -> None:
    client, _ = api
    run = load_run(tiny_run_dir)
    body = client.post("/api/search", json={"id": 0, "k": 1000, "radius": 6}).json()
    want = reference_hits(run.db_codes[0], run.db_codes, np.arange(72), 1000, radius=6,
                          exclude=0, semantic_bits=run.semantic_bits)
    assert [(h["id"], h["distance"]) for h in body["hits"]] == want
    capped = client.post("/api/search", json={"id": 0, "k": 2,
                                               "radius": run.semantic_bits}).json()
    assert [(h["id"], h["distance"]) for h in capped["hits"]] == reference_hits(
        run.db_codes[0], run.db_codes, np.arange(72), 2, exclude=0,
        semantic_bits=run.semantic_bits)


@pytest.mark.parametrize("payload, status", [
    ({"id": 999}, 404), ({"id": 1, "k": 0}, 422), ({"id": 1, "k": 1001}, 422),
    ({"id": "x"}, 422), ({"k": 3}, 422), ({"id": 1, "radius": -1}, 422),
    ({"id": 1, "extra": 1}, 422)])
def test_search_by_id_errors(api, payload: dict, status: int) -> None:
    client, _ = api
    assert client.post("/api/search", json=payload).status_code == status


def test_search_form_errors(api) -> None:
    client, _ = api
    img = noise_png(1)
    assert client.post("/api/search", files={"image": ("q.png", img)},
                       data={"k": "abc"}).status_code == 422
    assert client.post("/api/search", files={"image": ("q.png", img)},
                       data={"radius": "99"}).status_code == 422
    assert client.post("/api/search", files={"other": ("q.png", img)}).status_code == 422
    assert client.post("/api/search", content=b"hello",
                       headers={"Content-Type": "text/plain"}).status_code == 415


def test_upload_search_endpoint_matches_the_old_path(api) -> None:
    client, _ = api
    img = noise_png(7)
    new = client.post("/api/search/image", files={"image": ("q.png", img)}, data={"k": "5"})
    old = client.post("/api/search", files={"image": ("q.png", img)}, data={"k": "5"})
    assert new.status_code == old.status_code == 200 and new.json() == old.json()
    assert len(new.json()["hits"]) == 5
    assert client.post("/api/search/image", json={"id": 1}).status_code == 415
    two = [("image", ("a.png", img)), ("image", ("b.png", img))]
    assert client.post("/api/search/image", files=two).status_code == 422


def test_errors_carry_fields() -> None:
    err = UnknownItemError(5)
    assert isinstance(err, KeyError) and err.item_id == 5
    assert str(err) == "no archive item has id 5"
    assert UploadError("x", status=415).status == 415


def test_add_labelled_and_unlabelled_then_delete(api, run_dir: Path) -> None:
    client, archive = api
    run = archive.run
    first, second = noise_png(1), noise_png(2)
    r = client.post("/api/items", headers=AUTH, data={"label": "forest"},
                    files=[("image", ("a.png", first)), ("image", ("b.png", second))])
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert [it["id"] for it in items] == [72, 73] and r.json()["count"] == 74
    forest = run.classes.index("forest")
    assert all(it["label"] == forest and it["class"] == "forest" for it in items)
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in (first, second)]
    want = run.codes_for_labelled(["a", "b"], np.array([forest, forest]), images=images)
    assert archive.code_of(72).tobytes() == want[0].tobytes()
    assert archive.code_of(73).tobytes() == want[1].tobytes()
    r = client.post("/api/items", headers=AUTH, files={"image": ("c.png", first)})
    (plain,) = r.json()["items"]
    assert plain["label"] == -1 and plain["class"] is None
    code = run.encode_images([Image.open(io.BytesIO(first)).convert("RGB")])
    assert archive.code_of(plain["id"]).tobytes() == code.tobytes()
    stored = sorted(p.name for p in (run_dir / "archive.images").iterdir())
    assert len(stored) == 2 and all(len(p.split(".")[0]) == 64 for p in stored)  # by content

    reopened = Archive.open(run_dir)  # persisted through the index file
    assert len(reopened) == 75 and reopened.item(73)["class"] == "forest"
    assert client.get("/api/classes").json()["unlabelled"] == 1
    hits = client.post("/api/search", json={"id": 72, "k": 100}).json()["hits"]
    # Same label, same code step: item 73 has item 72's code (learned forest items may too).
    assert {h["id"]: h["distance"] for h in hits}[73] == 0
    assert client.get("/api/items/74/image").status_code == 200

    assert client.delete("/api/items/72", headers=AUTH).json() == {"deleted": 72, "count": 74}
    assert len(list((run_dir / "archive.images").iterdir())) == 2  # item 74 still uses it
    assert client.delete("/api/items/74", headers=AUTH).status_code == 200
    assert len(list((run_dir / "archive.images").iterdir())) == 1
    assert client.get("/api/items/72").status_code == 404
    assert client.delete("/api/items/72", headers=AUTH).status_code == 404
    assert len(Archive.open(run_dir)) == 73
    assert client.get("/api/info").json()["index"]["revision"] == 4


def test_add_rejects_unknown_class_and_changes_nothing(api, run_dir: Path) -> None:
    client, _ = api
    before = snapshot(run_dir)
    r = client.post("/api/items", headers=AUTH, data={"label": "moon"},
                    files={"image": ("a.png", noise_png(1))})
    assert r.status_code == 422 and "forest" in r.json()["detail"]
    assert snapshot(run_dir) == before


def test_failed_save_rolls_back(api, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, archive = api

    def broken(*args) -> None:
        raise OSError("disk full")

    from ahcl.index import wal
    monkeypatch.setattr(wal, "append", broken)
    before = snapshot(run_dir)
    with pytest.raises(OSError):
        client.post("/api/items", headers=AUTH, files={"image": ("a.png", noise_png(1))})
    assert snapshot(run_dir) == before and len(archive) == 72
    with pytest.raises(OSError):
        client.delete("/api/items/3", headers=AUTH)
    assert len(archive) == 72 and archive.item(3)["id"] == 3
    assert archive.code_of(3).tobytes() == archive.run.db_codes[3].tobytes()


def test_write_access_rules(run_dir: Path) -> None:
    img = {"image": ("a.png", noise_png(3))}
    client, _ = make_client(run_dir)
    assert client.post("/api/items", files=img).status_code == 401
    assert client.post("/api/items", files=img,
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.delete("/api/items/1", headers={"Authorization": TOKEN}).status_code == 401
    closed, _ = make_client(run_dir, token=None)
    assert closed.post("/api/items", files=img).status_code == 403
    public, _ = make_client(run_dir, token=None, allow_writes=True, host="0.0.0.0")
    assert public.post("/api/items", files=img).status_code == 403
    local, _ = make_client(run_dir, token=None, allow_writes=True, host="127.0.0.1")
    assert local.post("/api/items", files=img).status_code == 201
    assert local.get("/api/info").json()["writes"] == "open"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.0.1", True),
                                            ("::1", True), ("localhost", True),
                                            ("0.0.0.0", False), ("10.0.0.2", False),
                                            ("example.org", False), ("::", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_page_docs_and_schema(api) -> None:
    client, _ = api
    page = client.get("/")
    assert page.status_code == 200 and 'id="drop"' in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.replace('href="/docs"', "")  # nothing from the internet
    for path in ("/static/app.js", "/static/style.css", "/static/docs.js"):
        assert client.get(path).status_code == 200
    assert "openapi.json" in client.get("/docs").text
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/api/search", "/api/search/image", "/api/items",
                                    "/api/items/{item_id}", "/api/items/{item_id}/image",
                                    "/api/classes", "/api/health", "/api/info",
                                    "/api/scenes", "/api/scenes/{number}/overview"}
    # One body type per endpoint, as FastAPI generates them (/api/search still takes uploads).
    assert set(schema["paths"]["/api/search"]["post"]["requestBody"]["content"]) == {
        "application/json"}
    assert set(schema["paths"]["/api/search/image"]["post"]["requestBody"]["content"]) == {
        "multipart/form-data"}
    assert client.get("/static/../serve/app.py").status_code == 404


def test_serve_an_index_file(tiny_run_dir: Path, tmp_path: Path) -> None:
    index = tmp_path / "arch.index"
    assert main(["index", "build", str(tiny_run_dir), "--out", str(index)]) == 0
    with pytest.raises(AhclError, match="--run RUN"):
        Archive.open(index)
    client, _ = make_client(index, run=tiny_run_dir)
    assert client.get("/api/health").json()["items"] == 72
    assert client.get("/api/items/4/image").status_code == 200
    r = client.post("/api/items", headers=AUTH, files={"image": ("a.png", noise_png(4))})
    assert r.status_code == 201
    assert len(list((tmp_path / "arch.images").iterdir())) == 1
    assert len(Archive.open(index, run=tiny_run_dir)) == 73


def test_cli_usage_errors(tiny_run_dir: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture) -> None:
    index = tmp_path / "arch.index"
    assert main(["index", "build", str(tiny_run_dir), "--out", str(index)]) == 0
    capsys.readouterr()
    assert main(["serve", str(index)]) == 1
    assert "--run RUN" in capsys.readouterr().err
    assert main(["serve", str(tiny_run_dir), "--allow-writes", "--host", "0.0.0.0"]) == 1
    assert "loopback" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "nothing")]) == 1


def test_concurrent_encodes_share_one_forward_pass(api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests that arrive while a forward pass runs are encoded together in the next one, and
    each caller gets the codes of its own images."""
    import threading
    import time

    _, archive = api
    passes: list[int] = []
    started = threading.Event()

    def fake_encode(inputs):
        passes.append(len(inputs))
        started.set()
        if len(passes) == 1:
            time.sleep(0.3)  # the first pass is slow: the others queue meanwhile
        return np.array([[im.getpixel((0, 0))[0]] * 8 for im in inputs], dtype=np.uint8)

    monkeypatch.setattr(archive.run, "image_inputs", list)  # the images stand for their inputs
    monkeypatch.setattr(archive.run, "encode_inputs", fake_encode)
    images = [Image.new("RGB", (4, 4), (v, 0, 0)) for v in range(7)]
    got: dict[int, np.ndarray] = {}

    def call(i: int, ims) -> None:
        got[i] = archive.encode(ims)

    first = threading.Thread(target=call, args=(0, images[:1]))
    first.start()
    started.wait(5)
    others = [threading.Thread(target=call, args=(i, images[i:i + 1] if i < 5 else images[5:]))
              for i in range(1, 6)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(10)
    assert passes == [1, 6]  # five callers (one with two images) in one second pass
    for i in range(5):
        assert got[i].tolist() == [[i] * 8]
    assert got[5].tolist() == [[5] * 8, [6] * 8]


def test_a_request_has_a_pixel_budget(run_dir: Path) -> None:
    """The images of one addition may hold 4 x max_pixels together, checked from their headers
    before any is decoded (#16 item 5); under it they are added."""
    client, archive = make_client(run_dir, max_pixels=2000)  # 40 x 40 = 1600 each
    before = snapshot(run_dir)
    files = [("image", (f"{i}.png", noise_png(100 + i))) for i in range(6)]  # 9600 > 8000
    r = client.post("/api/items", headers=AUTH, files=files)
    assert r.status_code == 400 and "per request" in r.json()["detail"]
    assert "\n" not in r.json()["detail"] and snapshot(run_dir) == before
    r = client.post("/api/items", headers=AUTH, files=files[:4])
    assert r.status_code == 201 and len(r.json()["items"]) == 4
