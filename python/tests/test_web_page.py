"""The web page of `inceptionxml serve` in a real browser: headless Chromium (Debian's chromium
and chromium-driver) driven by Selenium types a text, asks for suggestions, points at one and
checks that the suggestions and the highlighted words appear. .ci/run installs the browser and
sets INCEPTIONXML_REQUIRE_BROWSER=1, so there a missing browser fails instead of skipping."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from conftest import binary

REQUIRED = os.environ.get("INCEPTIONXML_REQUIRE_BROWSER") == "1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def need_browser():
    try:
        import selenium  # noqa: F401
    except ImportError:
        if REQUIRED:
            pytest.fail("selenium is not installed")
        pytest.skip("selenium is not installed")
    if not (CHROMIUM and DRIVER):
        if REQUIRED:
            pytest.fail("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium / chromedriver")


@pytest.fixture()
def server(py_model_dir):
    p = subprocess.Popen(
        [binary(), "serve", "--model", f"cooking={py_model_dir}", "--addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = p.stdout.readline()
    assert "listening on http://" in line, line
    url = line.strip().rsplit(" ", 1)[-1]
    yield url
    p.terminate()
    p.wait(timeout=30)


def test_the_page_suggests_and_highlights_words(server, tmp_path):
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--window-size=1200,900"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(server + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#project option"))
        assert "cooking" in driver.find_element(By.ID, "project").text
        # The example texts of the model's test split are offered.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#examples button"))
        box = driver.find_element(By.ID, "text")
        box.send_keys("How long should I boil an egg for a soft yolk?")
        driver.find_element(By.ID, "suggest").click()
        items = wait.until(EC.presence_of_all_elements_located((By.CSS_SELECTOR, "#results li")))
        assert len(items) == 10
        labels = [i.find_element(By.CSS_SELECTOR, ".label").text for i in items]
        assert "eggs" in labels, labels
        # Point at the "eggs" suggestion: the words are highlighted by their weight for it.
        target = items[labels.index("eggs")]
        ActionChains(driver).move_to_element(target).perform()
        wait.until(lambda d: "eggs" in d.find_element(By.ID, "h-words").text)
        spans = driver.find_elements(By.CSS_SELECTOR, "#words .w")
        words = [s.text for s in spans]
        assert "egg" in words and "yolk" in words, words
        weights = {s.text: float(s.get_attribute("data-weight")) for s in spans}
        assert weights["egg"] > 0, weights
        bg = spans[words.index("egg")].value_of_css_property("background-color")
        assert bg.startswith("rgba(22, 120, 52") and not bg.endswith(", 0)"), bg
        # Keyboard: focusing a suggestion (Tab) highlights its words too.
        driver.execute_script("document.querySelectorAll('#results li')[1].focus()")
        wait.until(lambda d: labels[1] in d.find_element(By.ID, "h-words").text)
        ActionChains(driver).move_to_element(target).perform()
        shot = os.environ.get("INCEPTIONXML_SCREENSHOT", str(tmp_path / "page.png"))
        driver.save_screenshot(shot)
        assert os.path.getsize(shot) > 10_000
    finally:
        driver.quit()
