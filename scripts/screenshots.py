"""Regenerate the screenshots (README, docs/app.md): run the app, open each page in headless Chromium, save PNGs.

    python scripts/screenshots.py [--out docs/screenshots] [--pages home feature_maps ...]

Only the synthetic ``phantom`` dataset is shown, so no real patient image ends up in the repository.
Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``)
and selenium. The server and browser helpers here are shared with ``tests/test_browser.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-dev-shm-usage", "--hide-scrollbars"]
# Each page: URL (a deep link), text that shows it has rendered, and optionally a button to press and
# the text that shows the button's work is done. Phantom image 5 has a lesion (class infiltrative).
PAGES = {
    "home": ("", "Datasets", None, None),
    "dataset": ("dataset?image=5", "What the models predict", None, None),
    "compare": ("compare", "Where they part ways", None, None),
    "feature_maps": ("feature_maps?image=5&layer=4", "Which teacher layer", None, None),
    "explanations": ("explanations?image=5&method=grad_cam,feature_maps,saliency", "top 3:", None, None),
    "timing": ("timing?method=feature_maps,grad_cam,saliency", "Predicted run time", "Run benchmark", "Measured here"),
    "train": ("train", "Press Train", "Train", "Results on"),
}


def chromium_paths() -> tuple[str, str]:
    """(browser, driver) executables: $CHROMIUM / $CHROMEDRIVER, else the Debian packages' paths."""
    browser = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return browser, driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(port: int | None = None, env: dict | None = None, timeout: float = 120.0) -> Iterator[str]:
    """Run ``streamlit run explorer/Home.py`` on a free loopback port; yields the base URL; stops it after."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "explorer" / "Home.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    log = open(ROOT / "runs" / "streamlit-e2e.log", "w") if (ROOT / "runs").is_dir() else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log is not subprocess.DEVNULL:
            log.close()


@contextlib.contextmanager
def chrome(width: int = 1400, height: int = 1000):
    """A headless Chromium driven by Selenium through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROME_FLAGS + [f"--window-size={width},{height}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(driver, text: str, timeout: float = 180.0) -> None:
    """Wait until ``text`` is in the page and Streamlit has finished running the script."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):  # elements vanish while Streamlit re-renders: a stale one just means "not yet"
        body = d.find_element(By.TAG_NAME, "body").text
        running = d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        return text in body and not any(el.is_displayed() and "Running" in el.text for el in running)

    wait = WebDriverWait(driver, timeout, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(ready)
    time.sleep(1.0)  # let Plotly finish drawing


def click_button(driver, label: str, attempts: int = 15) -> None:
    """Click the (first) button whose text is ``label`` (a Material icon's name may come first, and its keyboard
    shortcut's keys after it).

    Looks again once a second, ``attempts`` times in all: the page may re-render between finding the button and
    clicking it, and on a loaded machine a page's button can show a few seconds after its text has settled.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for attempt in range(attempts):
        try:
            buttons = [b for b in driver.find_elements(By.TAG_NAME, "button")  # a shortcut's keys may follow
                       if label in b.text.strip().splitlines()]
            if not buttons:
                raise LookupError(f"no button labelled {label!r} at {driver.current_url}")
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", buttons[0])
            buttons[0].click()
            return
        except (WebDriverException, LookupError):
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


def errors_shown(driver) -> list[str]:
    """Texts of exception and error boxes on the page."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(5):
        try:
            found = driver.find_elements(By.CSS_SELECTOR,
                                         '[data-testid="stException"], [data-testid="stAlertContentError"]')
            return [el.text for el in found]
        except StaleElementReferenceException:
            time.sleep(0.5)
    raise RuntimeError("the page kept re-rendering while it was checked for errors")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder for the PNG files")
    parser.add_argument("--pages", nargs="+", choices=list(PAGES), default=list(PAGES), help="pages to capture")
    parser.add_argument("--height", type=int, default=1800, help="window height in pixels")
    args = parser.parse_args(argv)
    from selenium.webdriver.common.by import By

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with serve() as url, chrome(height=args.height) as driver:
        for name in args.pages:
            path, marker, button, done = PAGES[name]
            sep = "&" if "?" in path else "?"
            driver.get(f"{url}/{path}{sep}dataset=phantom")
            wait_for_text(driver, marker)
            if button:
                click_button(driver, button)
                wait_for_text(driver, done, timeout=600)
                click_target = [b for b in driver.find_elements(By.TAG_NAME, "button")
                                if button in b.text.strip().splitlines()]
                if click_target:  # show what the button produced, starting just above it
                    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", click_target[0])
                    time.sleep(1.0)
            problems = errors_shown(driver)
            if problems:
                print(f"{name}: the page shows errors: {problems}", file=sys.stderr)
            driver.save_screenshot(str(out / f"{name}.png"))
            print(f"wrote {out / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
