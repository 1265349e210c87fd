"""Runs the ingest as ``python -m services.ingest`` does, with a bench variant applied first.

The variants that are not settings of the ingest (yet) are chosen here, from the
environment the bench sets: ``BENCH_EVENT_LOOP=uvloop`` runs the event loop of uvloop,
``BENCH_REDIS_PARSER=hiredis`` lets redis-py use hiredis's reply parser. Without them the
process is what production runs: asyncio's loop and redis-py's own parser (hiredis, a dev
dependency here, is hidden from redis-py so the default variant does not pick it up).
"""

from __future__ import annotations

import asyncio
import os
import sys


def main() -> None:
    if os.environ.get("BENCH_REDIS_PARSER") != "hiredis":
        sys.modules["hiredis"] = None  # type: ignore[assignment]  # import fails: not used
    if os.environ.get("BENCH_EVENT_LOOP") == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from services.ingest.__main__ import main as ingest_main

    ingest_main()


if __name__ == "__main__":
    main()
