"""Logs: one JSON stream (ours and the libraries'), context on every line, no secrets."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from services.common.logs import REDACTED, configure_logging
from services.common.settings import LogSettings, Settings

from ..helpers import eventually
from .pipeline import (
    SIM_API_KEY,
    TRACKER_TOKEN,
    pipeline_settings,
    running_pipeline,
    send_tracker_traffic,
    send_traffic,
)


@pytest.fixture(name="log_stream")
def fixture_log_stream() -> Iterator[io.StringIO]:
    """A captured stream the test configures logging into; everything is restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_config = structlog.get_config()
    stream = io.StringIO()
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        logging.captureWarnings(False)
        structlog.configure(**saved_config)
        structlog.contextvars.clear_contextvars()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line of the stream as JSON; a plain-text line fails the test."""
    events = []
    for number, line in enumerate(stream.getvalue().splitlines(), 1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"line {number} of the JSON log stream is not JSON: {line!r}")
    return events


class TestConfigureLogging:
    def test_json_lines_with_context_level_logger_and_time(self, log_stream: io.StringIO) -> None:
        """Our events become JSON objects carrying the bound context."""
        configure_logging(LogSettings(format="json"), stream=log_stream, cache_loggers=False)
        with structlog.contextvars.bound_contextvars(task_id="t-1", delivery_key="t-1:abc"):
            structlog.get_logger("services.test").info("callback_accepted", size=12)
        [event] = json_lines(log_stream)
        assert event["event"] == "callback_accepted"
        assert event["task_id"] == "t-1" and event["delivery_key"] == "t-1:abc"
        assert event["level"] == "info" and event["logger"] == "services.test"
        assert event["size"] == 12 and event["timestamp"].endswith("Z")

    def test_values_the_fast_encoder_refuses_still_make_a_line(
        self, log_stream: io.StringIO
    ) -> None:
        """Integers past 64 bits, non-string keys and arbitrary objects are written too."""
        configure_logging(LogSettings(format="json"), stream=log_stream, cache_loggers=False)
        log = structlog.get_logger("services.test")
        log.info("big", value=2**70)
        log.info("keys", mapping={1: "one"}, thing=object)
        big, keys = json_lines(log_stream)
        assert big["value"] == 2**70
        assert keys["mapping"] == {"1": "one"}
        assert keys["thing"] == repr(object)

    def test_library_records_are_json_too(self, log_stream: io.StringIO) -> None:
        """aiokafka/aiohttp/asyncio records and warnings go through the same formatter."""
        configure_logging(LogSettings(format="json"), stream=log_stream, cache_loggers=False)
        with structlog.contextvars.bound_contextvars(task_id="t-2"):
            logging.getLogger("aiokafka.conn").warning("connection to %s lost", "broker-1")
            logging.getLogger("aiohttp.server").error("Error handling request")
            logging.getLogger("asyncio").error("Task exception was never retrieved")
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.warn("something deprecated", DeprecationWarning, stacklevel=1)
        events = json_lines(log_stream)
        assert [e["logger"] for e in events] == [
            "aiokafka.conn",
            "aiohttp.server",
            "asyncio",
            "py.warnings",
        ]
        assert events[0]["event"] == "connection to broker-1 lost"
        assert all(e["task_id"] == "t-2" for e in events)

    def test_chatty_libraries_stay_quiet_below_warning(self, log_stream: io.StringIO) -> None:
        configure_logging(
            LogSettings(format="json", level="DEBUG"), stream=log_stream, cache_loggers=False
        )
        logging.getLogger("aiokafka.consumer").info("Updating subscribed topics")
        structlog.get_logger("services.test").debug("ours_at_debug")
        assert [e["event"] for e in json_lines(log_stream)] == ["ours_at_debug"]

    def test_level_filters_our_events(self, log_stream: io.StringIO) -> None:
        configure_logging(
            LogSettings(format="json", level="WARNING"), stream=log_stream, cache_loggers=False
        )
        log = structlog.get_logger("services.test")
        log.info("hidden")
        log.warning("shown")
        assert [e["event"] for e in json_lines(log_stream)] == ["shown"]

    def test_tracebacks_are_structured_and_carry_no_locals(self, log_stream: io.StringIO) -> None:
        """An exception logs its frames but never the local variables holding keys or bodies."""
        configure_logging(LogSettings(format="json"), stream=log_stream, cache_loggers=False)

        def verify(secret: str = "local-secret-value-123") -> None:
            raise ValueError("signature mismatch")

        for logger in (structlog.get_logger("services.test"), logging.getLogger("aiohttp.web")):
            try:
                verify()
            except ValueError:
                logger.exception("verification_crashed")
        text = log_stream.getvalue()
        assert "local-secret-value-123" not in text
        events = json_lines(log_stream)
        assert len(events) == 2
        for event in events:
            [exception] = event["exception"]
            assert exception["exc_type"] == "ValueError"
            assert all("locals" not in frame for frame in exception["frames"])

    def test_sensitive_keys_are_redacted(self, log_stream: io.StringIO) -> None:
        """A body, secret or headers passed by mistake are never written."""
        configure_logging(LogSettings(format="json"), stream=log_stream, cache_loggers=False)
        structlog.get_logger("services.test").info(
            "oops",
            body=b"{raw}",
            secret="k",
            Headers={"X-Webhook-Signature": "s"},
            size=3,
            signature="VERIFIED",
        )
        [event] = json_lines(log_stream)
        assert event["body"] == event["secret"] == event["Headers"] == REDACTED
        assert event["size"] == 3
        assert event["signature"] == "VERIFIED"  # a verification status, not a signature

    def test_console_format_is_readable_text(self, log_stream: io.StringIO) -> None:
        configure_logging(LogSettings(format="console"), stream=log_stream, cache_loggers=False)
        structlog.get_logger("services.test").info("callback_accepted", task_id="t-3")
        logging.getLogger("aiokafka").warning("broker down")
        lines = log_stream.getvalue().splitlines()
        assert len(lines) == 2
        assert "callback_accepted" in lines[0] and "task_id=t-3" in lines[0]
        assert "broker down" in lines[1]
        assert not lines[0].startswith("{")
        assert "\x1b[" not in log_stream.getvalue()  # no colours when not a terminal

    def test_auto_is_json_when_not_a_terminal(self, log_stream: io.StringIO) -> None:
        configure_logging(LogSettings(format="auto"), stream=log_stream, cache_loggers=False)
        structlog.get_logger("services.test").info("x")
        assert json_lines(log_stream)[0]["event"] == "x"


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.slow
async def test_no_secret_signature_or_body_in_any_log_line(
    settings: Settings, database_url: str, log_stream: io.StringIO
) -> None:
    """Real traffic through the four services, logging JSON at DEBUG into a captured stream.

    The webhook key, every signature sent (valid or forged), the provider's API key, the
    tracker's API token and a marker present in every body never appear; every line is
    JSON; the ingest and both consumers log each accepted callback with its task id and
    delivery key; the tracker logs each task it ends.
    """
    configure_logging(
        LogSettings(format="json", level="DEBUG"), stream=log_stream, cache_loggers=False
    )
    secret = f"obs-secret-{uuid.uuid4().hex}"
    marker = f"ZZLOGMARKER{uuid.uuid4().hex[:10]}"
    settings = pipeline_settings(settings, secret)
    async with running_pipeline(settings, database_url=database_url) as pipeline:
        requests = await send_tracker_traffic(pipeline, run=uuid.uuid4().hex[:8])
        traffic = await send_traffic(pipeline, secret=secret, marker=marker)
        assert traffic.accepted, f"the ingest accepted nothing: {dict(traffic.statuses)}"
        keys = {
            task_id: f"{task_id}:{hashlib.sha256(body).hexdigest()}"
            for task_id, body in traffic.bodies.items()
        }

        def consumers_logged_everything() -> bool:
            events = json_lines(log_stream)
            for service in ("services.processor", "services.archiver"):
                seen = {e.get("delivery_key") for e in events if e["logger"].startswith(service)}
                if not set(keys.values()) <= seen:
                    return False
            dead = [e for e in events if e["event"] == "record_dead_lettered"]
            ended = [e for e in events if e["event"] == "task_ended" and e.get("moved")]
            return len(dead) >= 2 * traffic.garbage_records and len(ended) >= len(requests)

        await eventually(consumers_logged_everything, timeout=60, what="a log line per record")

    text = log_stream.getvalue()
    events = json_lines(log_stream)
    assert len(events) > 3 * len(keys)
    assert secret not in text, "the webhook key appears in the logs"
    assert SIM_API_KEY not in text, "the provider's API key appears in the logs"
    assert TRACKER_TOKEN not in text, "the tracker's API token appears in the logs"
    for signature in traffic.signatures:
        assert signature not in text, f"a signature ({signature}) appears in the logs"
    assert marker not in text, "body content (an instrument name) appears in the logs"

    for service in ("services.ingest", "services.processor", "services.archiver"):
        for task_id, delivery_key in keys.items():
            lines = [
                e
                for e in events
                if e["logger"].startswith(service) and e.get("delivery_key") == delivery_key
            ]
            assert lines, f"{service} logged nothing with delivery_key {delivery_key}"
            assert all(e.get("task_id") == task_id for e in lines), lines
    # Refused requests are logged too, with the task id they claimed when there was one.
    refused = {e.get("task_id") for e in events if e["logger"].startswith("services.ingest")}
    assert set(traffic.task_ids) <= refused
