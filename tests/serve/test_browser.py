"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright)."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ahcl.serve import Archive, ServeSettings, create_app
from tests.serve._server import ServerThread
from tests.serve.conftest import TOKEN, noise_png

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium's own connections get refused in sandboxes.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        pytest.skip("no chromium: install it with `apt-get install -y chromium` to run the "
                    "browser test")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="pip install playwright (never `playwright install`: "
                                          "the test uses Debian's chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).is_file()
                              else shutil.which("chromium"), args=ARGS, headless=True)
        yield b
        b.close()


def _open_page(browser, url: str):
    """A new page on the service's front page, loaded, and the list its script errors go to."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    page.wait_for_selector("#class-list button")
    return page, errors


def test_upload_results_click_and_browse(browser, run_dir: Path, tmp_path: Path) -> None:
    archive = Archive.open(run_dir)
    query = archive.run.db_paths[40]
    with ServerThread(create_app(archive, ServeSettings())) as server:
        page, errors = _open_page(browser, server.url)
        assert page.locator("#class-list button").count() == 6
        assert page.locator("#add-panel").is_hidden()  # writes disabled: no add form

        page.fill("#k", "8")
        page.select_option("#qclass", label=archive.run.classes[archive.run.db_labels[40]])
        page.set_input_files("#file", query)
        page.wait_for_selector("#results .hit")
        hits = page.locator("#results .hit")
        assert hits.count() == 8
        assert page.locator("#query-what").inner_text() == f"uploaded: {Path(query).name}"
        assert re.fullmatch(r"precision of the 8 shown: [01]\.\d\d \(\d/8 of class \w+\)",
                            page.locator("#precision").inner_text())
        # every thumbnail actually loaded
        page.wait_for_function("[...document.querySelectorAll('#results img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
        assert (tmp_path / "results.png").stat().st_size > 1000

        clicked = hits.nth(2).get_attribute("data-id")
        hits.nth(2).click()
        page.wait_for_function(f"document.getElementById('query-what').textContent"
                               f".startsWith('archive item #{clicked} ')")
        page.wait_for_selector("#results .hit")
        new_ids = page.locator("#results .hit").evaluate_all("els => els.map(e => e.dataset.id)")
        assert len(new_ids) == 8 and clicked not in new_ids  # searched again, itself left out
        assert page.locator("#precision").inner_text().startswith("precision of the 8 shown")
        page.screenshot(path=str(tmp_path / "from_result.png"), full_page=True)

        page.locator("#class-list button").nth(1).click()
        page.wait_for_function("document.getElementById('status').textContent"
                               ".includes('of 12 items')")
        assert page.locator("#results .card").count() == 12
        page.locator("#results .card").first.click()
        page.wait_for_selector("#results .hit")
        assert not errors, errors
        page.close()


def test_results_show_both_distances_in_rank_order(browser, run_dir: Path,
                                                   tmp_path: Path) -> None:
    """Issue #12: hits show ``d=semantic·instance`` in that pair's order, as a screenshot shows."""
    archive = Archive.open(run_dir)
    assert archive.run.instance_bits > 0  # the tiny run has 8 semantic + 24 instance bits
    qid = 40
    label = archive.item(qid)["label"]
    k = 12
    with ServerThread(create_app(archive, ServeSettings())) as server:
        page, errors = _open_page(browser, server.url)
        page.fill("#k", str(k))
        # search by clicking an archive image: browse its class, click it
        page.locator("#class-list button").nth(label).click()
        page.wait_for_function("document.getElementById('status').textContent"
                               ".includes('click one to search from it')")
        assert page.locator("#results .dist").count() == 0  # browsing shows no distances
        page.locator(f'#results .card[data-id="{qid}"]').click()
        page.wait_for_function(f"document.getElementById('query-what').textContent"
                               f".startsWith('archive item #{qid} ')")
        page.wait_for_selector("#results .hit")
        hits = page.locator("#results .hit")
        assert hits.count() == k

        rows = hits.evaluate_all(
            "els => els.map(e => [e.dataset.id, e.querySelector('.dist').textContent,"
            " e.querySelector('.dist').title])")
        shown = []
        for hit_id, text, title in rows:
            m = re.fullmatch(r"d=(\d+)·(\d+)", text)
            assert m, text
            assert title.startswith("semantic distance · instance distance")
            shown.append((int(m[1]), int(m[2]), int(hit_id)))
        # page order is (semantic, instance, id) ascending, and is the archive's own ranking
        assert shown == sorted(shown)
        expected = archive.search(archive.code_of(qid), k, exclude=qid)
        assert shown == [(h.distance, h.instance_distance, h.id) for h in expected]
        instance = [inst for _, inst, _ in shown]
        assert len(set(instance)) > 1, shown  # distinct distances, not every hit at d=0

        # the screenshot: the result grid with its thumbnails and distances drawn
        page.wait_for_function("[...document.querySelectorAll('#results img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        shot = tmp_path / "distances.png"
        page.locator("#results").screenshot(path=str(shot))
        data = shot.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
        grid = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64)
        box = page.locator("#results").bounding_box()  # the shot is the grid's own box
        assert box and abs(grid.shape[1] - box["width"]) <= 1
        assert abs(grid.shape[0] - box["height"]) <= 1
        assert grid.var() > 0  # not a blank area
        # two hits whose distances differ are drawn differently: the labels' own pixels
        other = next(i for i, v in enumerate(instance) if v != instance[0])
        labels = [np.asarray(Image.open(io.BytesIO(hits.nth(i).locator(".dist").screenshot()))
                             .convert("L")) for i in (0, other)]
        assert all(lab.var() > 0 for lab in labels)
        assert labels[0].shape != labels[1].shape or not np.array_equal(*labels)
        assert not errors, errors
        page.close()


def test_add_images_through_the_form(browser, run_dir: Path) -> None:
    archive = Archive.open(run_dir)
    before = len(archive)
    name = archive.classes[2]
    count_before = archive.class_counts()[0][2]
    files = [{"name": f"new{i}.png", "mimeType": "image/png", "buffer": noise_png(100 + i)}
             for i in range(2)]
    with ServerThread(create_app(archive, ServeSettings(token=TOKEN))) as server:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        page.wait_for_selector("#add-panel:not([hidden])")
        assert page.locator("#add-token").is_visible()
        assert page.locator("#add-class option").all_inner_texts()[1:] == list(archive.classes)

        # no token: the server's 401 message is shown and nothing is added
        page.set_input_files("#add-files", files)
        page.select_option("#add-class", label=name)
        page.click("#add-submit")
        page.wait_for_function("document.getElementById('add-status').textContent"
                               ".startsWith('add failed: 401: ')")
        assert len(archive) == before

        page.fill("#add-token", TOKEN)
        page.click("#add-submit")
        page.wait_for_function("document.getElementById('add-status').textContent"
                               ".startsWith('added ')")
        assert len(archive) == before + 2
        new_ids = sorted(archive.items(2, 0, 500)[1], key=lambda it: it["id"])[-2:]
        assert page.locator("#add-status").inner_text() == (
            f"added #{new_ids[0]['id']}, #{new_ids[1]['id']}; "
            f"the archive now holds {before + 2} items")
        # the header count and the class list were refreshed from /api/info and /api/classes
        page.wait_for_function(f"document.getElementById('info').textContent"
                               f".startsWith('{before + 2} items')")
        assert page.locator("#class-list button").nth(2).inner_text() == \
            f"{name} ({count_before + 2})"
        assert page.locator("#add-class").input_value() == name  # choice kept across refresh
        assert page.evaluate("sessionStorage.getItem('ahcl-token')") == TOKEN
        page.reload()
        page.wait_for_selector("#add-panel:not([hidden])")
        assert page.locator("#add-token").input_value() == TOKEN  # kept for the session
        assert not errors, errors
        page.close()
