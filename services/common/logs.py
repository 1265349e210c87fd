"""structlog configured once at start-up: JSON lines in production, readable on a terminal.

Context (task id, delivery key, topic/partition/offset) is bound with
``structlog.contextvars`` per request or per record; ``merge_contextvars`` runs first so
every line carries it. Never log keys, signatures or bodies.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from .settings import LogSettings

__all__ = ["configure_logging"]


def configure_logging(settings: LogSettings, *, stream: Any = None) -> None:
    stream = stream or sys.stderr
    as_json = settings.format == "json" or (settings.format == "auto" and not stream.isatty())
    level = logging.getLevelNamesMapping()[settings.level]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if as_json:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiokafka, aiohttp) log through the standard library: keep them quiet
    # and on the same stream.
    logging.basicConfig(stream=stream, level=max(level, logging.WARNING), force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
