"""``suno-ingest``: serve the callback receiver until SIGTERM or Ctrl-C."""

from __future__ import annotations

from services.common.main import serve

from .app import create_app


def main() -> None:
    serve(
        "suno-ingest",
        create_app,
        lambda s: (s.ingest.host, s.ingest.port),
        shutdown_timeout=10.0,
    )


if __name__ == "__main__":
    main()
