"""Where should the processor's CPU work run? Inline, a thread, or a process pool.

Processes one large callback (100 000 notes, ~8 MiB) three times each way while a 10 ms
ticker runs on the event loop, and prints the time per callback and the longest stall of
the loop (what Kafka heartbeats and /healthz would wait).

Run: ``.venv/bin/python -m bench.processor.loop_stall``
"""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from services.processor.app import process_callback

from .callbacks import synthetic_callback

ROUNDS = 3


async def measure(mode: str, body: bytes, pool: ProcessPoolExecutor | None) -> None:
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    durations = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        if mode == "inline":
            process_callback(body)
        elif mode == "thread":
            await asyncio.to_thread(process_callback, body)
        else:
            await loop.run_in_executor(pool, process_callback, body)
        durations.append(time.perf_counter() - started)
    done.set()
    await task
    print(
        f"{mode:>8}: {min(durations) * 1e3:8.0f} ms per callback (best of {ROUNDS}), "
        f"longest loop stall {max(gaps) * 1e3:6.0f} ms"
    )


async def main() -> None:
    body = synthetic_callback(100_000)
    print(f"callback: 100000 notes, {len(body) / 2**20:.1f} MiB")
    with ProcessPoolExecutor(1) as pool:
        await asyncio.get_running_loop().run_in_executor(pool, process_callback, b"{}")
        for mode in ("inline", "thread", "process"):
            await measure(mode, body, pool)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
