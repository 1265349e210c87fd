"""``make run`` signs locally: a key generated once under DATA_DIR, used by the ingest it
starts and by ``make send-example``."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from devenv import send_example
from devenv.local_key import KEY_FILE, ensure_local_key, read_local_key
from devenv.pipeline import _signing
from services.common.settings import Secret, Settings
from services.ingest.app import CALLBACK_PATH, create_app


class TestLocalKey:
    def test_generated_once_and_kept_private(self, tmp_path: Path) -> None:
        """The first run writes it (owner-only); later runs and readers get the same key."""
        assert read_local_key(tmp_path) is None
        key = ensure_local_key(tmp_path / "data")
        assert len(key) >= 40
        assert ensure_local_key(tmp_path / "data") == key == read_local_key(tmp_path / "data")
        mode = stat.S_IMODE((tmp_path / "data" / KEY_FILE).stat().st_mode)
        assert mode == 0o600
        assert [p.name for p in (tmp_path / "data").iterdir()] == [KEY_FILE]

    def test_the_runner_gives_the_ingest_the_local_key(self, tmp_path: Path) -> None:
        """No key and no opt-in: the services get the local key, and the runner says so."""
        env: dict[str, str] = {"SUNO_WEBHOOK_SECRETS": " , "}
        said = _signing(env, tmp_path, allow_unsigned=False)
        assert env["SUNO_WEBHOOK_SECRETS"] == read_local_key(tmp_path)
        assert str(tmp_path / KEY_FILE) in said

    def test_a_configured_key_is_left_alone(self, tmp_path: Path) -> None:
        env = {"SUNO_WEBHOOK_SECRETS": "mine"}
        _signing(env, tmp_path, allow_unsigned=False)
        assert env == {"SUNO_WEBHOOK_SECRETS": "mine"}
        assert read_local_key(tmp_path) is None

    def test_the_opt_in_lets_the_processor_take_unverified_events(self, tmp_path: Path) -> None:
        """Unsigned by choice: no key is made, and the processor is told to accept them."""
        env: dict[str, str] = {}
        said = _signing(env, tmp_path, allow_unsigned=True)
        assert env == {"PROCESSOR_REQUIRE_VERIFIED": "false"}
        assert "INGEST_ALLOW_UNSIGNED=true" in said


@pytest.mark.kafka
async def test_send_example_signs_with_the_local_key(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ingest that requires the local key accepts what send-example sends; without the
    key file, the same send is refused 401 (the signature is what made the difference)."""
    data_dir = tmp_path / "local"
    key = ensure_local_key(data_dir)
    strict = settings.with_overrides(
        ingest={"webhook_secrets": (Secret(key),), "allow_unsigned": False}
    )
    server = TestServer(create_app(strict, registry=CollectorRegistry()), host="127.0.0.1")
    await server.start_server()
    monkeypatch.delenv("SUNO_WEBHOOK_SECRETS", raising=False)
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    argv = ["--url", str(server.make_url(CALLBACK_PATH)), "--task-id", "local-signed"]
    try:
        await asyncio.to_thread(send_example.main, argv)  # exits non-zero unless 200
        (data_dir / KEY_FILE).unlink()
        with pytest.raises(SystemExit) as refused:
            await asyncio.to_thread(send_example.main, argv)
        assert refused.value.code == 1
    finally:
        await server.close()
