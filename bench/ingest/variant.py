"""Runs the ingest as ``python -m services.ingest`` does, with a bench variant applied first.

Candidates that are not settings of the ingest (measured, not adopted: docs/ingest.md)
are chosen here, from the environment the bench sets: ``BENCH_EVENT_LOOP=uvloop`` runs
uvloop's event loop, ``BENCH_REDIS_PARSER=hiredis`` lets redis-py use hiredis's reply
parser (hiredis is not a dependency: ``.venv/bin/python -m uv pip install hiredis`` first;
every other variant hides it from redis-py). Without them the process is what production
runs: asyncio's loop and redis-py's own parser.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys


def main() -> None:
    if os.environ.get("BENCH_REDIS_PARSER") != "hiredis":
        sys.modules["hiredis"] = None  # type: ignore[assignment]  # import fails: not used
    elif importlib.util.find_spec("hiredis") is None:
        sys.exit("the hiredis variant needs hiredis: .venv/bin/python -m uv pip install hiredis")
    if os.environ.get("BENCH_EVENT_LOOP") == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from services.ingest.__main__ import main as ingest_main

    ingest_main()


if __name__ == "__main__":
    main()
