"""What the console's browser tests read from its pages, shared by the tests against the
real console (``test_ui.py``) and those against the UI-only harness (``test_ui_harness.py``).

The pages expose their state as attributes for this: ``data-status`` on the task table
and the task page (loading, ready, error), ``data-notes-drawn`` and
``data-cursor-seconds`` on the piano roll's canvas, ``data-state`` on the play button.
"""

from __future__ import annotations

import contextlib
from typing import Any

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.remote.webelement import WebElement

from tests.fixtures.browser import Browser

#: Messages Chromium logs for a CSP violation (a refused script, style or connection).
CSP_MARKERS = ("Content Security Policy", "Refused to")


def wait_for_rows(browser: Browser) -> list[WebElement]:
    """The task rows once the list has loaded."""
    browser.wait_for_attribute("#tasks", "data-status", "ready")
    return browser.find_all("#tasks tbody tr[data-state]")


def row_states(rows: list[WebElement]) -> list[str]:
    return [row.get_attribute("data-state") or "" for row in rows]


def open_task_page(browser: Browser, url: str) -> None:
    browser.open(url)
    browser.wait_for_attribute("#task-page", "data-status", "ready")


def drawn_count(browser: Browser) -> int:
    """The piano roll's count of drawn notes, now."""
    return int(browser.find("#roll").get_attribute("data-notes-drawn") or "-1")


def notes_drawn(browser: Browser, expected: int) -> int:
    """The canvas' count of drawn notes once it is ``expected``, else the last count seen
    (so that a wrong count fails the test's assertion with both numbers)."""
    with contextlib.suppress(TimeoutException):
        browser.wait_for_attribute("#roll", "data-notes-drawn", str(expected))
    return drawn_count(browser)


def cursor_seconds(browser: Browser) -> float:
    return float(browser.find("#roll").get_attribute("data-cursor-seconds") or "nan")


def assert_clean_log(browser: Browser, *, allowed_404: int = 0) -> None:
    """No console error and no CSP violation in the browser's log, apart from the
    ``allowed_404`` resources a test asked for knowing they do not exist."""
    problems = []
    missing = 0
    for entry in browser.console_entries():
        message = str(entry.get("message", ""))
        if "status of 404" in message and missing < allowed_404:
            missing += 1
            continue
        if entry.get("level") == "SEVERE" or any(m in message for m in CSP_MARKERS):
            problems.append(f"{entry.get('level')}: {message}")
    assert not problems, "the browser logged:\n" + "\n".join(problems)
    assert missing == allowed_404, f"expected {allowed_404} 404 answer(s) in the log, saw {missing}"


def act_from_page(browser: Browser, url: str, task_id: str, action: str) -> Any:
    """Opens the task's page, presses the action's button (``replay``, ``redrive``) and
    confirms; the outcome element once it settles (done, refused or error)."""
    open_task_page(browser, f"{url}/tasks/{task_id}")
    assert browser.find("#actions").is_displayed()
    browser.find(f"#{action}").click()
    assert browser.find(f"#{action}-confirm").is_displayed()
    browser.find(f"#{action}-yes").click()
    return browser.wait_until(
        lambda: (
            browser.find("#action-status").get_attribute("data-status")
            in ("done", "refused", "error")
            and browser.find("#action-status")
        ),
        f"the {action}'s outcome",
    )
