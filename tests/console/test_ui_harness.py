"""The console's pages in Chromium against a UI-ONLY HARNESS, not the console.

The harness is a small aiohttp app that serves ``services/console/static/`` with the
console's security headers and answers the read API's paths from fixed documents, built
from a provider-shaped body (the simulator's) normalized by the processor's own
:func:`~services.processor.normalize.normalize`. It stands in for nobody's server: it
lets the pages be exercised on their own (they were written before the console's API
existed), and it is where the pages meet API errors on demand (an unknown task, a broken
list). ``test_ui.py`` runs the same pages against the real console.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from devenv.simulator.results import midi_data
from services.console.health import ServiceHealth
from services.processor.normalize import normalize
from services.processor.render import layout_tracks
from tests.fixtures.browser import Browser

from .browser import (
    assert_clean_log,
    cursor_seconds,
    drawn_count,
    notes_drawn,
    open_task_page,
    row_states,
    wait_for_rows,
)

STATIC = Path(__file__).resolve().parents[2] / "services/console/static"
CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
TASK_ID = "ui-harness-task"
BODY = {
    "code": 200,
    "msg": "success",
    "data": {"taskId": TASK_ID, **(midi_data(7, TASK_ID, "success") or {})},
}


def summary(task_id: str | None, request_id: str, state: str, minute: int) -> dict[str, Any]:
    at = f"2026-11-30T20:{minute:02d}:00+00:00"
    return {
        "task_id": task_id,
        "request_id": request_id,
        "state": state,
        "origin": "tracker",
        "created_at": at,
        "updated_at": at,
        "poll_count": 0,
        "deliveries": 1 if state == "completed" else 0,
    }


TASKS = [
    summary(TASK_ID, "req-harness-1", "completed", 30),
    summary("task-harness-2", "req-harness-2", "submitted", 20),
    summary(None, "req-harness-3", "requested", 10),
]


def notes_document() -> dict[str, Any]:
    """The notes document of the contract, from ``BODY`` through the processor's code."""
    normalized = normalize(BODY)
    layouts = layout_tracks(normalized.instruments)
    instruments = [
        {
            "name": instrument.name,
            "program": layout.program,
            "channel": layout.channel,
            "is_drum": layout.is_drum,
            "note_count": len(instrument.notes),
            "notes": [[n.pitch, n.start, n.end, n.velocity] for n in instrument.notes],
        }
        for instrument, layout in zip(normalized.instruments, layouts, strict=True)
    ]
    ends = [n.end for i in normalized.instruments for n in i.notes]
    return {
        "task_id": TASK_ID,
        "body_sha256": "0" * 64,
        "state": "completed",
        "duration_seconds": max(ends, default=0.0),
        "instruments": instruments,
        "dropped_notes": dict(normalized.dropped),
    }


NOTES = notes_document()


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def list_tasks(request: web.Request) -> web.Response:
    if request.query.get("q") == "break":
        return error(500, "internal", "the harness was asked to fail")
    state = request.query.get("state")
    tasks = [t for t in TASKS if not state or t["state"] == state]
    return web.json_response({"tasks": tasks, "next_cursor": None})


async def counts(_request: web.Request) -> web.Response:
    states = ("requested", "submitted", "completed", "failed", "empty", "expired")
    tally = {s: sum(t["state"] == s for t in TASKS) for s in states}
    return web.json_response({"counts": tally, "oldest_open_seconds": 600.0})


async def console_info(_request: web.Request) -> web.Response:
    """A read-only console: the harness takes no action."""
    return web.json_response({"read_only": True, "actions": False})


#: One panel of each kind the strip draws, made by the console's own ServiceHealth.
HEALTH = {
    "source": "metrics",
    "rates": "previous_scrape",
    "registry_up": True,
    "oldest_open_seconds": 600.0,
    "services": [
        ServiceHealth("processor", "ok", True, 3.0, 0.0, 0.25).as_json(),
        ServiceHealth("archiver", "ok", False, 0.0, None, None).as_json(),
        ServiceHealth("tracker", "unreachable", message="no answer: TimeoutError").as_json(),
        ServiceHealth("ingest", "not_configured", message="not configured").as_json(),
    ],
}


async def health(_request: web.Request) -> web.Response:
    return web.json_response(HEALTH)


async def task(request: web.Request) -> web.Response:
    if request.match_info["id"] != TASK_ID:
        return error(404, "task_not_found", f"no task {request.match_info['id']!r}")
    timeline = [
        {
            "at": "2026-11-30T20:30:00+00:00",
            "kind": "transition",
            "summary": "requested",
            "detail": {"from": None, "to": "requested", "reason": None},
        },
        {
            "at": "2026-11-30T20:30:05+00:00",
            "kind": "delivery",
            "summary": "callback",
            "detail": {"source": "callback", "body_sha256": "0" * 64, "verified": True},
        },
    ]
    files = {"midi": True, "quantized": False, "preview": False}
    document = {"task": {**TASKS[0], "audio_id": None}, "timeline": timeline, "files": files}
    return web.json_response(document)


async def notes(request: web.Request) -> web.Response:
    if request.match_info["id"] != TASK_ID:
        return error(404, "task_not_found", "no such task")
    return web.json_response(NOTES)


def page(name: str) -> Any:
    async def handler(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name)

    return handler


@web.middleware
async def headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers.update(
        {
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
    )
    return response


def harness_app() -> web.Application:
    app = web.Application(middlewares=[headers])
    app.router.add_get("/", page("index.html"))
    app.router.add_get("/tasks/{id}", page("task.html"))
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/v1/tasks", list_tasks)
    app.router.add_get("/api/v1/counts", counts)
    app.router.add_get("/api/v1/console", console_info)

    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/api/v1/tasks/{id}", task)
    app.router.add_get("/api/v1/tasks/{id}/notes", notes)
    return app


@pytest.fixture(name="harness", scope="module")
def fixture_harness() -> Iterator[str]:
    """The UI-only harness on a free local port, in a thread (Selenium blocks); its URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(harness_app(), access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, name="ui-harness", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


class TestListOnHarness:
    def test_list_loads_then_a_state_filter_changes_the_rows(
        self, browser: Browser, harness: str
    ) -> None:
        """The list shows every task, and filtering by state leaves only that state's rows."""
        browser.open(f"{harness}/")
        assert sorted(row_states(wait_for_rows(browser))) == ["completed", "requested", "submitted"]
        browser.find("#filter-state option[value='submitted']").click()
        browser.find("#filters button[type='submit']").click()
        browser.wait_until(
            lambda: row_states(wait_for_rows(browser)) == ["submitted"], "filtered rows"
        )
        assert "state=submitted" in browser.driver.current_url
        browser.screenshot("list-filtered")
        assert_clean_log(browser)

    def test_a_failing_list_says_so(self, browser: Browser, harness: str) -> None:
        """An error answer shows the server's message instead of rows."""
        browser.open(f"{harness}/?q=break")
        browser.wait_for_attribute("#tasks", "data-status", "error")
        assert "the harness was asked to fail" in browser.find("#status").text

    def test_the_health_strip_draws_each_verdict(self, browser: Browser, harness: str) -> None:
        """Ready, not ready, unreachable (with its reason), not configured; figures as sent,
        "—" where unknown."""
        browser.open(f"{harness}/")
        browser.wait_for_attribute("#health", "data-status", "ready")
        panels = browser.find_all("#health .health-panel")
        verdicts = [
            (p.get_attribute("data-service"), p.get_attribute("data-health")) for p in panels
        ]
        assert verdicts == [
            ("processor", "ok"),
            ("archiver", "not-ready"),
            ("tracker", "unreachable"),
            ("ingest", "not_configured"),
        ]

        def figure(service: str, signal: str) -> str:
            css = f"#health [data-service='{service}'] [data-signal='{signal}']"
            return str(browser.find(css).text)

        assert figure("processor", "lag").endswith(" 3")
        assert figure("processor", "dead-letters").endswith(" 0.25")
        assert figure("archiver", "errors").endswith("—")
        assert "TimeoutError" in panels[2].text
        assert_clean_log(browser)


class TestTaskPageOnHarness:
    def test_piano_roll_draws_every_visible_note(self, browser: Browser, harness: str) -> None:
        """All notes are drawn at first; hiding an instrument removes exactly its notes."""
        total = sum(i["note_count"] for i in NOTES["instruments"])
        open_task_page(browser, f"{harness}/tasks/{TASK_ID}")
        assert notes_drawn(browser, total) == total
        browser.screenshot("task")
        first = NOTES["instruments"][0]
        browser.find("#lanes input[data-index='0']").click()
        assert notes_drawn(browser, total - first["note_count"]) == total - first["note_count"]
        assert_clean_log(browser)

    def test_zoom_narrows_the_view_and_fit_shows_everything(
        self, browser: Browser, harness: str
    ) -> None:
        """Zoomed in, only the notes in view are drawn; Fit draws every note again."""
        total = sum(i["note_count"] for i in NOTES["instruments"])
        open_task_page(browser, f"{harness}/tasks/{TASK_ID}")
        assert notes_drawn(browser, total) == total
        for _ in range(4):
            browser.find("#zoom-in").click()
        browser.wait_until(lambda: drawn_count(browser) < total, "fewer notes in view")
        browser.find("#zoom-fit").click()
        assert notes_drawn(browser, total) == total
        assert_clean_log(browser)

    def test_playback_moves_the_cursor(self, browser: Browser, harness: str) -> None:
        """Play starts playback and the cursor follows the audio clock; stop stops it."""
        open_task_page(browser, f"{harness}/tasks/{TASK_ID}")
        play = browser.find("#play")
        play.click()
        browser.wait_for_attribute("#play", "data-state", "playing")
        browser.wait_until(lambda: cursor_seconds(browser) > 0.2, "the cursor to move")
        play.click()
        browser.wait_for_attribute("#play", "data-state", "stopped")
        assert_clean_log(browser)

    def test_an_unknown_task_says_so(self, browser: Browser, harness: str) -> None:
        """A 404 from the API becomes a readable message, not a blank page."""
        browser.open(f"{harness}/tasks/no-such-task")
        browser.wait_for_attribute("#task-page", "data-status", "error")
        assert "No such task" in browser.find("#status").text
        assert "no-such-task" in browser.find("#status").text
        assert_clean_log(browser, allowed_404=1)


def test_the_harness_serves_the_contract_headers(harness: str) -> None:
    """The pages are tested under the console's CSP, or the CSP checks would prove nothing."""
    with urllib.request.urlopen(f"{harness}/static/task.js") as answer:
        assert answer.headers["Content-Security-Policy"] == CSP
