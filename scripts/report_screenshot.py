"""A picture of a report's samples section in headless chromium (for the LOG).

    python scripts/report_screenshot.py runs/smoke/report/report.html docs/img/report-browse-DATE.png

Opens the report from its file in Debian's chromium (Playwright, the flags of
tests/test_report_browser.py), opens the first source's rejected generations and first filter,
scrolls to "Browse the synthetic data" and writes a 1280 x 1500 screenshot. Prints every request
the page made (the file itself only, for a report that loads nothing).
"""

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

report, out = Path(sys.argv[1]).resolve(), sys.argv[2]
with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
    context = pw.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium", headless=True,
                                                    args=FLAGS, viewport={"width": 1280, "height": 1500})
    page = context.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    details = page.locator(".samples details")
    for i in (1, 2):  # rejects and the first filter of the first source
        if i < details.count():
            details.nth(i).locator("summary").click()
    page.locator("h2", has_text="Browse the synthetic data").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.screenshot(path=out)
    sections = details.count()
    context.close()
print(f"{out}: {sections} sections; requests: {requests}")
