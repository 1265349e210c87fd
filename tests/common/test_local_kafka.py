"""The project's own Kafka launcher: restarts keep their data, runs reuse their folder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devenv.kafka import LocalKafka

pytestmark = pytest.mark.slow


async def topics(bootstrap_servers: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def create(bootstrap_servers: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()


class TestLocalKafka:
    async def test_a_second_run_on_the_same_folder_keeps_its_topics(self, tmp_path: Path) -> None:
        """`make run` twice on ./data: the second broker starts and still has the topic."""
        first = LocalKafka(data_dir=tmp_path / "kafka")
        await asyncio.to_thread(first.start)
        try:
            await create(first.bootstrap_servers, "kept")
        finally:
            await asyncio.to_thread(first.stop)
        second = LocalKafka(data_dir=tmp_path / "kafka")
        await asyncio.to_thread(second.start)
        try:
            assert "kept" in await topics(second.bootstrap_servers)
            assert second.cluster_id == first.cluster_id
        finally:
            await asyncio.to_thread(second.stop)

    async def test_restart_after_kill_keeps_the_data(self) -> None:
        """kill() then restart(): same port, same data, no reformat."""
        broker = LocalKafka()
        await asyncio.to_thread(broker.start)
        try:
            await create(broker.bootstrap_servers, "survivor")
            await asyncio.to_thread(broker.kill)
            await asyncio.to_thread(broker.restart)
            assert "survivor" in await topics(broker.bootstrap_servers)
        finally:
            await asyncio.to_thread(broker.stop)
        assert not broker.workdir.exists(), "a broker's own temporary folder is removed"
