"""Runs the ingest as ``python -m services.ingest`` does, with a bench variant applied first.

A candidate that is not a setting of the ingest is chosen here, from the environment the
bench sets: ``BENCH_REDIS_PARSER=hiredis`` lets redis-py use hiredis's reply parser
(measured, not adopted: docs/ingest.md; hiredis is not a dependency, so
``.venv/bin/python -m uv pip install hiredis`` first). Every other variant hides hiredis
from redis-py, as production does not have it. The event loop is a setting
(``INGEST_EVENT_LOOP``), which the bench sets in the environment.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def main() -> None:
    if os.environ.get("BENCH_REDIS_PARSER") != "hiredis":
        sys.modules["hiredis"] = None  # type: ignore[assignment]  # import fails: not used
    elif importlib.util.find_spec("hiredis") is None:
        sys.exit("the hiredis variant needs hiredis: .venv/bin/python -m uv pip install hiredis")
    from services.ingest.__main__ import main as ingest_main

    ingest_main()


if __name__ == "__main__":
    main()
