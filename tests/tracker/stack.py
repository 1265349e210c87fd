"""The whole system in one test: the provider simulator, the ingest, the processor, the
archiver and one or more trackers, on real Kafka and real PostgreSQL, each on a local port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from devenv.simulator import SimConfig
from devenv.simulator import create_app as create_simulator
from services.archiver.app import create_app as create_archiver
from services.common.settings import Secret, Settings
from services.ingest.app import CALLBACK_PATH
from services.ingest.app import create_app as create_ingest
from services.processor.app import create_app as create_processor
from services.tracker.app import create_app as create_tracker

from ..helpers import eventually

API_KEY = "stack-api-key"
WEBHOOK_KEY = "stack-webhook-key"
TOKEN = "stack-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Stack:
    http: aiohttp.ClientSession
    settings: Settings
    sim: TestServer
    ingest: TestServer
    trackers: list[TestServer] = field(default_factory=list)

    async def sim_json(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.sim.make_url(path), json=body) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def script(self, source: str, **script: Any) -> None:
        await self.sim_json("PUT", f"/_sim/scripts/{source}", script)

    async def request(
        self, source: str, request_id: str | None = None, *, tracker: int = 0
    ) -> tuple[int, dict[str, Any]]:
        body = {"source_task_id": source, "request_id": request_id or uuid.uuid4().hex}
        url = self.trackers[tracker].make_url("/v1/midi/requests")
        async with self.http.post(url, json=body, headers=AUTH) as response:
            return response.status, await response.json()

    async def task(self, key: str, *, tracker: int = 0) -> dict[str, Any] | None:
        url = self.trackers[tracker].make_url(f"/v1/midi/tasks/{key}")
        async with self.http.get(url, headers=AUTH) as response:
            if response.status == 404:
                return None
            assert response.status == 200, await response.text()
            return await response.json()  # type: ignore[no-any-return]

    async def settled(
        self, key: str, state: str | frozenset[str], timeout: float = 60.0
    ) -> dict[str, Any]:
        """The task's document once it is in ``state`` (or one of them)."""
        wanted = {state} if isinstance(state, str) else state

        async def probe() -> dict[str, Any] | None:
            found = await self.task(key)
            return found if found is not None and found["task"]["state"] in wanted else None

        return await eventually(probe, timeout=timeout, interval=0.3, what=f"{key} {state}")

    async def provider_tasks(self, source: str) -> list[dict[str, Any]]:
        """The tasks the provider created from ``source``: the truth about submissions."""
        tasks = (await self.sim_json("GET", "/_sim/tasks"))["tasks"]
        return [task for task in tasks if task["sourceTaskId"] == source]

    async def record_info(self, task_id: str) -> dict[str, Any]:
        url = self.sim.make_url(f"/api/v1/midi/record-info?taskId={task_id}")
        async with self.http.get(url, headers={"Authorization": f"Bearer {API_KEY}"}) as answer:
            return await answer.json()  # type: ignore[no-any-return]


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture(name="stack")
async def fixture_stack(
    database_url: str, settings: Settings, aiohttp_server: Any
) -> AsyncIterator[StackFactory]:
    """Build the stack: ``sim`` are SimConfig fields, ``tracker`` TrackerSettings fields,
    ``replicas`` how many trackers share the registry. (The database is asked for first,
    so that it is dropped only after every server is closed.)"""
    sessions: list[aiohttp.ClientSession] = []

    async def make(replicas: int = 1, sim: dict[str, Any] | None = None, **tracker: Any) -> Stack:
        simulator = await aiohttp_server(
            create_simulator(
                SimConfig(
                    **{
                        "api_key": API_KEY,
                        "webhook_key": WEBHOOK_KEY.encode(),
                        "completion_seconds": 0.2,
                        "callback_retry_seconds": 0.1,
                        "duplicate_gap_seconds": 0.1,
                        "rate_limit_requests": 1000,
                    }
                    | (sim or {})
                )
            )
        )
        signed = settings.with_overrides(
            ingest={"webhook_secrets": (Secret(WEBHOOK_KEY),), "allow_unsigned": False}
        )
        ingest = await aiohttp_server(create_ingest(signed, registry=CollectorRegistry()))
        await aiohttp_server(create_processor(signed, registry=CollectorRegistry()))
        await aiohttp_server(create_archiver(signed, registry=CollectorRegistry()))
        stacked = signed.with_overrides(
            tracker={
                "port": 0,
                "group_id": f"test-tracker-{uuid.uuid4().hex[:8]}",
                "database_url": Secret(database_url),
                "api_base_url": str(simulator.make_url("")).rstrip("/"),
                "api_key": Secret(API_KEY),
                "callback_url": str(ingest.make_url(CALLBACK_PATH)),
                "api_tokens": (Secret(TOKEN),),
                "poll_after_seconds": 2,
                "poll_interval_seconds": 1,
                "poll_max_interval_seconds": 4,
                "api_backoff_seconds": 0.05,
                "api_backoff_max_seconds": 0.5,
                "api_timeout_seconds": 5.0,
            }
            | tracker
        )
        http = aiohttp.ClientSession()
        sessions.append(http)
        stack = Stack(http, stacked, simulator, ingest)
        for n in range(replicas):
            app = create_tracker(stacked, registry=CollectorRegistry(), owner=f"replica-{n}")
            stack.trackers.append(await aiohttp_server(app))
        return stack

    yield make
    for http in sessions:  # aiohttp_server closes the servers; the sessions are ours
        await http.close()


def midi_of_record_info(record: dict[str, Any]) -> dict[str, Any]:
    """The callback body a task's record-info answer stands for (the simulator's
    ``midiData`` is the callback's ``data`` less its task id)."""
    data = record["data"]
    return {
        "code": 200,
        "msg": "success",
        "data": {"taskId": data["taskId"], **data["midiData"]},
    }
