"""The dashboard end to end in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

`streamlit run app.py` serves the tiny trained study; every page must draw without an exception
element, the confusion matrices must switch to row-normalised (and stay so across pages), and an
uploaded cell must get a prediction.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

from benchmarks.bench_pages import PAGES, browser, serve, wait_rendered

from .helpers import a_cell_file, chromium_marks

pytestmark = chromium_marks("sync_api")


@pytest.fixture(scope="module")
def page(tiny_study):
    root, _ = tiny_study
    with serve(root) as url, browser() as b:
        context = b.new_context(base_url=url, viewport={"width": 1400, "height": 1200})
        context.route("**/*", _loopback_only)
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        yield tab


OUTSIDE: list[str] = []  # every request the pages attempted beyond this machine (aborted)


def _loopback_only(route) -> None:
    """No network beyond 127.0.0.1: a medical-image tool used locally must call no third party."""
    if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        OUTSIDE.append(route.request.url)
        route.abort()


def visit(page, path: str) -> None:
    page.goto(f"/{path}")
    wait_rendered(page)


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_draws_without_an_exception(page, path):
    visit(page, path)
    assert page.locator("h1").first.inner_text().strip() == PAGES[path]
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Synthetic demo data" in page.locator('[data-testid="stMain"]').inner_text()


def test_a_shared_link_opens_its_page_without_a_not_found_dialog(page):
    # A link to a page (what people share) must open that page directly. With the pages in a
    # folder named pages/, Streamlit first looked the path up among auto-discovered pages and
    # showed "Page not found" before st.navigation ran; the pages live in views/ for that reason.
    visit(page, "curves?normalised=1")
    page.wait_for_timeout(500)
    assert page.locator("h1").first.inner_text().strip() == "Curves and calibration"
    assert page.get_by_text("Page not found").count() == 0


def test_confusion_matrix_switches_to_row_normalised_and_stays(page):
    visit(page, "confusion")
    first = page.locator('[data-testid="stPlotlyChart"]').first
    assert "%" not in first.inner_text()  # counts
    page.get_by_text("Row-normalised (share of each true class)").click()
    page.wait_for_function("() => document.querySelector('[data-testid=\"stPlotlyChart\"]').innerText.includes('%')")
    wait_rendered(page)
    shares = [int(s) for s in re.findall(r"(\d+)%", first.inner_text())]
    assert len(shares) == 4 and abs(shares[0] + shares[1] - 100) <= 1  # one true class sums to 100%
    assert "normalised=1" in page.url

    page.locator('[data-testid="stSidebarNav"]').get_by_text("Overview").click()
    wait_rendered(page)
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Confusion matrices").click()
    wait_rendered(page)
    # The chart draws after the page reports rendered; wait for it (times out, failing, if it shows counts).
    page.wait_for_function(
        "() => { const c = document.querySelector('[data-testid=\"stPlotlyChart\"]');"
        " return c && c.innerText.includes('%'); }",
        timeout=15000,
    )
    assert "%" in page.locator('[data-testid="stPlotlyChart"]').first.inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0


def test_an_uploaded_cell_gets_a_prediction(page, tiny_study):
    root, name = tiny_study
    cell = a_cell_file(Path(root), name)
    visit(page, "classify")
    assert "Research use only" in page.locator('[data-testid="stMain"]').inner_text()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(cell))
    page.get_by_text("Ensemble call (mean P(ALL) of the models)").wait_for(timeout=120_000)
    wait_rendered(page, timeout_ms=120_000)
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert re.search(r"\b(ALL|HEM)\b", text) and "of 2 models" in text
    assert page.locator('[data-testid="stException"]').count() == 0


def test_compare_page_draws_its_statistics(page):
    visit(page, "compare")
    assert page.locator("h1").first.inner_text().strip() == "Compare"
    assert page.locator('[data-testid="stException"]').count() == 0
    main = page.locator('[data-testid="stMain"]')
    assert "This page could not be shown" not in main.inner_text()
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 3  # p-values, reliability diagrams, subjects
    assert "p (patients, Holm)" in main.inner_text()


def test_no_page_asked_for_anything_beyond_this_machine(page):
    """Runs last: every page above was visited and a cell uploaded; no request left 127.0.0.1 (icons and fonts
    are served by the app itself)."""
    for path in PAGES:
        visit(page, path)
    assert OUTSIDE == [], f"requests beyond this machine: {sorted(set(OUTSIDE))}"
