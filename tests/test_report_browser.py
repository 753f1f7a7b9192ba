"""report.html in a real headless browser (Debian's chromium, driven by Playwright).

    BLINDSPOT_SCREENSHOT=docs/img/report-browse.png python -m pytest -q tests/test_report_browser.py

The report is rendered from a fixture run (test_report_samples: results, and two rounds of synthetic
data full of hostile text) and opened from its file: the page loads, the figures are drawn at a
real size, the samples are collapsed and open on a click, nothing the generator wrote runs, and no
request leaves the page (the file itself is the only one; figures are data: URLs). With
BLINDSPOT_SCREENSHOT set, a full-page screenshot of the opened samples is written there.
Skips where chromium or Playwright is absent (scripts/test.sh installs both where it can).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from test_report_samples import make_browse_run

CHROMIUM = os.environ.get("BLINDSPOT_CHROMIUM", "/usr/bin/chromium")
# without the background-networking flags chromium keeps calling home, which floods a closed network
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The report open in headless chromium, with every request and console message recorded."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; or set BLINDSPOT_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[test]')")
    root = tmp_path_factory.mktemp("browser")
    report = make_browse_run(root / "run") / "report" / "report.html"
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(root / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        requests, console = [], []
        context.on("request", lambda r: requests.append(r.url))
        tab = context.new_page()
        tab.on("console", lambda m: console.append((m.type, m.text)))
        tab.on("pageerror", lambda e: console.append(("pageerror", str(e))))
        tab.goto(report.as_uri(), wait_until="load")
        yield {"tab": tab, "requests": requests, "console": console, "url": report.as_uri()}
        context.close()
    shutil.rmtree(root / "profile", ignore_errors=True)


def test_page_loads_and_figures_are_drawn(page) -> None:
    tab = page["tab"]
    assert tab.title() == "blindspot report"
    assert tab.locator("h1").inner_text().startswith("blindspot report")
    images = tab.locator("img")
    assert images.count() == 2  # the main figure and the per-heuristic one
    for i in range(images.count()):
        img = images.nth(i)
        assert img.evaluate("e => e.complete && e.naturalWidth > 100 && e.naturalHeight > 100")
        box = img.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100
        assert img.is_visible()


def test_samples_are_collapsed_and_expand_on_click(page) -> None:
    tab = page["tab"]
    details = tab.locator(".samples details")
    assert details.count() == 7
    for i in range(details.count()):
        d = details.nth(i)
        assert d.evaluate("e => e.open") is False
        assert not d.locator("table").first.is_visible()
    for i in range(details.count()):
        d = details.nth(i)
        d.locator("summary").click()
        assert d.evaluate("e => e.open") is True
        table = d.locator("table").first
        assert table.is_visible()
        box = table.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 20
    # long lines wrap inside the samples' column instead of widening the page
    assert tab.evaluate("""() => { const s = document.querySelector('.samples').getBoundingClientRect();
        return [...document.querySelectorAll('.samples table')].every(t => {
            const r = t.getBoundingClientRect(); return r.width > 0 && r.right <= s.right + 1; }); }""")
    shot = os.environ.get("BLINDSPOT_SCREENSHOT")
    if shot:  # the first round's rejects and filter open, from the section's heading down
        for i in range(details.count()):
            details.nth(i).evaluate(f"e => e.open = {'true' if i in (1, 2) else 'false'}")
        tab.set_viewport_size({"width": 1280, "height": 1500})
        tab.locator("h2", has_text="Browse the synthetic data").evaluate("e => e.scrollIntoView({block: 'start'})")
        tab.screenshot(path=shot)
        assert Path(shot).stat().st_size > 10_000


def test_generated_text_stays_text_and_nothing_is_requested(page) -> None:
    tab = page["tab"]
    for d in range(tab.locator(".samples details").count()):
        tab.locator(".samples details").nth(d).evaluate("e => e.open = true")
    assert tab.evaluate("typeof window.__pwned") == "undefined"
    assert tab.title() == "blindspot report"
    assert tab.evaluate("document.querySelectorAll('script, .samples img, svg, iframe, link, a, object').length") == 0
    text = tab.locator(".samples").inner_text()
    assert "<script>window.__pwned = 1; document.title = 'pwned'</script>" in text
    assert "<img src='http://198.51.100.7/beacon.png'>" in text
    assert page["requests"] == [page["url"]]  # the report itself; data: figures are no request
    assert not [m for m in page["console"] if m[0] in ("error", "pageerror")], page["console"]
