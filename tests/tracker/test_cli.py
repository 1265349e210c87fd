"""``suno-tracker``'s operator commands on a real registry: list, show, resolve."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.tracker.registry import Registry, TaskState

pytestmark = pytest.mark.postgres

CALLBACK = "https://hooks.example/cb"


def tracker(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.tracker", *args],
        env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def unknown(registry: Registry, request_id: str) -> None:
    await registry.request(request_id, "sep-1", None, CALLBACK)
    await registry.claim_submission(request_id, "replica-a")
    await registry.submission_unknown(request_id, "timeout after sending")


class TestResolve:
    async def test_the_three_decisions(self, registry: Registry, database_url: str) -> None:
        """Linked to the task the provider made (polled at once), closed as failed, or
        reopened for the submitter; each request leaves the unknown list."""
        for request_id in ("r-link", "r-close", "r-again"):
            await unknown(registry, request_id)
        listed = tracker(database_url, "tasks", "--unknown")
        assert listed.returncode == 0, listed.stderr
        assert all(r in listed.stdout for r in ("r-link", "r-close", "r-again"))

        for args, said in (
            (("r-link", "--task-id", "t-found"), "linked to task t-found"),
            (("r-close", "--failed", "no such task at the provider"), "closed as failed"),
            (("r-again", "--resubmit"), "reopened"),
        ):
            done = tracker(database_url, "resolve", *args)
            assert done.returncode == 0 and said in done.stdout, done.stdout + done.stderr

        linked = await registry.get_by_request("r-link")
        assert linked is not None and linked.state is TaskState.SUBMITTED
        assert linked.task_id == "t-found" and linked.next_poll_at is not None
        closed = await registry.get_by_request("r-close")
        assert closed is not None and closed.state is TaskState.FAILED
        assert [t.request_id for t in await registry.claimable(10)] == ["r-again"]
        assert await registry.unknown_submissions() == []

    async def test_refusals_are_one_line(self, registry: Registry, database_url: str) -> None:
        """An unknown request, or one that is not waiting for a decision: a clear line,
        a non-zero exit, no traceback."""
        await registry.request("r-fresh", "sep-1", None, CALLBACK)
        missing = tracker(database_url, "resolve", "r-none", "--resubmit")
        assert missing.returncode == 4 and "no request 'r-none'" in missing.stderr
        fresh = tracker(database_url, "resolve", "r-fresh", "--resubmit")
        assert fresh.returncode == 2 and "never submitted" in fresh.stderr
        for result in (missing, fresh):
            assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
