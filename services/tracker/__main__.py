"""``suno-tracker`` / ``python -m services.tracker``: see :mod:`services.tracker.cli`."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
