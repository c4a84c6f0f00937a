"""The web page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The service runs in uvicorn on a free loopback port in a thread. The browser enters the
token, searches, submits a triage case and a wrong file, and writes a report whose
words show their attention maps on focus.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medfusion.serve import create_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-token"

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
if not CHROMIUM.is_file():
    pytest.skip("no Chromium at /usr/bin/chromium (Debian: apt-get install -y chromium)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(triage_run, search_setup, report_setup):
    """URL of the service (every model, token required) running in uvicorn in a thread."""
    import uvicorn

    _, clip, index = search_setup
    app = create_app(triage_run, str(index), clip, report_setup[1], token=TOKEN)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the service did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(base_url):
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        tab = context.new_page()
        tab.set_default_timeout(60_000)  # generous: CI shares 2 cores with the other test worker
        tab.goto(base_url)
        yield tab
        browser.close()


def test_browser_token_then_search(page) -> None:
    expect = playwright_api.expect
    expect(page.locator("#status")).to_have_text("This server needs an access token.")
    expect(page.locator("#token")).to_be_focused()
    page.fill("#token", TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_contain_text("serving predict, search, report")
    page.fill("#search-text", "left pleural effusion")
    page.keyboard.press("Enter")
    expect(page.locator("#search-summary")).to_contain_text("10 results for the text")
    hits = page.locator("#search-results li.hit")
    expect(hits).to_have_count(10)
    expect(hits.first.locator(".score")).to_contain_text("#1 · score")
    first = hits.first.locator("img")
    page.wait_for_function("img => img.complete && img.naturalWidth === 160", arg=first.element_handle())


def test_browser_triage_case(page, triage_cohort, tmp_path: Path) -> None:
    expect = playwright_api.expect
    frame = pd.read_parquet(triage_cohort)
    page.set_input_files("#triage-image", str(triage_cohort.parent / frame["image"].dropna().iloc[0]))
    page.get_by_label("Heart rate").fill("118")
    page.get_by_label("Spo2").fill("89")
    page.get_by_label("Clinical note").fill("Productive cough, fever, crackles at the right base.")
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#triage-result .probability")).to_contain_text("probability of pneumonia")
    bars = page.locator("#triage-result .bars li")
    expect(bars).to_have_count(3)
    expect(bars.nth(1)).to_contain_text("note")
    assert sum(float(text.rstrip("%")) for text in page.locator(".bars .value").all_inner_texts()) == \
        pytest.approx(100, abs=2)
    expect(page.locator("#triage-result .summary")).to_contain_text("ms on the server")
    (tmp_path / "scan.png").write_bytes(b"GIF89a" + bytes(100))
    page.set_input_files("#triage-image", str(tmp_path / "scan.png"))
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#triage-error")).to_have_text(
        "415: image: expected DICOM, PNG or JPEG content, received a GIF image")


def test_browser_report_words_show_their_maps(page, report_setup, tmp_path: Path) -> None:
    expect = playwright_api.expect
    manifest, _ = report_setup
    frame = pd.read_parquet(manifest)
    page.set_input_files("#report-image", str(manifest.parent / frame["image"].dropna().iloc[0]))
    page.get_by_role("button", name="Write report").click()
    sentence = page.locator("#report-text .sentence").first
    expect(sentence).to_be_visible()
    plain = page.locator("#report-view").get_attribute("src")
    sentence.focus()
    expect(page.locator("#report-caption")).to_contain_text("Attention of")
    shown = page.locator("#report-view").get_attribute("src")
    assert shown.startswith("data:image/png;base64,") and shown != plain
    pixels = np.asarray(Image.open(io.BytesIO(page.locator("#report-view").screenshot())))
    assert pixels.std() > 0  # the overlay is drawn
    sentence.blur()
    expect(page.locator("#report-caption")).to_have_text("Image (no map shown)")
