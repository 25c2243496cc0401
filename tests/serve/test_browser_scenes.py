"""The scene overviews of the web page (issue #15 item 4) in a real headless Chromium (Debian's
``chromium``, driven by Playwright; the ``browser`` fixture is test_browser.py's): footprints
drawn where the hits lie, the query's marked, a click on one searching from that tile, a click
elsewhere searching from that place, and the lon/lat under the mouse."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ahcl.serve import Archive, ServeSettings, create_app
from tests.serve._server import ServerThread
from tests.serve.test_browser import _open_page, browser  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow
pytest.importorskip("rasterio")
pytest.importorskip("pyproj")

from tests._geotiff import pixel_lonlat  # noqa: E402
from tests.serve.test_scene_overview import (HEIGHT, SIDE, WIDTH, chips_of,  # noqa: E402
                                              scene_archive)

COORDS = re.compile(r"lon (-?\d+\.\d{5}), lat (-?\d+\.\d{5}) · col (\d+), row (\d+)")


@pytest.fixture()
def served(tiny_run_dir: Path, tmp_path: Path):
    """A served archive of the six tiles of a 3 × 2 UTM mosaic; yields (url, archive)."""
    _, index = scene_archive(tiny_run_dir, tmp_path, chips_of(tiny_run_dir))
    archive = Archive.open(index, run=tiny_run_dir, thumb_size=32)
    with ServerThread(create_app(archive, ServeSettings())) as server:
        yield server.url, archive


def window_of(archive: Archive, item_id: int) -> list[int]:
    return archive.index.meta_of([item_id])[0]["window"]


def image_box(page) -> dict:
    page.wait_for_function("(() => { const i = document.querySelector('#scenes img');"
                           " return i && i.complete && i.naturalWidth > 0; })()")
    return page.locator("#scenes .scene img").bounding_box()


def assert_drawn_at(page, selector: str, window: list[int], box: dict) -> None:
    """The footprint's outline on screen (the middle of its stroke) is ``window`` scaled from the
    scene onto the image."""
    c0, r0, w, h = window
    sx, sy = box["width"] / WIDTH, box["height"] / HEIGHT
    outline = page.locator(selector)
    got = outline.bounding_box()  # the stroke's outer edge
    half = float(outline.evaluate("e => getComputedStyle(e).strokeWidth").removesuffix("px")) / 2
    middle = [got["x"] + half, got["y"] + half, got["width"] - 2 * half, got["height"] - 2 * half]
    want = (box["x"] + c0 * sx, box["y"] + r0 * sy, w * sx, h * sy)
    assert np.allclose(middle, want, atol=0.75), (selector, got, want)


def search_from_item(page, item_id: int) -> None:
    """Browse the (unlabelled) archive and click the item's card."""
    page.locator("#class-list button", has_text="unlabelled").click()
    page.wait_for_selector(f'#results .card[data-id="{item_id}"]')
    page.locator(f'#results .card[data-id="{item_id}"]').click()
    wait_query(page, f"archive item #{item_id} ")


def wait_query(page, start: str) -> None:
    page.wait_for_function(f"document.getElementById('query-what').textContent"
                           f".startsWith({start!r})")
    # the overviews are drawn after the hits, once the scene listing is in
    page.wait_for_function("document.getElementById('scenes').getAttribute('aria-busy') === "
                           "'false' && document.querySelectorAll('#results .hit').length > 0")


def hit_ids(page) -> list[int]:
    return [int(i) for i in page.locator("#results .hit").evaluate_all(
        "els => els.map(e => e.dataset.id)")]


def test_footprints_on_the_overview(browser, served, tmp_path: Path) -> None:  # noqa: F811
    url, archive = served
    page, errors = _open_page(browser, url)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    assert page.locator("#scenes").is_hidden()
    page.fill("#k", "5")
    search_from_item(page, 4)

    assert page.locator("#scenes .scene").count() == 1  # one scene has hits
    ids = hit_ids(page)
    assert len(ids) == 5 and 4 not in ids
    rects = page.locator("#scenes rect.footprint.hit")
    assert rects.count() == 5
    assert sorted(int(i) for i in rects.evaluate_all("els => els.map(e => e.dataset.id)")) == \
        sorted(ids)
    assert page.locator("#scenes rect.footprint.query").count() == 1
    box = image_box(page)
    assert abs(box["width"] / box["height"] - WIDTH / HEIGHT) < 0.02
    for i in ids:
        assert_drawn_at(page, f'#scenes rect.hit[data-id="{i}"]', window_of(archive, i), box)
    assert_drawn_at(page, "#scenes rect.query", window_of(archive, 4), box)
    caption = page.locator("#scenes figcaption").inner_text()
    assert "scene 0 · mosaic.tif · 144 × 96 px · EPSG:32633 · 5 of its 6 tiles" in caption

    # the overview and its outlines as a screenshot: not blank, outlines in their colour
    shot = np.asarray(Image.open(io.BytesIO(page.locator("#scenes .overview").screenshot()))
                      .convert("RGB"), dtype=np.int32)
    assert shot.std() > 10
    blue = (np.abs(shot - [31, 111, 235]).sum(axis=2) < 60).mean()
    assert blue > 0.005, blue
    page.screenshot(path=str(tmp_path / "scenes.png"), full_page=True)

    # hovering a footprint lights up its card
    second = ids[1]
    page.locator(f'#scenes rect.hit[data-id="{second}"]').hover()
    assert "focus" in page.locator(f'#results .card[data-id="{second}"]').get_attribute("class")
    assert all(u.startswith(url) for u in requests), requests  # nothing from elsewhere
    assert not errors, errors
    page.close()


def test_coordinates_under_the_mouse(browser, served) -> None:  # noqa: F811
    url, archive = served
    page, errors = _open_page(browser, url)
    search_from_item(page, 0)
    box = image_box(page)
    for fx, fy in ((0.3, 0.6), (0.81, 0.12)):
        x, y = round(box["x"] + fx * box["width"]), round(box["y"] + fy * box["height"])
        page.mouse.move(x, y)
        text = page.locator("#scenes .coords").inner_text()
        m = COORDS.fullmatch(text)
        assert m, text
        col = (x - box["x"]) / box["width"] * WIDTH
        row = (y - box["y"]) / box["height"] * HEIGHT
        lon, lat = pixel_lonlat(col, row)  # pyproj, independently of the page
        assert float(m[1]) == pytest.approx(lon, abs=1e-5)
        assert float(m[2]) == pytest.approx(lat, abs=1e-5)
        assert abs(int(m[3]) - col) <= 1 and abs(int(m[4]) - row) <= 1
    assert not errors, errors
    page.close()


def test_clicks_search_from_a_footprint_and_from_a_place(browser, served) -> None:  # noqa: F811
    url, archive = served
    page, errors = _open_page(browser, url)
    page.fill("#k", "5")
    search_from_item(page, 4)
    target = hit_ids(page)[2]
    page.locator(f'#scenes rect.hit[data-id="{target}"]').click()  # as clicking its card
    wait_query(page, f"archive item #{target} ")
    assert target not in hit_ids(page)
    box = image_box(page)
    assert_drawn_at(page, "#scenes rect.query", window_of(archive, target), box)

    # a click outside the hits (on the query's own tile): the tile around that point
    c0, r0, w, h = window_of(archive, target)
    page.mouse.click(box["x"] + (c0 + w / 2) / WIDTH * box["width"],
                     box["y"] + (r0 + h / 2) / HEIGHT * box["height"])
    wait_query(page, "place: scene 0 (mosaic.tif), window ")
    assert page.locator("#query-what").inner_text() == \
        f"place: scene 0 (mosaic.tif), window [{c0}, {r0}, {SIDE}, {SIDE}]"
    assert page.locator("#query-img").is_hidden()
    ids = hit_ids(page)
    assert target in ids  # a place query of an indexed tile finds that tile
    assert page.locator("#scenes rect.hit").count() == 5
    assert_drawn_at(page, "#scenes rect.query", [c0, r0, SIDE, SIDE], image_box(page))
    assert not errors, errors
    page.close()


def test_an_archive_of_chips_shows_no_overview(browser, run_dir: Path) -> None:  # noqa: F811
    archive = Archive.open(run_dir)
    with ServerThread(create_app(archive, ServeSettings())) as server:
        page, errors = _open_page(browser, server.url)
        page.set_input_files("#file", archive.run.db_paths[3])
        page.wait_for_selector("#results .hit")
        page.wait_for_timeout(300)  # the scene listing would come after the hits
        assert page.locator("#scenes").is_hidden()
        assert page.locator("#scenes .scene").count() == 0
        assert not errors, errors
        page.close()
