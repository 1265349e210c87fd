"""The console's three targets, measured on a real console over a real registry:

- the task list's p99 with 1,000,000 tasks in PostgreSQL (target <= 50 ms), per filter,
  and the live counts' (``/api/v1/counts``), against ``/healthz`` on the same server in
  the same run (the HTTP path alone);
- the task page's transfer size before its notes (target <= 300 KB), as Chromium counts it;
- the piano roll's drawing time for a 12,000-note song in headless Chromium (target
  <= 200 ms), against the same page drawing a 120-note task in the same browser.

    make bench-console                        # = .venv/bin/python -m bench.console.run
    .venv/bin/python -m bench.console.run --tasks 200000 --requests 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from devenv.chromium import CHROMEDRIVER, chrome_options
from devenv.console_seed import bulk_tasks_sql, seed_completed_task, song_body
from devenv.postgres import LocalPostgres
from devenv.processes import free_port, stop, wait_http
from services.common.storage import LocalStorage
from services.tracker.registry import Registry

#: (name, query string) of the list requests measured.
LIST_CASES = (
    ("first page", ""),
    ("one state", "?state=failed"),
    ("a day", "?since=2026-11-10T00:00:00Z&until=2026-11-11T00:00:00Z"),
    ("an id prefix", "?q=req-a1"),
    ("has dead letters", "?has_dead_letters=true"),
)


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def seed(url: str, data_dir: Path, tasks: int) -> dict[str, str]:
    """The registry with ``tasks`` bare tasks, then two real ones (a song, a small one)."""
    registry = await Registry.connect(url)
    try:
        started = time.perf_counter()
        async with registry.pool.acquire() as conn:
            await conn.execute(bulk_tasks_sql(tasks, dead_lettered=tasks // 500))
        print(f"  {tasks:,} tasks written in {time.perf_counter() - started:.0f} s", flush=True)
        storage = LocalStorage(data_dir)
        song = await seed_completed_task(
            registry, storage, song_body("bench-song", notes=12_000), "bench-song"
        )
        small = await seed_completed_task(
            registry, storage, song_body("bench-small", notes=120), "bench-small"
        )
    finally:
        await registry.close()
    return {"song": song.task_id, "small": small.task_id}


async def list_latency(base: str, requests: int) -> list[tuple[str, float, float]]:
    """(case, p50 ms, p99 ms) for ``/healthz``, each list case and the live counts (the
    list page polls them), ``requests`` each."""
    results = []
    async with aiohttp.ClientSession() as http:
        for name, path in [
            ("/healthz (baseline)", "/healthz"),
            *((name, f"/api/v1/tasks{query}") for name, query in LIST_CASES),
            ("counts", "/api/v1/counts"),
        ]:
            samples = []
            for number in range(requests + 20):
                started = time.perf_counter()
                async with http.get(base + path) as answer:
                    await answer.read()
                    assert answer.status == 200, (path, answer.status)
                if number >= 20:  # warm-up: pool connections, plans
                    samples.append((time.perf_counter() - started) * 1000)
            results.append((name, statistics.median(samples), percentile(samples, 0.99)))
    return results


def browser_figures(base: str, tasks: dict[str, str], draws: int) -> dict[str, object]:
    """Transfer size of the song's page before its notes, and draw times of both rolls."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = webdriver.Chrome(options=chrome_options(), service=Service(str(CHROMEDRIVER)))
    figures: dict[str, object] = {}
    try:
        for name, task_id in tasks.items():
            driver.get(f"{base}/tasks/{task_id}")
            canvas = driver.find_element(By.ID, "roll")
            WebDriverWait(driver, 60).until(
                lambda _d, c=canvas: int(c.get_attribute("data-notes-drawn") or 0) > 0
            )
            times = [float(canvas.get_attribute("data-draw-ms") or "nan")]
            for number in range(draws):
                before = int(canvas.get_attribute("data-draws") or 0)
                button = "zoom-in" if number % 2 == 0 else "zoom-fit"
                driver.find_element(By.ID, button).click()
                WebDriverWait(driver, 30).until(  # drawn on the next animation frame
                    lambda _d, c=canvas, n=before: int(c.get_attribute("data-draws") or 0) > n
                )
                times.append(float(canvas.get_attribute("data-draw-ms") or "nan"))
            figures[f"{name} notes drawn"] = int(canvas.get_attribute("data-notes-drawn") or 0)
            figures[f"{name} first draw ms"] = times[0]
            figures[f"{name} redraw ms (median, max)"] = (
                statistics.median(times[1:]),
                max(times[1:]),
            )
            if name == "song":
                figures["song page transfer"] = driver.execute_script(_TRANSFER_JS)
    finally:
        driver.quit()
    return figures


#: Bytes over the wire for the page and everything it loaded, except the notes document.
_TRANSFER_JS = """
const entries = [...performance.getEntriesByType('navigation'),
                 ...performance.getEntriesByType('resource')];
const before = entries.filter(e => !e.name.includes('/notes'));
const notes = entries.filter(e => e.name.includes('/notes'));
const sum = (list, key) => list.reduce((total, e) => total + (e[key] || 0), 0);
return {requests: before.length, transfer: sum(before, 'transferSize'),
        decoded: sum(before, 'decodedBodySize'), notes_transfer: sum(notes, 'transferSize')};
"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console.run", description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks in the registry")
    parser.add_argument("--requests", type=int, default=300, help="requests per list case")
    parser.add_argument(
        "--draws", type=int, default=10, help="redraws per piano roll (even: ends on Fit)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="suno-bench-console-"))
    workdir.chmod(0o755)  # PostgreSQL runs as its own user below it
    database = LocalPostgres(data_dir=workdir / "postgres", fast=True).start()
    console: subprocess.Popen[bytes] | None = None
    try:
        print(f"seeding the registry (PostgreSQL at {database.url}) ...", flush=True)
        tasks = asyncio.run(seed(database.url, workdir / "data", args.tasks))
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database.url,
            "DATA_DIR": str(workdir / "data"),
            "CONSOLE_HOST": "127.0.0.1",
            "CONSOLE_PORT": str(port),
            "LOG_LEVEL": "warning",
        }
        console = subprocess.Popen(
            [sys.executable, "-m", "services.console"], env=env, start_new_session=True
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/readyz", 60, process=console, name="the console")
        except RuntimeError as exc:
            sys.exit(str(exc))
        print(f"\nlist with {args.tasks:,} tasks, {args.requests} requests per case:")
        print(f"  {'case':<22} {'p50 ms':>8} {'p99 ms':>8}")
        for name, p50, p99 in asyncio.run(list_latency(base, args.requests)):
            print(f"  {name:<22} {p50:8.2f} {p99:8.2f}")
        print("\nbrowser (headless Chromium):")
        for name, value in browser_figures(base, tasks, args.draws).items():
            print(f"  {name}: {json.dumps(value)}")
    finally:
        stop(console, 10)
        database.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
