"""Dead letters in the pages, in Debian's headless Chromium: the list's "has dead letters"
filter (kept in the address), the count column, the timeline's dead-letter entries. The
dead letters are real: a consumer loop on the session broker dead-letters bad records and
the console's own indexer writes them to the registry."""

from __future__ import annotations

import asyncio

import pytest

from services.common.kafka import Publisher
from services.common.settings import Settings
from tests.fixtures.browser import Browser

from .browser import assert_clean_log, open_task_page, wait_for_rows
from .conftest import Console, dead_letter, indexed

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def row_ids(browser: Browser) -> list[str]:
    return [row.get_attribute("data-id") or "" for row in wait_for_rows(browser)]


async def test_the_filter_shows_only_tasks_with_dead_letters(
    browser: Browser, settings: Settings, publisher: Publisher, dlq_console: Console
) -> None:
    """Checked, the filter leaves the task with dead letters, says so in the address and
    in the count column; the task's timeline shows its dead letter."""
    console = dlq_console
    struck = await asyncio.to_thread(console.completed_task)
    spared = await asyncio.to_thread(console.completed_task)
    await dead_letter(settings, publisher, [struck.task_id.encode()])
    await indexed(console, 1)

    browser.open(f"{console.url}/")
    assert sorted(row_ids(browser)) == sorted([struck.task_id, spared.task_id])
    browser.find("#filter-dead-letters").click()
    browser.find("#filters button[type='submit']").click()
    browser.wait_until(lambda: row_ids(browser) == [struck.task_id], "only the struck task")
    assert "has_dead_letters=true" in browser.driver.current_url
    assert browser.find("#tasks tbody tr[data-state] td.dead-letters").text == "1"
    browser.screenshot("filtered")

    browser.open(f"{console.url}/?has_dead_letters=true")
    assert row_ids(browser) == [struck.task_id]
    assert browser.find("#filter-dead-letters").is_selected()

    open_task_page(browser, f"{console.url}/tasks/{struck.task_id}")
    [entry] = browser.find_all("#timeline li[data-kind='dead_letter']")
    assert "undecodable" in entry.text and settings.processor.group_id in entry.text
    browser.screenshot("timeline")
    assert_clean_log(browser)
