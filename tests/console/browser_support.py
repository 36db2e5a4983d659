"""Debian's headless Chromium, driven by its chromium-driver through Selenium (`make browser-system`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any, TypeVar

from resources import missing
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

T = TypeVar("T")


def start_chromium() -> WebDriver:
    """A headless Chromium (missing locally: skip; with CI=true: fail)."""
    if shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None:
        missing("Debian's chromium and chromium-driver are not installed (make browser-system)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--enable-precise-memory-info", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def wait(driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 10.0, what: str = "") -> T:
    """WebDriverWait: polls `condition` until it returns a true value, or fails after `timeout` seconds."""
    result: T = WebDriverWait(driver, timeout, poll_frequency=0.02).until(condition, what)
    return result


def js(driver: WebDriver, script: str) -> Any:
    return driver.execute_script(script)
