"""Debian's headless Chromium as the project drives it (the browser tests and the console's
bench): where it and its chromedriver are, and the options both start it with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from selenium import webdriver

__all__ = ["CHROMEDRIVER", "CHROMIUM", "WINDOW", "chrome_options"]

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMEDRIVER: Final = Path("/usr/bin/chromedriver")
#: A fixed window, so screenshots and layouts are the same on every machine.
WINDOW: Final = (1366, 900)


def chrome_options() -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.add_argument("--headless=new")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.add_argument("--disable-dev-shm-usage")
    # The piano roll plays without a click in the tests; a person still presses play.
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    if os.geteuid() == 0:
        # Chromium refuses to start its sandbox as root (CI runs as root).
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options
