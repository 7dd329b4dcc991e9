"""The dashboard end to end in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

`streamlit run app.py` serves the tiny trained study; every page must draw without an exception
element, the confusion matrices must switch to row-normalised (and stay so across pages), and an
uploaded cell must get a prediction.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cnmc_core.dashboard.report import SECTIONS

from .helpers import PAGE_TITLES, a_cell_file, browser, chromium_marks, serve, wait_rendered

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


VISITED: set[str] = set()  # the pages this module has opened (the last test visits the others)


def visit(page, path: str) -> None:
    page.goto(f"/{path}")
    wait_rendered(page)
    VISITED.add(path.split("?")[0])


# Violations axe-core finds inside Streamlit's own widgets (not the project's content): rule id -> why it is
# accepted. Each is listed in docs/dashboard.md with the Streamlit version. Empty: none on Streamlit 1.67.0.
STREAMLIT_OWN: dict[str, str] = {}


@pytest.fixture(scope="module")
def axe():
    from axe_playwright_python.sync_playwright import Axe

    return Axe()


@pytest.mark.parametrize("path", list(PAGE_TITLES))
def test_every_page_draws_without_an_exception_or_a_serious_accessibility_violation(page, axe, path):
    visit(page, path)
    assert page.locator("h1").first.inner_text().strip() == PAGE_TITLES[path]
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Synthetic demo data" in page.locator('[data-testid="stMain"]').inner_text()
    # axe-core (bundled by axe-playwright-python: no CDN) on the page as first opened, on the same visit (each
    # visit costs seconds: one walk over the pages serves both checks).
    nav = page.locator('[data-testid="stSidebarNav"]')
    assert nav.get_by_role("link", name=PAGE_TITLES[path], exact=True).count() == 1  # the icon is not read out
    violations = axe.run(page, options={"resultTypes": ["violations"]}).response["violations"]
    print(path or "overview", [(v["impact"], v["id"]) for v in violations])  # shown with -s
    serious = [f"{v['id']} ({v['impact']}): {[n['html'][:80] for n in v['nodes'][:2]]}" for v in violations
               if v["impact"] in ("critical", "serious") and v["id"] not in STREAMLIT_OWN]
    assert not serious, serious


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


def test_a_dropped_two_cell_field_gets_two_numbered_cells_and_two_result_rows(page, tmp_path):
    """Issue 13: a generated (SYNTHETIC) smear field with two white cells, dropped on Classify, gives the upload
    outlined with cells 0 and 1, a summary line, and one result row (header and answer) per cell."""
    from cnmc_core import smears

    field = tmp_path / "field.png"
    field.write_bytes(smears.smear_field(5, 1300, 1000, n_white=2, red_cover=0.4).png_bytes())
    visit(page, "classify")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(field))
    page.get_by_text("numbered in reading order: 0, 1").wait_for(timeout=60_000)
    wait_rendered(page, timeout_ms=60_000)
    main = page.locator('[data-testid="stMain"]')
    text = main.inner_text()
    assert re.search(r"\bCell 0\b", text) and re.search(r"\bCell 1\b", text) and "Cell 2" not in text
    assert page.locator('[data-testid="stMetric"]').count() == 2  # one answer per cell
    assert re.search(r"\b\d of 2 cells called ALL, \d HEM, \d inconclusive; 2 of 2 prepared", text)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_results_come_file_by_file_and_survive_a_visit_to_another_page(page, tiny_study, tmp_path):
    """Issue 15: with three files and Score-CAM, the first file's answer is on the page while the page still works
    on the others; after a visit to another page (the app's own navigation, the same session) the three answers
    are back without another upload."""
    from PIL import Image

    root, name = tiny_study
    cell = Image.open(a_cell_file(Path(root), name))
    files = []
    for turn in range(3):  # three files no other test drops: nothing of them is in the page's cache yet
        files.append(tmp_path / f"turned_{turn}.png")
        cell.rotate(90 * (turn + 1)).save(files[-1])
    visit(page, "classify?cam=scorecam")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(f) for f in files])
    page.wait_for_function("""() => document.querySelectorAll('[data-testid="stMetric"]').length >= 1 &&
        document.querySelector('[data-testid="stApp"]').getAttribute('data-test-script-state') === 'running'""",
                           timeout=120_000, polling=50)
    wait_rendered(page, timeout_ms=300_000)
    assert page.locator('[data-testid="stMetric"]').count() == 3
    sidebar = page.locator('[data-testid="stSidebarNav"]')
    sidebar.get_by_text("Overview", exact=True).click()
    page.wait_for_function("() => location.pathname.endsWith('/')", timeout=30_000)
    wait_rendered(page)
    sidebar.get_by_text("Classify a cell", exact=True).click()
    page.get_by_text("you dropped earlier in this session").wait_for(timeout=60_000)
    wait_rendered(page, timeout_ms=120_000)
    assert page.locator('[data-testid="stMetric"]').count() == 3
    assert page.locator('[data-testid="stException"]').count() == 0


def test_compare_page_draws_its_statistics(page):
    visit(page, "compare")
    assert page.locator("h1").first.inner_text().strip() == "Compare"
    assert page.locator('[data-testid="stException"]').count() == 0
    main = page.locator('[data-testid="stMain"]')
    assert "This page could not be shown" not in main.inner_text()
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 3  # p-values, reliability diagrams, subjects
    assert "p (patients, Holm)" in main.inner_text()


def test_the_overview_report_opens_offline_with_every_section(page, tiny_study, tmp_path):
    """The Overview's report button gives one HTML file; opened from disk with every request but file: and
    data: aborted, it draws every section and its plots with no console error, and its numbers are metrics.json's."""
    root, name = tiny_study
    visit(page, "")  # the Overview is the home page
    with page.expect_download(timeout=120_000) as download:
        page.get_by_text("Download the study report (one HTML file)").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == f"{name}_report.html"

    offline = page.context.browser.new_context()
    fetched, errors = [], []

    def local_only(route) -> None:
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            fetched.append(route.request.url)
            route.abort()

    offline.route("**/*", local_only)
    tab = offline.new_page()
    tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        tab.goto(saved.as_uri())
        tab.wait_for_function("() => document.querySelectorAll('.plot .main-svg').length >= 8", timeout=30_000)
        for anchor, heading in SECTIONS.items():
            assert tab.locator(f"section#{anchor} > h2").inner_text().strip() == heading
        metrics = json.loads((Path(root) / name / "models" / "vgg16" / "metrics.json").read_text())
        cell = tab.locator('tr[data-row="vgg16|ours"] td[data-col="ROC AUC"]')
        assert float(cell.get_attribute("data-value")) == metrics["roc_auc"]
        assert cell.inner_text().startswith(f"{metrics['roc_auc']:.3f}")
        assert tab.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert tab.locator("#gallery img").count() >= 12
        assert tab.locator("#features .scatterlayer .point").count() >= 48  # the maps, drawn as SVG points
    finally:
        offline.close()
    assert errors == [] and fetched == []


# ---- issue 15: views that survive a link, clickable quadrants, accessibility -------------------------------

def _fresh_tab(page):
    """A tab in a new browser context (no cookies, no session): what someone opening a shared link gets."""
    address = urlparse(page.url)
    context = page.context.browser.new_context(base_url=f"{address.scheme}://{address.netloc}",
                                               viewport={"width": 1400, "height": 1200})
    context.route("**/*", _loopback_only)
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    return tab


def _wait_for_link(page, part: str) -> None:
    page.wait_for_function(f"() => location.search.includes({json.dumps(part)})", timeout=30_000)
    wait_rendered(page)


def _selectbox(page, label: str):
    return page.locator('[data-testid="stSelectbox"]').filter(has_text=label)


def _choice(page, label: str) -> str:
    """What a selectbox shows as chosen."""
    return page.get_by_role("combobox", name=label).input_value()


def _large_quadrant(page, row: int, column: int) -> None:
    """Click quadrant (row, column) of the large matrix (0 = HEM, 1 = ALL) where a person would."""
    chart = page.locator('[data-testid="stPlotlyChart"]').last
    box = chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * (0.25 + 0.5 * column), box["y"] + box["height"] * (0.25 + 0.5 * row))


def test_clicking_a_quadrant_shows_its_cells(page, tiny_study):
    root, name = tiny_study
    cm = json.loads((Path(root) / name / "models" / "vgg16" / "metrics.json").read_text())["confusion_matrix"]
    visit(page, "confusion")
    _large_quadrant(page, 0, 1)  # true HEM, called ALL: the false positives
    _wait_for_link(page, "quadrant=fp")
    assert _choice(page, "Show the cells of").startswith("false positives")
    count = page.locator('[data-testid="stMetric"]').first.inner_text()
    assert count.split()[-1] == str(cm[0][1])
    cells = page.locator('[data-testid="stMain"] img[alt^="Cell of subject"]')
    assert cells.count() == min(cm[0][1], 24) and "true HEM, called ALL" in cells.first.get_attribute("alt")


def test_a_view_set_on_three_pages_opens_the_same_from_a_link(page):
    """Threshold, quadrant and Grad-CAM filters set by hand; each page's address, opened in a fresh browser
    context (another person's browser), shows the same values."""
    links = {}
    visit(page, "curves")
    page.get_by_role("slider", name="Call a cell ALL when P(ALL) ≥").focus()
    page.keyboard.press("ArrowRight")  # one step of 0.01 (one key: several can race the reruns on a busy machine)
    _wait_for_link(page, "threshold=0.51")
    links["curves"] = page.url

    visit(page, "confusion")
    _large_quadrant(page, 1, 1)  # true ALL, called ALL
    _wait_for_link(page, "quadrant=tp")
    links["confusion"] = page.url

    visit(page, "gradcam")
    page.get_by_text("One model, many cells").click()
    _wait_for_link(page, "gallery_mode=model")
    _selectbox(page, "True class").click()
    page.get_by_role("option", name="true ALL").click()
    _wait_for_link(page, "gallery_class=ALL")
    links["gradcam"] = page.url

    other = _fresh_tab(page)
    try:
        other.goto(links["curves"])
        wait_rendered(other)
        assert other.get_by_role("slider", name="Call a cell ALL when P(ALL) ≥").input_value() == "0.51"
        other.goto(links["confusion"])
        wait_rendered(other)
        assert _choice(other, "Show the cells of").startswith("true positives")
        other.goto(links["gradcam"])
        wait_rendered(other)
        assert other.get_by_role("radio", name="One model, many cells").is_checked()
        assert _choice(other, "True class") == "true ALL"
        assert other.locator('[data-testid="stException"]').count() == 0
    finally:
        other.context.close()


def test_no_page_asked_for_anything_beyond_this_machine(page):
    """Runs last: every page above was visited and a cell uploaded; no request left 127.0.0.1 (icons and fonts
    are served by the app itself)."""
    for path in PAGE_TITLES:
        if path not in VISITED:  # (all of them when the module runs whole)
            visit(page, path)
    assert VISITED >= set(PAGE_TITLES)
    assert OUTSIDE == [], f"requests beyond this machine: {sorted(set(OUTSIDE))}"
