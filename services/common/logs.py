"""structlog configured once at start-up: JSON lines in production, readable on a terminal.

Everything goes through one handler on the standard library's root logger, formatted by
structlog's ``ProcessorFormatter``: our own events *and* the libraries' (aiokafka, aiohttp,
asyncio, warnings), so a JSON stream never carries a plain-text line. Context (task id,
delivery key, topic/partition/offset) is bound with ``structlog.contextvars`` per request or
per record; ``merge_contextvars`` runs first so every line carries it.

Never log keys, signatures or bodies. As a second line of defence, values under names that
usually hold them (``body``, ``secret``, ``headers``, ``x_webhook_signature`` ...) become
``[redacted]``, and tracebacks never include local variables (where bodies and keys live).
``signature`` is not on that list: the ingest logs the verification status under it.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from .settings import LogSettings

__all__ = ["REDACTED", "SENSITIVE_KEYS", "configure_logging", "redact_sensitive"]

REDACTED = "[redacted]"

#: Event keys whose values are never written, whatever a caller passes (lower case).
SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "body",
        "headers",
        "password",
        "payload",
        "redis_url",
        "sasl_password",
        "secret",
        "secrets",
        "webhook_secret",
        "webhook_secrets",
        "x-webhook-signature",
        "x_webhook_signature",
    }
)

#: Libraries that are chatty below WARNING (aiokafka logs every rebalance step at INFO).
QUIET_LIBRARIES = ("aiokafka", "aiohttp.access", "aiohttp.server", "kafka", "botocore", "asyncio")

_HANDLER_NAME = "suno-midi"


def redact_sensitive(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of any key in :data:`SENSITIVE_KEYS` by :data:`REDACTED`."""
    for key in event_dict:
        if key.lower() in SENSITIVE_KEYS:
            event_dict[key] = REDACTED
    return event_dict


def _wants_json(settings: LogSettings, stream: TextIO) -> bool:
    if settings.format != "auto":
        return settings.format == "json"
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def _pre_chain() -> list[Processor]:
    """What every event gets, ours and the libraries': context, level, name, time."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_sensitive,
    ]


def _dumps(value: Any, **kw: Any) -> str:
    """orjson (a log line is written per accepted callback; it costs a third of json's
    time); json.dumps for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(
            value, default=kw.get("default"), option=orjson.OPT_NON_STR_KEYS
        ).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, **kw)


def _renderers(as_json: bool, stream: TextIO) -> list[Processor]:
    if as_json:
        return [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.UnicodeDecoder(),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    isatty = getattr(stream, "isatty", None)
    colors = bool(callable(isatty) and isatty())
    return [structlog.dev.ConsoleRenderer(colors=colors)]


def configure_logging(
    settings: LogSettings, *, stream: TextIO | None = None, cache_loggers: bool = True
) -> None:
    """Route structlog and the standard library through one formatter onto ``stream``.

    Idempotent: calling it again replaces the handler. The level is the root logger's, so
    reconfiguring also changes what cached loggers emit. Tests that configure logging for
    a while pass ``cache_loggers=False``, so no logger keeps this configuration afterwards
    (``structlog.testing.capture_logs`` elsewhere keeps working).
    """
    stream = stream if stream is not None else sys.stderr
    as_json = _wants_json(settings, stream)
    level = logging.getLevelNamesMapping()[settings.level]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_pre_chain(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderers(as_json, stream),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    # No caller, thread or process lookups per record: the JSON line never shows them
    # (the "Optimization" section of the logging documentation).
    logging._srcfile = None  # documented as the switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False

    root = logging.getLogger()
    for old in list(root.handlers):
        # Any other handler would write the libraries' records as plain text.
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_pre_chain(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        cache_logger_on_first_use=cache_loggers,
    )
