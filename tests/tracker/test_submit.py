"""Writing the provider's answer: a registry outage at that moment is waited out, because
the new task's id exists nowhere else yet."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.common.errors import RegistryUnavailableError
from services.tracker import submit
from services.tracker.registry import Registry, Task, TaskState

from .conftest import unique

pytestmark = pytest.mark.postgres


class _FlakyRegistry(Registry):
    """The real registry, whose first ``failures`` writes of an answer find PostgreSQL away."""

    failures = 2
    calls = 0

    async def submitted(self, request_id: str, task_id: str, first_poll_at: object) -> Task:  # type: ignore[override]
        self.calls += 1
        if self.calls <= self.failures:
            raise RegistryUnavailableError("the task registry could not record: connection lost")
        return await super().submitted(request_id, task_id, first_poll_at)  # type: ignore[arg-type]


class TestRecordAnswer:
    async def test_an_outage_while_writing_the_answer_is_waited_out(
        self, registry: Registry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two failed writes, then the task is submitted with the provider's id, not left
        as an intent of unknown outcome."""
        monkeypatch.setattr(submit, "_WRITE_RETRY_SECONDS", (0.01, 0.02))
        flaky = _FlakyRegistry(registry.pool)
        request_id, task_id = unique("req"), unique("task")
        await flaky.request(request_id, "sep-1", None, "https://ingest.example/cb")
        assert await flaky.claim_submission(request_id, "r1") is not None

        task = await submit._record_answer(flaky, request_id, task_id, timedelta(seconds=60))

        assert flaky.calls == 3
        assert (task.state, task.task_id) == (TaskState.SUBMITTED, task_id)
        assert await flaky.unknown_submissions(timedelta(0)) == []
