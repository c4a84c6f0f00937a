"""Screenshots of the web page's three views, served with real trained runs, in Debian's headless Chromium.

    .venv/bin/python scripts/screenshot_page.py --model runs/triage/early --index index/retrieval_100k \
        --search-model runs/retrieval/clip --report-model runs/pathology/report \
        --xray data/triage/images/SYN-000001.png --histology data/pathology/images/SYN-000522.png

Writes ``docs/figures/page_search.png``, ``page_triage.png`` and ``page_report.png``.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import expect, sync_playwright

from medfusion.serve import create_app

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def serve(app) -> tuple[str, uvicorn.Server]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    return f"http://127.0.0.1:{port}/", server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--model", "--search-model", "--report-model", "--xray", "--histology"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--query", default="moderate cardiomegaly")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    url, server = serve(create_app(args.model, args.index, args.search_model, args.report_model))
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(url)
        expect(page.locator("#status")).to_contain_text("serving")
        page.fill("#search-text", args.query)
        page.keyboard.press("Enter")
        expect(page.locator("#search-results li.hit").first).to_be_visible()
        page.wait_for_function("() => [...document.querySelectorAll('#search-results img')].every(i => i.complete)")
        page.locator("#search-results").scroll_into_view_if_needed()
        page.screenshot(path=str(args.out / "page_search.png"), full_page=True)
        page.set_input_files("#triage-image", str(args.xray))
        page.get_by_label("Heart rate").fill("118")
        page.get_by_label("Spo2").fill("89")
        page.get_by_label("Clinical note").fill("Productive cough and fever for three days, crackles at the right base.")
        page.get_by_role("button", name="Predict").click()
        expect(page.locator("#triage-result .probability")).to_be_visible()
        page.locator("#triage-result").scroll_into_view_if_needed()
        page.screenshot(path=str(args.out / "page_triage.png"), full_page=True)
        page.set_input_files("#report-image", str(args.histology))
        page.get_by_role("button", name="Write report").click()
        word = page.locator("#report-text .word").first
        target = word if word.count() else page.locator("#report-text .sentence").first
        expect(target).to_be_visible()
        target.focus()
        expect(page.locator("#report-caption")).to_contain_text("Attention of")
        page.locator("#report-view").scroll_into_view_if_needed()
        page.screenshot(path=str(args.out / "page_report.png"), full_page=True)
        browser.close()
    server.should_exit = True
    print(f"written {', '.join(str(args.out / f'page_{v}.png') for v in ('search', 'triage', 'report'))}")


if __name__ == "__main__":
    main()
