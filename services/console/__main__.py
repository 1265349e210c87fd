"""``suno-console`` / ``python -m services.console``: serve the console until SIGTERM or Ctrl-C."""

from __future__ import annotations

from services.common.main import serve

from .app import create_app


def main() -> None:
    serve("suno-console", create_app, lambda s: (s.console.host, s.console.port))


if __name__ == "__main__":
    main()
