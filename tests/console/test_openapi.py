"""The running console against its OpenAPI 3.1 description, by property-based testing.

Schemathesis generates requests (valid and invalid per the description) for every route
and checks every answer: no 5xx, a documented status, content type, headers (the security
headers included) and body schema. The registry holds real tasks made through the real
``Registry`` and a storage written by the archiver's and the processor's own code; the
generated ``{id}`` is often one of theirs, so the deep paths are reached, not only 404s.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from services.common.replays import ReplayMark
from services.console.deadletters import index_handler
from services.tracker.registry import Rendering
from tests.helpers import OPENAPI_CHECKS

from .conftest import Console, CreatedTask, dead_letter_record, simulated_body, unique

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SPEC = Path(__file__).resolve().parents[2] / "services" / "console" / "openapi.yaml"
#: Examples per operation.
EXAMPLES = 150


def known_ids(console: Console) -> list[str]:
    """Tasks in several shapes: rich notes (and a dead letter), a failure, a request
    only, an odd task id."""
    rich = unique("rich")
    made = [
        console.completed_task(task_id=rich, body=simulated_body(rich)),
        console.completed_task(task_id="odd/id:1"),
    ]
    failed_id = unique("failed")
    failed = json.dumps({"code": 501, "msg": "failed", "data": {"taskId": failed_id}})
    made.append(console.completed_task(task_id=failed_id, body=failed.encode()))
    requested = unique("req")
    console.run(console.registry.request(requested, "source", None, "http://x/cb"))
    console.run(index_handler(console.registry)(dead_letter_record(rich.encode())))
    replay_twice(console, made[0])
    return [requested, *(t.task_id for t in made), *(t.request_id for t in made)]


def replay_twice(console: Console, created: CreatedTask) -> None:
    """An operator's replay, rendered, and one from the CLI not rendered yet."""
    registry, sha = console.registry, created.body_sha256
    task = console.run(registry.get(created.task_id))
    assert task is not None
    now = datetime.now(UTC)
    console.run(registry.record_replay(task.pk, sha, ReplayMark("console", "ada"), now))
    console.run(registry.replay_rendered(created.task_id, Rendering(sha, now, "complete", 9, True)))
    console.run(registry.record_replay(task.pk, sha, ReplayMark("cli"), now))


def test_service_conforms_to_its_description(console: Console) -> None:
    """Generated requests on every route: nothing outside the description, no 5xx."""
    ids = known_ids(console)
    schema = schemathesis.openapi.from_path(str(SPEC))
    session = requests.Session()
    statuses: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 18

    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @given(case=strategy, known=st.sampled_from([None, *ids]))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case, known: str | None) -> None:
            if known is not None and case.path_parameters:
                if "id" in case.path_parameters:
                    case.path_parameters["id"] = known
                if "path" in case.path_parameters:
                    case.path_parameters["path"] = "index.html"
            response = case.call_and_validate(
                base_url=console.url, session=session, checks=OPENAPI_CHECKS
            )
            key = f"{case.operation.label} {response.status_code}"
            statuses[key] = statuses.get(key, 0) + 1

        started = time.monotonic()
        check()
        print(f"{operation.label}: {time.monotonic() - started:.1f} s")

    print("statuses:", json.dumps(dict(sorted(statuses.items())), indent=1))
    # The generator reached the deep paths, not only the refusals.
    for route in ("tasks/{id}", "tasks/{id}/notes", "tasks/{id}/midi", "tasks/{id}/raw"):
        assert statuses.get(f"GET /api/v1/{route} 200", 0) > 0, route
    assert statuses.get("GET /api/v1/tasks 200", 0) > 0
    assert statuses.get("GET /api/v1/tasks 400", 0) > 0
    assert statuses.get("GET /static/{path} 200", 0) > 0


def test_real_answers_conform(console: Console) -> None:
    """The answers for real tasks, every route once, each valid per the description."""
    ids = known_ids(console)
    schema = schemathesis.openapi.from_path(str(SPEC))
    first = requests.get(f"{console.url}/api/v1/tasks", params={"limit": 2}, timeout=30)
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    paths = [
        ("/api/v1/tasks", "/api/v1/tasks", {"limit": 2, "cursor": cursor}),
        ("/api/v1/tasks", "/api/v1/tasks", {"q": "odd/"}),
        ("/api/v1/counts", "/api/v1/counts", {}),
        ("/", "/", {}),
        ("/static/{path}", "/static/index.html", {}),
        ("/readyz", "/readyz", {}),
    ]
    for task in ids:
        encoded = quote(task, safe="")
        for suffix in ("", "/notes", "/midi", "/raw"):
            route = f"/api/v1/tasks/{{id}}{suffix}"
            paths.append((route, f"/api/v1/tasks/{encoded}{suffix}", {}))
        paths.append(("/tasks/{id}", f"/tasks/{encoded}", {}))
    ok = 0
    for route, path, params in paths:
        response = requests.get(console.url + path, params=params, timeout=30)
        schema[route]["GET"].validate_response(response)
        ok += response.status_code == 200
    assert ok >= len(paths) - 8  # the request-only task has no notes, file nor body
