"""Simulator test helpers: a simulator and a callback receiver on real local ports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from devenv.simulator import GENERATE_PATH, RECORD_INFO_PATH, SimConfig, create_app

from ..helpers import eventually

API_KEY = "test-api-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

SimClient = TestClient[web.Request, web.Application]
SimFactory = Callable[..., Awaitable[SimClient]]


@pytest.fixture(name="sim")
def fixture_sim(aiohttp_client: Any) -> SimFactory:
    """Build a simulator from ``SimConfig`` fields (tasks end at once) and a client for it;
    ``clock`` is its wall clock."""

    async def make(clock: Callable[[], float] = time.time, **config: Any) -> SimClient:
        defaults: dict[str, Any] = {
            "api_key": API_KEY,
            "completion_seconds": 0.0,
            "callback_retry_seconds": 0.0,
            "duplicate_gap_seconds": 0.0,
            "rate_limit_requests": 10_000,
        }
        client: SimClient = await aiohttp_client(
            create_app(SimConfig(**defaults | config), clock=clock)
        )
        return client

    return make


@dataclass
class Receiver:
    """A callback receiver answering ``status``; it keeps what it was sent."""

    server: TestServer
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    def url(self, path_qs: str = "/callback") -> str:
        return str(self.server.make_url("")).rstrip("/") + path_qs


@pytest.fixture(name="receiver")
def fixture_receiver(aiohttp_server: Any) -> Callable[..., Awaitable[Receiver]]:
    async def make(status: int = 200, delay: float = 0.0) -> Receiver:
        holder: list[Receiver] = []

        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            holder[0].received.append((request.path_qs, dict(request.headers), body))
            if delay:
                await asyncio.sleep(delay)
            return web.json_response({"status": "received"}, status=status)

        app = web.Application()
        app.router.add_post("/{tail:.*}", receive)
        holder.append(Receiver(await aiohttp_server(app)))
        return holder[0]

    return make


async def submit(
    client: SimClient, source: str, callback_url: str, audio_id: str | None = None
) -> str:
    """Generate a task for ``source``; its new task id."""
    body = {"taskId": source, "callBackUrl": callback_url}
    if audio_id is not None:
        body["audioId"] = audio_id
    response = await client.post(GENERATE_PATH, json=body, headers=AUTH)
    answer = await response.json()
    assert response.status == 200 and answer["code"] == 200, answer
    return answer["data"]["taskId"]  # type: ignore[no-any-return]


async def script(client: SimClient, source: str, **fate: Any) -> None:
    """Script the fate of the tasks generated from ``source`` (the control API's fields)."""
    response = await client.put(f"/_sim/scripts/{source}", json=fate)
    assert response.status == 200, await response.text()


async def settled(client: SimClient, task_id: str, attempts: int) -> dict[str, Any]:
    """The task once it is complete with at least ``attempts`` callback attempts."""

    async def probe() -> dict[str, Any] | None:
        task: dict[str, Any] = await (await client.get(f"/_sim/tasks/{task_id}")).json()
        done = task["state"] == "complete" and len(task["attempts"]) >= attempts
        return task if done else None

    return await eventually(probe, timeout=20, what=f"task {task_id} to settle")


async def record_info(client: SimClient, task_id: str) -> dict[str, Any]:
    response = await client.get(RECORD_INFO_PATH, params={"taskId": task_id}, headers=AUTH)
    assert response.status == 200
    return await response.json()  # type: ignore[no-any-return]
