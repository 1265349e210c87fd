"""The console's pages in Debian's headless Chromium against the real console: the
``console`` fixture (tests/console/conftest.py) serves ``create_app`` over a fresh
PostgreSQL and a tmp storage, and makes its tasks the way the pipeline does.

Every test also reads the browser's log: no console error, no CSP violation.
"""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING

from devenv.simulator.results import midi_data
from services.processor.normalize import normalize
from tests.fixtures.browser import Browser

from .browser import (
    assert_clean_log,
    cursor_seconds,
    notes_drawn,
    open_task_page,
    row_states,
    wait_for_rows,
)

if TYPE_CHECKING:  # the fixture's module, which pytest loads itself
    from .conftest import Console, CreatedTask

#: A simulator seed and task id whose callback has three instruments (drums among them),
#: every one with notes, so hiding the first lowers the count.
SEED, TASK_ID = 7, "ui-task-0008"


def provider_body(task_id: str) -> bytes:
    """A success callback as the provider simulator sends them, hundreds of bytes of notes."""
    data = midi_data(SEED, task_id, "success") or {}
    return json.dumps({"code": 200, "msg": "success", "data": {"taskId": task_id, **data}}).encode()


def note_counts(body: bytes) -> list[int]:
    """Kept notes per instrument, by the processor's own rules (independent of the pages)."""
    return [len(instrument.notes) for instrument in normalize(json.loads(body)).instruments]


def completed(console: Console) -> CreatedTask:
    return console.completed_task(body=provider_body(TASK_ID), task_id=TASK_ID)


class TestTaskList:
    def test_lists_tasks_and_filters_by_state(self, browser: Browser, console: Console) -> None:
        """Both tasks are listed; the state filter leaves the completed one, in the URL too."""
        created = completed(console)
        console.run(console.registry.request("ui-req-open", "ui-source", None, "http://ingest/cb"))
        browser.open(f"{console.url}/")
        assert sorted(row_states(wait_for_rows(browser))) == ["completed", "requested"]
        browser.wait_for_attribute("#counts", "data-status", "ready")
        assert browser.find(".count[data-state='completed'] .count-value").text == "1"
        browser.find("#filter-state option[value='completed']").click()
        browser.find("#filters button[type='submit']").click()
        browser.wait_until(
            lambda: row_states(wait_for_rows(browser)) == ["completed"], "the filtered rows"
        )
        row = browser.find("#tasks tbody tr[data-state]")
        assert row.get_attribute("data-id") == created.task_id
        assert "state=completed" in browser.driver.current_url
        browser.screenshot("list")
        assert_clean_log(browser)

    def test_a_shared_filtered_url_opens_filtered(self, browser: Browser, console: Console) -> None:
        """A filtered view's URL, opened afresh, shows the same filter and rows."""
        completed(console)
        console.run(console.registry.request("ui-req-open", "ui-source", None, "http://ingest/cb"))
        browser.open(f"{console.url}/?state=requested")
        assert row_states(wait_for_rows(browser)) == ["requested"]
        assert browser.find("#filter-state").get_attribute("value") == "requested"
        assert_clean_log(browser)

    def test_older_pages_through_the_list(self, browser: Browser, console: Console) -> None:
        """With a page of two, Older shows the third task and then has nowhere to go."""
        for n in range(3):
            console.run(console.registry.request(f"ui-req-{n}", "ui-source", None, "http://cb"))
        browser.open(f"{console.url}/?limit=2")
        assert [r.get_attribute("data-id") for r in wait_for_rows(browser)] == [
            "ui-req-2",
            "ui-req-1",
        ]
        browser.find("#older").click()
        browser.wait_until(lambda: "cursor=" in browser.driver.current_url, "the older page")
        assert [r.get_attribute("data-id") for r in wait_for_rows(browser)] == ["ui-req-0"]
        assert not browser.find("#older").is_enabled()
        assert_clean_log(browser)

    def test_counts_follow_new_tasks(self, browser: Browser, console: Console) -> None:
        """The counts refresh on their own: a task requested after the page opened shows up."""
        browser.open(f"{console.url}/")
        browser.wait_for_attribute("#counts", "data-status", "ready")
        requested = ".count[data-state='requested'] .count-value"
        assert browser.find(requested).text == "0"
        console.run(console.registry.request("ui-req-late", "ui-source", None, "http://cb"))
        browser.wait_until(lambda: browser.find(requested).text == "1", "the counts to refresh")
        assert_clean_log(browser)


class TestTaskPage:
    def test_piano_roll_draws_the_notes_of_visible_instruments(
        self, browser: Browser, console: Console
    ) -> None:
        """Every kept note is drawn; hiding the first instrument removes exactly its notes."""
        created = completed(console)
        counts = note_counts(created.body)
        open_task_page(browser, f"{console.url}/tasks/{created.task_id}")
        assert notes_drawn(browser, sum(counts)) == sum(counts)
        rows = browser.find_all("#instruments tr")
        assert [row.find_elements("css selector", "td")[-1].text for row in rows] == [
            str(n) for n in counts
        ]
        browser.screenshot("task")
        browser.find("#lanes input[data-index='0']").click()
        assert notes_drawn(browser, sum(counts) - counts[0]) == sum(counts) - counts[0]
        assert_clean_log(browser)

    def test_opens_by_request_id_too(self, browser: Browser, console: Console) -> None:
        """The page of our request id shows the same task and its notes."""
        created = completed(console)
        open_task_page(browser, f"{console.url}/tasks/{created.request_id}")
        assert browser.find("#task-title").text == created.task_id
        assert notes_drawn(browser, sum(note_counts(created.body))) > 0
        assert_clean_log(browser)

    def test_playback_starts_and_the_cursor_follows(
        self, browser: Browser, console: Console
    ) -> None:
        """Play switches to playing and the cursor moves with the audio clock; stop stops."""
        created = completed(console)
        open_task_page(browser, f"{console.url}/tasks/{created.task_id}")
        browser.find("#play").click()
        browser.wait_for_attribute("#play", "data-state", "playing")
        browser.wait_until(lambda: cursor_seconds(browser) > 0.2, "the cursor to move")
        browser.find("#play").click()
        browser.wait_for_attribute("#play", "data-state", "stopped")
        assert_clean_log(browser)

    def test_download_links_give_the_midi_file_and_the_raw_body(
        self, browser: Browser, console: Console
    ) -> None:
        """The page's links fetch the rendered file and the archived body, byte for byte."""
        created = completed(console)
        open_task_page(browser, f"{console.url}/tasks/{created.task_id}")
        for css, expected in (("#download-midi", created.midi), ("#download-raw", created.body)):
            href = browser.find(css).get_attribute("href") or ""
            with urllib.request.urlopen(href) as answer:
                assert answer.read() == expected, css
        assert_clean_log(browser)

    def test_a_task_without_a_body_has_no_roll(self, browser: Browser, console: Console) -> None:
        """A task still waiting for its result shows its header and says it has no notes."""
        console.run(console.registry.request("ui-req-open", "ui-source", None, "http://cb"))
        open_task_page(browser, f"{console.url}/tasks/ui-req-open")
        assert browser.find("#task-state [data-state]").text == "requested"
        assert browser.find("#roll-status").text.startswith("No notes")
        assert not browser.find("#play").is_enabled()
        assert_clean_log(browser, allowed_404=1)

    def test_an_unknown_task_says_so(self, browser: Browser, console: Console) -> None:
        """The API's 404 becomes a readable message on the page."""
        browser.open(f"{console.url}/tasks/no-such-task")
        browser.wait_for_attribute("#task-page", "data-status", "error")
        assert "No such task" in browser.find("#status").text
        assert_clean_log(browser, allowed_404=1)
