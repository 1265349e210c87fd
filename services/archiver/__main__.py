"""``suno-archiver`` / ``python -m services.archiver``: see :mod:`services.archiver.cli`."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
