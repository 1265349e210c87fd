"""The console's actions: who may act (operators, read-only), from where (same origin,
JSON only), and the replay itself against the session's real Kafka broker."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from structlog.testing import capture_logs

from services.archiver.archive import archive_event
from services.archiver.replay import REPLAY_HEADER
from services.common.errors import ConfigError
from services.common.events import CallbackEvent
from services.common.settings import ConsoleSettings, Secret, Settings
from services.console.auth import Operators
from tests.helpers import read_topic

from .conftest import (
    PASSWORD,
    TOKEN,
    USER,
    Console,
    callback_event,
    console_settings,
    operators,
    running_console,
    unique,
)

pytestmark = [pytest.mark.postgres]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def post(
    console: Console,
    task: str,
    *,
    auth: str | None = f"Bearer {TOKEN}",
    origin: str | None = "",
    headers: dict[str, str] | None = None,
    body: bytes = b"{}",
    content_type: str = "application/json",
) -> requests.Response:
    """A replay request as the console's page sends it (its own Origin) unless told."""
    sent = {"Content-Type": content_type, **(headers or {})}
    if auth is not None:
        sent["Authorization"] = auth
    if origin is not None:
        sent["Origin"] = origin or console.url
    return requests.post(
        f"{console.url}/api/v1/tasks/{task}/replay", data=body, headers=sent, timeout=30
    )


SPEC = Path(__file__).resolve().parents[2] / "services" / "console" / "openapi.yaml"


def error(response: requests.Response) -> str:
    """The error code of an action's answer, which must be one the description documents."""
    schema = schemathesis.openapi.from_path(str(SPEC))
    schema["/api/v1/tasks/{id}/replay"]["POST"].validate_response(response)
    code: str = response.json()["error"]["code"]
    return code


class TestRefusals:
    def test_no_credentials_is_401_with_a_basic_challenge(self, guarded: Console) -> None:
        """Without credentials: 401, and the browser is asked for basic credentials."""
        response = post(guarded, "any-task", auth=None)
        assert response.status_code == 401
        assert error(response) == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith('Basic realm="suno console"')
        assert "Bearer" in response.json()["error"]["message"]

    @pytest.mark.parametrize(
        "auth",
        [
            f"Bearer {TOKEN}x",
            "Bearer ",
            basic(USER, "wrong"),
            basic("someone", PASSWORD),
            "Basic not-base64!",
            TOKEN,
        ],
    )
    def test_wrong_credentials_are_401(self, guarded: Console, auth: str) -> None:
        """A wrong token or password, or a malformed header, is no operator."""
        assert post(guarded, "any-task", auth=auth).status_code == 401

    @pytest.mark.parametrize("auth", [f"Bearer {TOKEN}", basic(USER, PASSWORD)])
    def test_an_operator_reaches_the_action(self, guarded: Console, auth: str) -> None:
        """With a right token or password the action runs: here, an unknown task's 404."""
        response = post(guarded, "no-such-task", auth=auth)
        assert (response.status_code, error(response)) == (404, "not_found")

    @pytest.mark.parametrize(
        "headers",
        [
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ],
    )
    def test_cross_site_is_403(self, guarded: Console, headers: dict[str, str]) -> None:
        """Another origin is refused even with a right token."""
        response = post(guarded, "no-such-task", origin=None, headers=headers)
        assert (response.status_code, error(response)) == (403, "cross_site")

    def test_no_origin_at_all_is_403(self, guarded: Console) -> None:
        """A request that says nothing of where it comes from is refused too."""
        response = post(guarded, "no-such-task", origin=None)
        assert (response.status_code, error(response)) == (403, "cross_site")

    def test_same_origin_by_fetch_metadata(self, guarded: Console) -> None:
        """Sec-Fetch-Site: same-origin is enough (a TLS proxy may change the scheme)."""
        response = post(
            guarded, "no-such-task", origin=None, headers={"Sec-Fetch-Site": "same-origin"}
        )
        assert response.status_code == 404

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
    def test_non_json_is_415(self, guarded: Console, content_type: str) -> None:
        """The bodies a cross-site form can send without a preflight are refused."""
        response = post(guarded, "no-such-task", content_type=content_type)
        assert (response.status_code, error(response)) == (415, "unsupported_media_type")

    @pytest.mark.parametrize("body", [b"[]", b"not json", b"1"])
    def test_a_body_that_is_no_object_is_400(self, guarded: Console, body: bytes) -> None:
        response = post(guarded, "no-such-task", body=body)
        assert (response.status_code, error(response)) == (400, "invalid_body")

    def test_get_is_405(self, guarded: Console) -> None:
        response = requests.get(f"{guarded.url}/api/v1/tasks/x/replay", timeout=30)
        assert response.status_code == 405

    def test_a_task_without_body_is_404(self, guarded: Console) -> None:
        """A task only requested has nothing archived to replay."""
        request_id = unique("req")
        guarded.run(guarded.registry.request(request_id, "source", None, "http://x/cb"))
        response = post(guarded, request_id)
        assert (response.status_code, error(response)) == (404, "no_body")

    def test_the_operator_is_logged_never_the_secret(self, guarded: Console) -> None:
        """A token's operator is logged by its place in the list."""
        with capture_logs() as logs:
            assert post(guarded, "no-such-task").status_code == 404
        actions = [entry for entry in logs if entry["event"] == "console_action"]
        assert [(a["operator"], a["status"]) for a in actions] == [("token-1", 404)]
        assert all(TOKEN not in repr(entry) for entry in logs)

    def test_the_console_says_actions_are_on(self, guarded: Console) -> None:
        document = requests.get(f"{guarded.url}/api/v1/console", timeout=30).json()
        assert document == {"read_only": False, "actions": True}


def test_none_configured_is_403(console: Console) -> None:
    """Without any operator configured every action is off, and the answer says how to
    turn them on."""
    response = post(console, "any-task")
    assert (response.status_code, error(response)) == (403, "actions_disabled")
    assert "CONSOLE_OPERATOR_TOKENS" in response.json()["error"]["message"]
    document = requests.get(f"{console.url}/api/v1/console", timeout=30).json()
    assert document == {"read_only": False, "actions": False}


def test_read_only_is_403(database_url: str, tmp_path: Path) -> None:
    """A read-only console refuses actions even to an operator; reads still work."""
    settings = console_settings(database_url, tmp_path / "data", **operators(read_only=True))
    with running_console(settings) as console:
        response = post(console, "any-task")
        assert (response.status_code, error(response)) == (403, "read_only")
        document = requests.get(f"{console.url}/api/v1/console", timeout=30).json()
        assert document == {"read_only": True, "actions": False}
        assert requests.get(f"{console.url}/api/v1/tasks", timeout=30).status_code == 200


class TestTrustedIdentityHeader:
    @pytest.fixture(name="proxied")
    def fixture_proxied(self, database_url: str, tmp_path: Path) -> Iterator[Console]:
        settings = console_settings(
            database_url, tmp_path / "data", trusted_identity_header="X-Forwarded-User"
        )
        with running_console(settings) as console:
            yield console

    def test_the_header_names_the_operator(self, proxied: Console) -> None:
        response = post(proxied, "no-such-task", auth=None, headers={"X-Forwarded-User": "ada"})
        assert response.status_code == 404

    def test_without_the_header_is_401(self, proxied: Console) -> None:
        assert post(proxied, "no-such-task", auth=None).status_code == 401

    def test_a_cross_site_request_is_refused_though_the_proxy_vouches(
        self, proxied: Console
    ) -> None:
        """The proxy adds the header to every request, a forged one from another site's
        page too: only the origin check stops it."""
        for headers in (
            {"X-Forwarded-User": "ada", "Origin": "http://evil.example"},
            {"X-Forwarded-User": "ada", "Sec-Fetch-Site": "cross-site"},
        ):
            response = post(proxied, "no-such-task", auth=None, origin=None, headers=headers)
            assert (response.status_code, error(response)) == (403, "cross_site")
        response = post(
            proxied,
            "no-such-task",
            auth=None,
            content_type="text/plain",
            headers={"X-Forwarded-User": "ada"},
        )
        assert response.status_code == 415


def kafka_console_settings(settings: Settings, database_url: str, **console: Any) -> Settings:
    """The session broker's settings (and topics) for a console that accepts TOKEN."""
    base = console_settings(database_url, settings.storage.data_dir, **operators(**console))
    return base.with_overrides(kafka=settings.kafka)


async def replay_request(console: Console, task: str, auth: str) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": auth, "Origin": console.url}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{console.url}/api/v1/tasks/{task}/replay", json={}, headers=headers) as r,
    ):
        return r.status, await r.json()


@pytest.mark.kafka
async def test_replay_publishes_the_archived_bodies(
    operator_console: Console, settings: Settings, publisher: object
) -> None:
    """Both archived bodies of a task go back onto the callbacks topic byte for byte, oldest
    first, as replays; the action is logged with the operator, never the secret."""
    task_id = unique("replayed")
    first = operator_console.completed_task(task_id=task_id)
    later = first.body.replace(b"}", b', "later": true}', 1)
    a_minute_later = datetime.now(UTC) + timedelta(minutes=1)
    event = callback_event(task_id, later, a_minute_later, first.request_id)
    operator_console.run(archive_event(operator_console.storage, event))
    with capture_logs() as logs:
        status, document = await replay_request(operator_console, task_id, basic(USER, PASSWORD))
    assert status == 202
    later_sha = hashlib.sha256(later).hexdigest()
    assert document == {"replayed": 2, "bodies": [first.body_sha256, later_sha]}

    records = await read_topic(settings.kafka.bootstrap_servers, settings.kafka.topics.callbacks, 2)
    assert [record.key for record in records] == [task_id.encode()] * 2
    assert all(REPLAY_HEADER in list(record.headers) for record in records)
    events = [CallbackEvent.decode(record.value) for record in records]
    assert [event.body for event in events] == [first.body, later]
    assert all(event.replay for event in events)
    assert [event.body_sha256 for event in events] == document["bodies"]
    actions = [entry for entry in logs if entry["event"] == "console_action"]
    assert [(a["operator"], a["status"]) for a in actions] == [(USER, 202)]
    assert all(PASSWORD not in repr(entry) and TOKEN not in repr(entry) for entry in logs)


@pytest.mark.kafka
def test_kafka_away_is_503_and_pages_still_work(settings: Settings, database_url: str) -> None:
    """Without a broker the console starts, is ready, serves pages; a replay is a 503."""
    away = settings.with_overrides(kafka={"bootstrap_servers": "127.0.0.1:1"})
    with running_console(kafka_console_settings(away, database_url)) as console:
        created = console.completed_task()
        assert requests.get(f"{console.url}/readyz", timeout=30).status_code == 200
        page = requests.get(f"{console.url}/tasks/{created.task_id}", timeout=30)
        assert page.status_code == 200
        response = post(console, created.task_id)
        assert (response.status_code, error(response)) == (503, "kafka_unavailable")
        assert response.headers["Retry-After"]


@pytest.mark.parametrize("credential", ["no-colon", ":password", "user:"])
def test_a_credential_that_is_no_pair_is_refused_at_start(credential: str) -> None:
    with pytest.raises(ConfigError, match="user:password"):
        Operators.from_settings(ConsoleSettings(operator_credentials=(Secret(credential),)))
