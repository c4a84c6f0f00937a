"""Render the report page of ``medfusion report --explain`` to PNG, with a finding word focused, in headless Chromium.

    medfusion report --model runs/pathology/report --image data/pathology/images/SYN-000012.png --explain out/
    .venv/bin/python scripts/render_report_page.py out/report.html --word 1 --png docs/figures/report_example.png

``--word N`` focuses the N-th finding word (1-based, in reading order) so its attention
map is the one on the image; ``--word 0`` focuses nothing (the mean map of the report).
Uses Debian's ``/usr/bin/chromium`` through Playwright (never a downloaded browser).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="report.html written by `medfusion report --explain`")
    parser.add_argument("--word", type=int, default=1, help="finding word to focus (1-based; 0: none)")
    parser.add_argument("--png", type=Path, default=Path("docs/figures/report_example.png"))
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args()
    if not args.page.is_file():
        parser.error(f"no report page at {args.page}")
    args.png.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 700})
        page.goto(args.page.resolve().as_uri())
        words = page.locator(".word")
        if args.word:
            if args.word > words.count():
                parser.error(f"--word {args.word}: the page has {words.count()} finding words")
            words.nth(args.word - 1).focus()
        page.screenshot(path=str(args.png), full_page=True)
        browser.close()
    print(f"written {args.png}")


if __name__ == "__main__":
    main()
