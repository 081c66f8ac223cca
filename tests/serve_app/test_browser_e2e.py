"""The web page at ``/`` end to end: the real Serve application, driven by headless Chromium.

Uses the package's Serve application over the tiny artifact set (conftest.py; this module sorts
before test_serve_app.py so it sees the application before items change), opens the page and uses it like a person would: fills the attribute form and searches, uploads a photo,
follows "More like this", asks for a stored user's recommendations, then an unknown user's and a
too-large k (both must show the API's message), and saves a screenshot (pytest's tmp_path and
artifacts/e2e/web.png).

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/ensure_browser.sh`` installs them as
root; ``make test`` runs it); skipped with a reason when they are absent. Selenium talks to the
system chromedriver directly, so Selenium Manager never downloads anything.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.serve_app.running import MAX_K
from recsys.encoders.handcrafted import HAND_CRAFTED_LABEL

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
MISSING = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() and os.access(p, os.X_OK))]

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(bool(MISSING), reason=f"headless browser not installed: {', '.join(MISSING)} missing "
                                             "(as root: scripts/ensure_browser.sh, or apt-get install chromium "
                                             "chromium-driver; CHROMIUM/CHROMEDRIVER override the paths)"),
]

WAIT_S = 60  # one request on a loaded 2-CPU machine (the first photo embedding is the slowest)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--lang=en-US", "--no-first-run", "--disable-extensions",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# -- helpers ------------------------------------------------------------------------------------
def _by():
    from selenium.webdriver.common.by import By

    return By


def _wait(driver, condition, timeout: float = WAIT_S, what: str = "condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message=f"waiting for {what}")


def _open(driver, url: str) -> None:
    driver.get(url + "/")
    _wait(driver, lambda d: d.find_element(_by().TAG_NAME, "body").get_attribute("data-ready") == "true",
          what="the page to load /api/attributes")


def _submit(driver, button_id: str) -> str:
    """Click a form's button and wait for the page's answer; returns 'done' or 'error'."""
    driver.execute_script("document.body.dataset.state = 'submitted'")
    driver.find_element(_by().ID, button_id).click()
    _wait(driver, lambda d: d.find_element(_by().TAG_NAME, "body").get_attribute("data-state") in ("done", "error"),
          what=f"the answer to #{button_id}")
    return driver.find_element(_by().TAG_NAME, "body").get_attribute("data-state")


def _cards(driver) -> list[dict]:
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#results .card')).map((c) => ({
          id: c.dataset.itemId, rank: Number(c.dataset.rank), score: Number(c.dataset.score),
          scoreText: c.querySelector('.score').textContent, idText: c.querySelector('.item-id').textContent,
          img: c.querySelector('img') && c.querySelector('img').getAttribute('src')}));""")


def _images_loaded(driver) -> bool:
    return driver.execute_script("""
        const imgs = Array.from(document.querySelectorAll('#results .card img'));
        return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);""")


def _error_text(driver) -> str:
    box = driver.find_element(_by().ID, "error")
    return box.text if box.is_displayed() else ""


def _set(element, value: str) -> None:
    element.clear()
    element.send_keys(value)


def _attribute_search(driver, k: int) -> str:
    from selenium.webdriver.support.ui import Select

    By = _by()
    Select(driver.find_element(By.ID, "attr-category")).select_by_value("블라우스")
    Select(driver.find_element(By.ID, "attr-style")).select_by_value("로맨틱")
    _set(driver.find_element(By.ID, "attr-material"), "시폰")
    _set(driver.find_element(By.ID, "search-k"), str(k))
    _set(driver.find_element(By.ID, "search-mmr"), "1")  # pure relevance: scores come out sorted
    return _submit(driver, "search-button")


def _upload(driver, path: Path) -> str:
    By = _by()
    driver.find_element(By.ID, "upload-file").send_keys(str(path))
    _set(driver.find_element(By.ID, "upload-k"), "8")
    return _submit(driver, "upload-button")


# -- tests --------------------------------------------------------------------------------------
def test_page_is_served_but_not_in_the_api_schema(url):
    page = requests.get(url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = requests.get(f"{url}/static/{asset}", timeout=10)
        assert response.status_code == 200 and kind in response.headers["content-type"], asset
    assert requests.get(f"{url}/static/nope.js", timeout=10).status_code == 404
    paths = requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def test_attribute_search_shows_a_sorted_grid_and_similar_items(url, browser):
    By = _by()
    _open(browser, url)
    # the form is built from GET /api/attributes: every field the model reads is there
    spec = requests.get(f"{url}/api/attributes", timeout=10).json()
    for field in spec["fields"]:
        assert browser.find_element(By.ID, f"attr-{field}")
    assert _attribute_search(browser, k=6) == "done", _error_text(browser)
    cards = _cards(browser)
    assert len(cards) == 6 and [c["rank"] for c in cards] == [1, 2, 3, 4, 5, 6]
    scores = [c["score"] for c in cards]
    assert scores == sorted(scores, reverse=True)
    for card in cards:
        assert card["scoreText"] == f"score {card['score']:.4f}" and card["idText"] == card["id"]
        assert card["img"] == f"/images/{card['id']}"
    _wait(browser, _images_loaded, what="the result images")
    assert "6 results" in browser.find_element(By.ID, "status").text
    assert HAND_CRAFTED_LABEL in browser.find_element(By.ID, "results-meta").text  # honest about the encoder
    # the same query through the API gives the same items in the same order
    api = requests.post(f"{url}/api/search", timeout=30, json={
        "attributes": {"category": "블라우스", "style": ["로맨틱"], "material": ["시폰"]}, "k": 6, "mmr_lambda": 1.0,
        "scope": "all"}).json()
    assert [c["id"] for c in cards] == [h["item"]["item_id"] for h in api["results"]]
    # "More like this" on the first card -> GET /api/similar/{id}
    first = cards[0]["id"]
    browser.execute_script("document.body.dataset.state = 'submitted'")
    browser.find_element(By.CSS_SELECTOR, "#results .card .similar-link").click()
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done",
          what="similar items")
    assert first in browser.find_element(By.ID, "results-title").text
    assert len(_cards(browser)) > 0


def test_photo_upload_shows_a_grid_and_saves_a_screenshot(url, browser, tmp_path):
    By = _by()
    photo = tmp_path / "red_dress.jpg"
    Image.new("RGB", (64, 96), (200, 30, 30)).save(photo, format="JPEG")
    _open(browser, url)
    assert _attribute_search(browser, k=6) == "done", _error_text(browser)  # leaves a filled form in the shot
    assert _upload(browser, photo) == "done", _error_text(browser)
    cards = _cards(browser)
    assert len(cards) == 8 and all(c["id"] and c["scoreText"].startswith("score ") for c in cards)
    assert "red_dress.jpg" in browser.find_element(By.ID, "results-title").text
    assert browser.find_element(By.ID, "query-image").is_displayed()
    assert "photo 64×96" in browser.find_element(By.ID, "results-meta").text
    # no new products in this catalog: the API's note says it answered from the whole catalog
    note = browser.find_element(By.ID, "results-note")
    assert note.is_displayed() and "no new products" in note.text
    _wait(browser, _images_loaded, what="the result images")
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "web.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with Image.open(shot) as image:
        assert image.size[0] >= 800 and image.size[1] >= 600
        extrema = image.convert("L").getextrema()
        assert extrema[1] - extrema[0] > 100  # not a blank page
    saved = REPO_ROOT / "artifacts" / "e2e" / "web.png"
    saved.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, saved)
    # nothing the page did raised a JavaScript error
    logs = browser.get_log("browser")
    assert not [e for e in logs if e.get("source") == "javascript"], logs


def test_user_recommendations_and_api_errors_on_the_page(url, browser, built, tmp_path):
    import pyarrow.parquet as pq

    By = _by()
    _open(browser, url)
    # a stored user -> GET /api/recommend/user/{id}: a grid, and who the user is
    known = pq.read_table(built["users"] / "users.parquet", columns=["user_id"])["user_id"][0].as_py()
    _set(browser.find_element(By.ID, "user-id"), known)
    _set(browser.find_element(By.ID, "user-k"), "5")
    assert _submit(browser, "user-button") == "done", _error_text(browser)
    cards = _cards(browser)
    assert 0 < len(cards) <= 5 and [c["rank"] for c in cards] == list(range(1, len(cards) + 1))
    assert all(c["scoreText"].startswith("score ") for c in cards)
    api = requests.get(f"{url}/api/recommend/user/{known}", params={"k": 5}, timeout=30).json()
    assert [c["id"] for c in cards] == [h["item"]["item_id"] for h in api["results"]]
    assert f"user {known}:" in browser.find_element(By.ID, "results-meta").text
    _wait(browser, _images_loaded, what="the result images")
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / "web_user.png"))
    # an unknown user: the API's 404 and its detail are shown, the grid is emptied
    user = "no-such-user-0000"
    expected = requests.get(f"{url}/api/recommend/user/{user}", params={"k": 5}, timeout=30)
    assert expected.status_code == 404, expected.text
    _set(browser.find_element(By.ID, "user-id"), user)
    assert _submit(browser, "user-button") == "error"
    message = _error_text(browser)
    assert "404" in message and expected.json()["detail"] in message, message
    assert _cards(browser) == []
    assert user in browser.find_element(By.ID, "results-title").text
    browser.save_screenshot(str(tmp_path / "web_error.png"))
    # too many results asked for: the API's 422 names the field and the limit
    _set(browser.find_element(By.ID, "search-text"), "black skirt")
    _set(browser.find_element(By.ID, "search-k"), "1000")
    assert _submit(browser, "search-button") == "error"
    message = _error_text(browser)
    assert "422" in message and f"k: expected an integer in [1, {MAX_K}]" in message, message
    # a good request afterwards clears the message
    _set(browser.find_element(By.ID, "search-k"), "3")
    assert _submit(browser, "search-button") == "done", _error_text(browser)
    assert _error_text(browser) == "" and len(_cards(browser)) == 3


def _value_at(payload: dict, path: str):
    value = payload
    for key in path.split("."):
        value = None if value is None else value.get(key)
    return value


def _shown(value) -> str:
    """The page's fmt(): integers as they are, other numbers with 3 decimals, None as a dash."""
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
    return str(value)


def test_kpi_dashboard_shows_the_api_values_and_saves_a_screenshot(url, browser, tmp_path):
    """/kpi draws KPI cards, curves, top-k images, augmented samples and hyper-parameters from
    GET /api/kpi; the training cards equal the API's values (JSON in data-value and the formatted
    text), the live cards are the API's serving block."""
    By = _by()
    browser.get(url + "/kpi?static")  # no auto-refresh: the page shows one answer of /api/kpi
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true",
          what="the KPI page to load /api/kpi")
    api = requests.get(f"{url}/api/kpi", timeout=30).json()
    cards = browser.execute_script("""
        return Array.from(document.querySelectorAll('.kpi-card')).map((c) => ({
          key: c.dataset.kpi, value: JSON.parse(c.dataset.value), text: c.querySelector('.kpi-value').textContent}));""")
    training = [c for c in cards if c["key"].startswith("kpi.")]
    assert len(training) == 8 and any(c["value"] is not None for c in training)
    for c in training:
        assert c["value"] == _value_at(api, c["key"]), c
        assert c["text"] == _shown(c["value"]), c
    assert next(c for c in training if c["key"] == "kpi.image_encoder_pretrained")["text"] == HAND_CRAFTED_LABEL
    serving = {c["key"]: c for c in cards if c["key"].startswith("serving.")}
    assert serving["serving.catalog.items"]["value"] == api["serving"]["catalog"]["items"]
    assert 0 < serving["serving.requests"]["value"] <= api["serving"]["requests"]  # the API was asked once more
    assert browser.execute_script("return document.querySelectorAll('#curves polyline').length") >= 2
    shown_hits = browser.execute_script(
        "return Array.from(document.querySelectorAll('#top-k .thumb')).map((f) => f.dataset.itemId)")
    assert shown_hits == [h["item_id"] for entry in api["top_k_images"] for h in entry["hits"]]
    views = sum(len(s["views"]) + 1 for s in api["augmented_samples"]["samples"])
    assert browser.execute_script("return document.querySelectorAll('#augmented img').length") == views
    assert '"train"' in browser.find_element(By.ID, "hyperparams").text or browser.find_element(
        By.ID, "hyperparams").text.strip().startswith("{")
    _wait(browser, lambda d: d.execute_script(
        "return Array.from(document.images).every((i) => i.complete && i.naturalWidth > 0)"), what="the images")
    for target in (tmp_path / "kpi.png", REPO_ROOT / "artifacts" / "e2e" / "kpi.png"):
        target.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(target))
        assert Image.open(target).size[0] > 0
