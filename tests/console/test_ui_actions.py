"""The task page's actions in Debian's headless Chromium against the real console: a replay
from the page with an operator's credentials reaches Kafka and the task's timeline, one
without them is refused and the page says so, and a read-only console offers none."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from structlog.testing import capture_logs

from services.common.events import CallbackEvent
from services.common.kafka import Publisher
from services.common.settings import Secret, Settings
from tests.fixtures.browser import Browser
from tests.helpers import read_topic

from .browser import act_from_page, open_task_page
from .conftest import (
    PASSWORD,
    USER,
    Console,
    console_settings,
    operators,
    replays_tracked,
    running_console,
)
from .test_replay_timeline import replayed

pytestmark = [pytest.mark.postgres]


@contextmanager
def signed_in(browser: Browser, user: str, password: str) -> Iterator[None]:
    """The browser sends basic-auth credentials with every request, as it does once the
    operator has answered its sign-in prompt (which a headless browser cannot show)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver = browser.driver
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )
    try:
        yield
    finally:
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})


def replay_from_page(browser: Browser, console: Console, task_id: str) -> Any:
    return act_from_page(browser, console.url, task_id, "replay")


def severe(browser: Browser) -> list[str]:
    return [str(e["message"]) for e in browser.console_entries() if e.get("level") == "SEVERE"]


@pytest.mark.kafka
async def test_replay_from_the_page_with_credentials(
    browser: Browser,
    operator_console: Console,
    settings: Settings,
    publisher: Publisher,
    database_url: str,
) -> None:
    """An operator's replay reaches the callbacks topic, the page says what was sent, and
    once the tracker has read it the task's timeline shows it, by that operator."""
    created = operator_console.completed_task()
    async with replays_tracked(settings, database_url, publisher) as registry:
        with signed_in(browser, USER, PASSWORD):
            outcome = replay_from_page(browser, operator_console, created.task_id)
            text = outcome.text
            assert outcome.get_attribute("data-status") == "done", text
            browser.screenshot("replayed")
        await replayed(registry, created.task_id, 1)
    assert "Replayed 1 archived body" in text
    assert created.body_sha256[:12] in text
    open_task_page(browser, f"{operator_console.url}/tasks/{created.task_id}")
    event = browser.find('#timeline li[data-kind="replay"]')
    assert f"replay (by {USER}, console): 1 body" in event.text
    assert created.body_sha256[:12] in event.find_element(By.CSS_SELECTOR, ".replay-bodies").text
    browser.screenshot("replay-in-timeline")
    assert severe(browser) == []
    records = await read_topic(settings.kafka.bootstrap_servers, settings.kafka.topics.callbacks, 1)
    event = CallbackEvent.decode(records[0].value)
    assert (event.body, event.replay) == (created.body, True)


@pytest.mark.kafka
def test_the_sign_in_prompt_is_answered_and_the_replay_goes_through(
    bidi_browser: Browser, operator_console: Console
) -> None:
    """The real basic-auth challenge: the page's replay gets a 401 with
    ``WWW-Authenticate: Basic``, Chromium raises its sign-in prompt, which WebDriver
    BiDi answers with an operator's credentials (as a person would type them), and
    Chromium sends the request again with them: the replay is done, by that operator."""
    created = operator_console.completed_task()
    bidi_browser.driver.network.add_auth_handler(USER, PASSWORD)
    with capture_logs() as logs:
        outcome = replay_from_page(bidi_browser, operator_console, created.task_id)
        assert outcome.get_attribute("data-status") == "done", outcome.text
    assert "Replayed 1 archived body" in outcome.text
    bidi_browser.screenshot("signed-in")
    asked = [(entry["event"], entry.get("operator")) for entry in logs]
    assert ("console_action_unauthorized", None) in asked
    assert [entry for entry in asked if entry[0].startswith("console_action")] == [
        ("console_action_unauthorized", None),
        ("console_action", USER),
    ]


def test_an_unauthenticated_replay_is_refused_and_says_so(
    browser: Browser, database_url: str, tmp_path: Path
) -> None:
    """Without credentials the server's 401 reaches the page, which shows its message.

    The console takes bearer tokens only here: with basic credentials its 401 challenge
    makes a browser ask for them, a prompt a headless one can neither show nor cancel
    (the page shows the same message once the operator cancels it).
    """
    tokens = {"operator_tokens": (Secret("operator-token"),)}
    settings = console_settings(database_url, tmp_path / "data", **tokens)
    with running_console(settings) as console:
        created = console.completed_task()
        outcome = replay_from_page(browser, console, created.task_id)
        assert outcome.get_attribute("data-status") == "refused"
        assert "Refused: this action needs an operator" in outcome.text
        assert "error" in (outcome.get_attribute("class") or "")
        browser.screenshot("refused")
        logged = severe(browser)
        assert len(logged) == 1 and "status of 401" in logged[0], logged


def test_a_read_only_console_offers_no_action(
    browser: Browser, database_url: str, tmp_path: Path
) -> None:
    settings = console_settings(database_url, tmp_path / "data", **operators(read_only=True))
    with running_console(settings) as console:
        created = console.completed_task()
        open_task_page(browser, f"{console.url}/tasks/{created.task_id}")
        assert not browser.find("#actions").is_displayed()
        assert not browser.find("#replay").is_displayed()
