"""The task page's Redrive in Debian's headless Chromium against the real console and the
session's broker: with an operator's credentials it puts the dead letter back on its
source topic and says so; a task without dead letters offers no Redrive."""

from __future__ import annotations

from typing import Any

import pytest

from services.archiver.dlq import REDRIVEN_FROM
from services.common.kafka import Publisher
from services.common.settings import Settings
from tests.fixtures.browser import Browser
from tests.helpers import read_topic

from .browser import act_from_page, open_task_page
from .conftest import PASSWORD, USER, Console, dead_letter, indexed, unique
from .test_ui_actions import severe, signed_in

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]


def redrive_from_page(browser: Browser, console: Console, task_id: str) -> Any:
    return act_from_page(browser, console.url, task_id, "redrive")


async def test_redrive_from_the_page_with_credentials(
    browser: Browser, operator_console: Console, settings: Settings, publisher: Publisher
) -> None:
    """The operator's redrive puts the record back on the callbacks topic, marked."""
    callbacks = settings.kafka.topics.callbacks
    task = operator_console.completed_task(task_id=unique("ui-redrive"))
    [letter] = await dead_letter(settings, publisher, [task.task_id.encode()])
    await indexed(operator_console, 1)
    with signed_in(browser, USER, PASSWORD):
        outcome = redrive_from_page(browser, operator_console, task.task_id)
        text = outcome.text
        assert outcome.get_attribute("data-status") == "done", text
        browser.screenshot("redriven")
    place = f"{letter.topic}/{letter.partition}/{letter.offset}"
    assert f"Redrove 1 dead letter ({place} → {callbacks})" in text
    assert severe(browser) == []
    # the undecodable original, then its copy
    original, copy = await read_topic(settings.kafka.bootstrap_servers, callbacks, 2)
    assert (copy.key, copy.value) == (original.key, original.value)
    assert dict(copy.headers)[REDRIVEN_FROM] == place.encode()


def test_a_task_without_dead_letters_offers_no_redrive(
    browser: Browser, operator_console: Console
) -> None:
    task = operator_console.completed_task()
    open_task_page(browser, f"{operator_console.url}/tasks/{task.task_id}")
    assert browser.find("#replay").is_displayed()
    assert not browser.find("#redrive").is_displayed()
