"""``suno-ingest``: serve callbacks until SIGTERM, then drain in the order Kubernetes needs
(see :mod:`services.ingest.lifecycle`)."""

from __future__ import annotations

from services.common.main import serve

from .app import create_app
from .lifecycle import HOOKS

__all__ = ["main"]

#: Requests are drained before the listener closes; this only covers stragglers.
_STRAGGLER_SECONDS = 2.0
#: Idle connections stay open longer than any proxy's idle timeout in front of the ingest,
#: so a proxy never reuses one the ingest just closed (aiohttp's AppRunner default).
_KEEPALIVE_SECONDS = 3630.0


def main() -> None:
    serve(
        "suno-ingest",
        create_app,
        lambda s: (s.ingest.host, s.ingest.port),
        shutdown_timeout=_STRAGGLER_SECONDS,
        keepalive_timeout=_KEEPALIVE_SECONDS,
        hooks=HOOKS,
        reuse_port=lambda s: s.ingest.reuse_port,
        event_loop=lambda s: s.ingest.event_loop,
    )


if __name__ == "__main__":
    main()
