"""Entry-point plumbing shared by the services: settings, logging, serve until SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import Callable

import structlog
from aiohttp import web

from .errors import ConfigError, PipelineError
from .logs import configure_logging
from .settings import Settings

__all__ = ["load_settings", "serve"]


def load_settings(program: str) -> Settings:
    """Settings from the environment, or exit with a message naming the bad variable."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"{program}: configuration error: {exc}")


def serve(
    program: str,
    factory: Callable[[Settings], web.Application],
    address: Callable[[Settings], tuple[str, int]],
    *,
    shutdown_timeout: float = 10.0,
) -> None:
    """Run ``factory(settings)`` on ``address(settings)``; SIGTERM drains and exits 0."""
    settings = load_settings(program)
    configure_logging(settings.log)
    host, port = address(settings)
    try:
        web.run_app(
            factory(settings),
            host=host,
            port=port,
            print=None,
            access_log=None,
            shutdown_timeout=shutdown_timeout,
        )
    except PipelineError as exc:
        # Start-up failed (no broker, bad storage): say what, exit non-zero, no traceback.
        structlog.get_logger(program).error("startup_failed", error=str(exc))
        sys.exit(f"{program}: cannot start: {exc}")
