"""The HTML view (`python -m bench report html`) in a real browser: Debian's headless Chromium
driven through its chromedriver by Selenium, on the committed results of both data sets.

.ci/run installs the browser and sets RESNET18_BENCH_REQUIRE_BROWSER=1, so there a missing browser
fails these tests; elsewhere they skip, naming what to install.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.report.html import page_rows
from bench.results import load_results

REPO = Path(__file__).resolve().parents[1]
RESULTS = [REPO / "reports" / "imagefolder-cifar10-jpeg-x86.json", REPO / "reports" / "digits-x86.json"]
REQUIRED = os.environ.get("RESNET18_BENCH_REQUIRE_BROWSER") == "1"
INSTALL = "apt-get install chromium chromium-driver && pip install selenium"


def _missing(what: str):
    if REQUIRED:
        pytest.fail(f"{what} (RESNET18_BENCH_REQUIRE_BROWSER=1): {INSTALL}")
    pytest.skip(f"{what}: {INSTALL}")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    assert main(["report", "html", *map(str, RESULTS), "-o", str(out)]) == 0
    return out / "index.html"


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        _missing("Chromium or its chromedriver is not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1600"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _rows(driver) -> list[dict]:
    from selenium.webdriver.common.by import By

    keys = [th.get_attribute("data-key") for th in driver.find_elements(By.CSS_SELECTOR, "#items thead th")]
    return [dict(zip(keys, (td.text for td in tr.find_elements(By.TAG_NAME, "td"))))
            for tr in driver.find_elements(By.CSS_SELECTOR, "#items tbody tr")]


def _ms(text: str) -> float:
    return float(text.split()[0])


def test_the_page_is_self_contained_and_small(page):
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched from anywhere
    assert page.stat().st_size < 300_000


def test_every_item_of_every_run_is_a_row(browser, page):
    browser.get(page.as_uri())
    expected = page_rows([load_results(p) for p in RESULTS])
    rows = _rows(browser)
    assert len(rows) == len(expected) > 40
    assert {(r["variant"], r["runtime"]) for r in rows} == {(e["variant"], e["runtime"]) for e in expected}
    assert browser.find_element("id", "count").text == f"{len(expected)} of {len(expected)} rows"


def test_sorting_a_column_orders_the_rows(browser, page):
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    header = browser.find_element(By.CSS_SELECTOR, '#items th[data-key="p50"]')
    header.click()
    p50 = [_ms(r["p50"]) for r in _rows(browser) if r["p50"] != "—"]
    assert p50 == sorted(p50) and p50[0] < p50[-1]
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    p50 = [_ms(r["p50"]) for r in _rows(browser) if r["p50"] != "—"]
    assert p50 == sorted(p50, reverse=True)


def test_filtering_by_runtime_shows_only_that_runtime_in_table_and_chart(browser, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(page.as_uri())
    Select(browser.find_element(By.ID, "runtime")).select_by_value("openvino")
    rows = _rows(browser)
    assert rows and {r["runtime"] for r in rows} == {"openvino"}
    points = browser.find_elements(By.CSS_SELECTOR, "#chart circle.point")
    assert len(points) == len(rows) and {p.get_attribute("data-runtime") for p in points} == {"openvino"}
    total = len(page_rows([load_results(p) for p in RESULTS]))
    assert browser.find_element(By.ID, "count").text == f"{len(rows)} of {total} rows"
    Select(browser.find_element(By.ID, "dataset")).select_by_value("digits")  # the filters combine
    narrowed = _rows(browser)
    assert narrowed and {(r["runtime"], r["dataset"]) for r in narrowed} == {("openvino", "digits")}
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart circle.point")) == len(narrowed) < len(rows)


def test_hovering_a_point_names_variant_runtime_latency_and_accuracy(browser, page, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(page.as_uri())
    Select(browser.find_element(By.ID, "runtime")).select_by_value("onnxruntime")
    point = next(p for p in browser.find_elements(By.CSS_SELECTOR, "#chart circle.point")
                 if p.get_attribute("data-variant") == "int8-static")
    ActionChains(browser).move_to_element(point).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed()
    text = tip.text
    assert text.startswith("int8-static on onnxruntime")
    row = next(r for r in _rows(browser) if r["variant"] == "int8-static" and r["run"] in text)
    assert f"p50 {row['p50'].split()[0]} ms" in text and f"top-1 {row['top1']} %" in text and "[" in text
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000


def test_the_history_of_a_store_is_shown_with_its_change_point(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from test_history import _runs, _store

    store = _store(tmp_path, _runs(13, step_at=10))
    out = tmp_path / "site"
    assert main(["report", "html", str(RESULTS[1]), "-o", str(out), "--history", str(store)]) == 0
    browser.get((out / "index.html").as_uri())
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#history-changes tbody tr")]
    failing = [cells for cells in rows if cells[-1] == "FAIL"]
    assert len(failing) == 1
    assert failing[0][:2] == ["int8-static-onnxruntime-x86 224x224/b1", "ratio"] and "09cccccccccc" in failing[0][4]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#history-series tbody tr")) == 2

