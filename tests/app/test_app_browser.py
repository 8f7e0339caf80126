"""``arpg app`` in a real headless Chromium: serve, generate a grid, paint a mask and inpaint, outpaint,
expand, and see a bad input's message in the page. Screenshots go to the test's temp folder (and to
``ARPG_SCREENSHOTS`` when set: the README's pictures are made this way).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them the test skips
with the reason, unless ``ARPG_REQUIRE_BROWSER=1`` (set by CI), where it fails instead.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _need_browser():
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if p is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        reason = f"no headless browser: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("ARPG_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    _need_browser()
    port = _free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"arpg-app-{port}.log", "w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "arpg.cli", "app", "--port", str(port), "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 120:
                    log.seek(0)
                    pytest.fail(f"arpg app did not serve {url}: {log.read()[-2000:]}")
                time.sleep(0.25)
        print(f"\n[app] served {url} {time.perf_counter() - t0:.1f} s after start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # No background networking: this machine's network is closed and Chromium would retry for ever.
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1400,1900"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield d
    d.quit()


def _shot(d, tmp_path, name):
    d.save_screenshot(str(tmp_path / f"{name}.png"))
    extra = os.environ.get("ARPG_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(Path(extra) / f"{name}.png"))


def _wait(d, css, timeout=90):
    from selenium.webdriver.common.by import By
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        found = d.find_elements(By.CSS_SELECTOR, css)
        if found:
            return time.perf_counter() - t0
        time.sleep(0.2)
    raise AssertionError(f"{css} did not appear within {timeout} s")


def _status(d, elem_id, contains, timeout=30):
    from selenium.webdriver.common.by import By
    t0 = time.perf_counter()
    text = ""
    while time.perf_counter() - t0 < timeout:
        text = d.find_element(By.ID, elem_id).text
        if contains in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"#{elem_id} shows {text!r}, expected it to contain {contains!r}")


def _tab(d, name):
    from selenium.webdriver.common.by import By
    [t for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == name][0].click()
    time.sleep(0.5)


def _pick_example(d, elem_id, index):
    from selenium.webdriver.common.by import By
    d.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
    time.sleep(0.3)
    d.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li")[index].click()
    time.sleep(1.0)


def test_app_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d = browser
    d.get(server)
    _wait(d, "#gen-run")

    # Generate: a grid appears with its time
    d.find_element(By.ID, "gen-run").click()
    took = _wait(d, "#gen-grid img")
    text = _status(d, "gen-status", "images in")
    print(f"[app] generate: {text} (page showed it after {took:.1f} s)")
    _shot(d, tmp_path, "app-generate")

    # Inpaint: a bad input first (nothing painted), the message is in the page
    _tab(d, "Inpaint / class edit")
    _pick_example(d, "inp-example", 2)
    d.find_element(By.ID, "inp-run").click()
    _status(d, "inp-status", "no mask painted")
    # paint a stroke on the editor's canvas, regenerate
    canvas = d.find_elements(By.CSS_SELECTOR, "#inp-editor canvas")[-1]
    chain = ActionChains(d).move_to_element_with_offset(canvas, -30, -60).click_and_hold()
    for _ in range(12):
        chain.move_by_offset(5, 4)
    chain.release().perform()
    time.sleep(0.5)
    d.find_element(By.ID, "inp-run").click()
    took = _wait(d, "#inp-result img")
    text = _status(d, "inp-status", "cells regenerated")
    print(f"[app] inpaint: {text} (page showed it after {took:.1f} s)")
    _shot(d, tmp_path, "app-inpaint")

    # Outpaint: an example on a wider canvas
    _tab(d, "Outpaint")
    _pick_example(d, "out-example", 6)
    d.find_element(By.ID, "out-run").click()
    took = _wait(d, "#out-result img")
    text = _status(d, "out-status", "windows in")
    print(f"[app] outpaint: {text} (page showed it after {took:.1f} s)")
    _shot(d, tmp_path, "app-outpaint")

    # Expand
    _tab(d, "Expand")
    _pick_example(d, "exp-example", 9)
    d.find_element(By.ID, "exp-run").click()
    took = _wait(d, "#exp-result img")
    text = _status(d, "exp-status", "->")
    print(f"[app] expand: {text} (page showed it after {took:.1f} s)")
    _shot(d, tmp_path, "app-expand")

    # Control (the shipped ControlARPG demo weights): a bad input (no image), then an example's edges
    _tab(d, "Control")
    d.find_element(By.ID, "ctl-run").click()
    _status(d, "ctl-status", "upload or pick an image")
    _pick_example(d, "ctl-example", 4)
    d.find_element(By.ID, "ctl-run").click()
    took = _wait(d, "#ctl-result img")
    text = _status(d, "ctl-status", "map of the image")
    print(f"[app] control: {text} (page showed it after {took:.1f} s)")
    _shot(d, tmp_path, "app-control")

    # Text to image (the shipped text-to-image demo): an empty prompt, then an example prompt
    _tab(d, "Text to image")
    assert d.find_element(By.CSS_SELECTOR, "#t2i-prompt textarea").get_attribute("value") == ""
    d.find_element(By.ID, "t2i-run").click()
    _status(d, "t2i-status", "the prompt is empty")
    _pick_example(d, "t2i-example", 2)
    assert "to the left of" in d.find_element(By.CSS_SELECTOR, "#t2i-prompt textarea").get_attribute("value")
    d.find_element(By.ID, "t2i-run").click()
    took = _wait(d, "#t2i-grid img")
    text = _status(d, "t2i-status", "images of")
    print(f"[app] text to image: {text} (page showed it after {took:.1f} s)")
    _shot(d, tmp_path, "app-t2i")

    # the app still serves after the bad inputs
    assert urllib.request.urlopen(server, timeout=5).status == 200
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["app-control.png", "app-expand.png", "app-generate.png",
                                                               "app-inpaint.png", "app-outpaint.png", "app-t2i.png"]
