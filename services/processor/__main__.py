"""``suno-processor``: consume callback events until SIGTERM or Ctrl-C."""

from __future__ import annotations

from services.common.main import serve

from .app import create_app


def main() -> None:
    serve("suno-processor", create_app, lambda s: (s.processor.host, s.processor.port))


if __name__ == "__main__":
    main()
