"""``make demo``: the whole life of three tasks on a running ``make run``.

It asks the tracker for MIDI three times, having told the provider simulator what each
task will do: one is delivered by callback, one has every callback dropped (the tracker
recovers it by polling ``record-info``), one fails. Each state change is printed as it
happens, then where the MIDI files are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from services.common.keys import task_key
from services.common.main import load_settings

from .local_key import TOKEN_FILE, read_local_key
from .pipeline import RUN_FILE

__all__ = ["main"]

#: (name, what the simulator is told, the end the tracker must reach)
PLAN = (
    ("delivered", {"outcome": "success", "callback": "deliver"}, "completed"),
    ("lost", {"outcome": "success", "callback": "drop"}, "completed"),
    ("failed", {"outcome": "failure", "callback": "deliver"}, "failed"),
)
TERMINAL = {"completed", "failed", "empty", "expired"}


async def run(run: dict[str, Any], token: str, data_dir: Path, patience: float) -> int:
    stamp = time.strftime("%H%M%S")
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        requests: dict[str, str] = {}
        for name, script, _end in PLAN:
            source = f"demo-{stamp}-{name}"
            async with http.put(f"{run['provider']}/_sim/scripts/{source}", json=script) as r:
                r.raise_for_status()
            body = {"source_task_id": source, "request_id": f"demo-{stamp}-{name}"}
            async with http.post(
                f"{run['tracker']}/v1/midi/requests", json=body, headers=auth
            ) as r:
                answer = await r.json()
                if r.status not in (200, 202):
                    print(f"demo: the tracker refused the request: {answer}", file=sys.stderr)
                    return 1
            requests[name] = body["request_id"]
            print(f"{name:>9}: requested {body['request_id']} ({script['callback']} the callback)")
        return await _watch(http, run, auth, requests, data_dir, patience)


async def _watch(
    http: aiohttp.ClientSession,
    run: dict[str, Any],
    auth: dict[str, str],
    requests: dict[str, str],
    data_dir: Path,
    patience: float,
) -> int:
    started = time.monotonic()
    seen: dict[str, str] = {}
    ended: dict[str, dict[str, Any]] = {}
    while len(ended) < len(requests) and time.monotonic() - started < patience:
        for name, request_id in requests.items():
            if name in ended:
                continue
            async with http.get(f"{run['tracker']}/v1/midi/tasks/{request_id}", headers=auth) as r:
                found = await r.json()
            state = found["task"]["state"]
            if seen.get(name) != state:
                seen[name] = state
                how = _how(found) if state in TERMINAL else ""
                print(f"{name:>9}: {state:<10} +{time.monotonic() - started:5.1f} s {how}")
            if state in TERMINAL:
                ended[name] = found
        await asyncio.sleep(1.0)
    return _summary(requests, ended, data_dir)


def _how(found: dict[str, Any]) -> str:
    sources = sorted({d["source"] for d in found["deliveries"]})
    polls = len(found["polls"])
    return (
        f"(task {found['task']['task_id']}; result by {', '.join(sources) or '-'}; {polls} polls)"
    )


def _summary(requests: dict[str, str], ended: dict[str, dict[str, Any]], data_dir: Path) -> int:
    wanted = {name: end for name, _script, end in PLAN}
    status = 0
    print()
    for name in requests:
        found = ended.get(name)
        if found is None:
            print(f"{name:>9}: not ended in time (suno-tracker task {requests[name]})")
            status = 1
            continue
        task = found["task"]
        if task["state"] != wanted[name]:
            status = 1
        midi = data_dir / "midi" / f"{task_key(task['task_id'])}.mid"
        where = midi if midi.exists() else "no MIDI file (nothing to render)"
        print(f"{name:>9}: {task['state']}; {where}")
    return status


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    args = parser.parse_args(argv)
    data_dir = load_settings("demo").storage.data_dir.resolve()
    try:
        run_facts = json.loads((data_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        sys.exit(f"demo: no running system found ({data_dir / RUN_FILE}): start `make run` first")
    token = read_local_key(data_dir, TOKEN_FILE)
    if not run_facts.get("simulated") or token is None:
        sys.exit("demo: it scripts the provider simulator: run it with `make run` on its defaults")
    try:
        sys.exit(asyncio.run(run(run_facts, token, data_dir, args.timeout)))
    except aiohttp.ClientError as exc:
        sys.exit(f"demo: cannot reach the running system ({exc}): is `make run` still running?")


if __name__ == "__main__":
    main()
