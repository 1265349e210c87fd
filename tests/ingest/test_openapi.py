"""The running ingest against its OpenAPI 3.1 description, by property-based testing.

Schemathesis generates thousands of requests (valid and invalid per the description) and
checks every answer: no 5xx, a documented status, content type, headers and body schema.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from schemathesis import GenerationMode

from services.common.callback import find_task_id
from services.common.settings import Secret, Settings
from services.ingest.app import create_app
from services.ingest.verify import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.helpers import OPENAPI_CHECKS

from .conftest import KEY

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SPEC = Path(__file__).resolve().parents[2] / "services" / "ingest" / "openapi.yaml"
#: Mostly the generator's own content type; sometimes a wrong or unusual one.
CONTENT_TYPES = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.sampled_from(
        ["text/plain", "application/json; charset=latin-1", "application/json; charset=UTF-8"]
    ),
)
#: Examples per operation; the callback endpoint gets most of them.
CALLBACK_EXAMPLES = 2500
OPS_EXAMPLES = 60


@pytest.fixture(name="served")
def fixture_served(settings: Settings) -> Iterator[tuple[str, CollectorRegistry]]:
    """The ingest on a real port, in its own thread and event loop (requests is blocking)."""
    from aiohttp import web

    registry = CollectorRegistry()
    app = create_app(
        settings.with_overrides(
            ingest={
                "max_body_bytes": 64 * 1024,
                "max_json_depth": 8,
                "webhook_secrets": (Secret(KEY.decode()),),
            }
        ),
        registry=registry,
    )
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    started = threading.Event()
    address: list[str] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        address.append(f"http://{host}:{port}")

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="ingest-under-test", daemon=True)
    thread.start()
    if not started.wait(60):
        pytest.fail("the ingest did not start within 60 s")
    try:
        yield address[0], registry
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def test_service_conforms_to_its_description(served: tuple[str, CollectorRegistry]) -> None:
    """Thousands of generated requests: no 5xx and nothing outside the description."""
    base_url, registry = served
    schema = schemathesis.openapi.from_path(str(SPEC))
    session = requests.Session()
    sent: dict[str, int] = {}

    for result in schema.get_all_operations():
        operation = result.ok()
        budget = CALLBACK_EXAMPLES if operation.method == "post" else OPS_EXAMPLES
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @given(case=strategy, signed=st.booleans(), content_type=CONTENT_TYPES)
        @settings(
            max_examples=budget,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case, signed: bool, content_type: str | None) -> None:
            headers: dict[str, str] = {}
            task_id = find_task_id(case.body) if isinstance(case.body, dict) else None
            if signed and isinstance(task_id, str):
                # Signed as the provider would, so the generator also reaches dedupe/publish.
                now = int(time.time())
                headers = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(KEY, task_id, now)}
            if content_type is not None and case.operation.method == "post":
                headers["Content-Type"] = content_type
            response = case.call_and_validate(
                base_url=base_url, session=session, checks=OPENAPI_CHECKS, headers=headers
            )
            sent[str(response.status_code)] = sent.get(str(response.status_code), 0) + 1

        started = time.monotonic()
        check()
        print(f"{operation.label}: {time.monotonic() - started:.1f} s")

    total = sum(sent.values())
    print("statuses:", dict(sorted(sent.items())), "total:", total)
    assert total >= 1500
    assert not any(code.startswith("5") and code != "503" for code in sent)
    # The generator reached the deep path, not only the early refusals.
    accepted = registry.get_sample_value("ingest_requests_total", {"outcome": "accepted"})
    assert accepted is not None and accepted > 0
