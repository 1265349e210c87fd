"""The task registry against real PostgreSQL: one task per request, forward-only states,
healed orphans, and leases that never give one task to two replicas."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp import web

from devenv.postgres import LocalPostgres
from services.common.errors import RegistryUnavailableError, UnknownTaskError
from services.tracker.registry import REGISTRY, Registry, TaskState, setup_registry

from .conftest import sha, unique

pytestmark = pytest.mark.postgres

CALLBACK = "https://ingest.example/callback"


def now() -> datetime:
    return datetime.now(UTC)


async def submitted_task(registry: Registry, *, poll_in: float = -1) -> str:
    """A task submitted to the provider, its first poll ``poll_in`` seconds from now."""
    request_id, task_id = unique("req"), unique("task")
    await registry.request(request_id, "sep-1", None, CALLBACK)
    assert await registry.claim_submission(request_id, "r1") is not None
    await registry.submitted(request_id, task_id, now() + timedelta(seconds=poll_in))
    return task_id


async def states(registry: Registry, pk: int) -> list[tuple[str | None, str]]:
    return [
        (t.from_state and t.from_state.value, t.to_state.value) for t in await registry.history(pk)
    ]


class TestTaskState:
    def test_terminal_states(self) -> None:
        """Four states end a task; requested and submitted do not."""
        assert {s.value for s in TaskState.TERMINAL} == {"completed", "failed", "empty", "expired"}


class TestRequest:
    async def test_a_request_is_recorded_once(self, registry: Registry) -> None:
        """The same request id twice: one row, the second call says it was not created."""
        first, created = await registry.request("r-1", "sep-1", "aud-1", CALLBACK)
        again, created_again = await registry.request("r-1", "sep-other", None, CALLBACK)
        assert (created, created_again) == (True, False)
        assert again == first
        assert first.state is TaskState.REQUESTED and first.origin == "tracker"
        assert (first.source_task_id, first.audio_id, first.task_id) == ("sep-1", "aud-1", None)
        assert first.requested_at is not None
        assert await states(registry, first.pk) == [(None, "requested")]
        assert len(await registry.list_tasks()) == 1

    async def test_concurrent_duplicates_make_one_row(self, registry: Registry) -> None:
        """Ten replicas handling the same request at once: exactly one creates it."""
        results = await asyncio.gather(
            *(registry.request("r-dup", "sep-1", None, CALLBACK) for _ in range(10))
        )
        assert sorted(created for _, created in results) == [False] * 9 + [True]
        assert len({task.pk for task, _ in results}) == 1


class TestSubmission:
    async def test_only_one_of_two_concurrent_claims_wins(self, registry: Registry) -> None:
        """The guarantee of one provider task per request: one claim, whoever is faster."""
        await registry.request("r-1", "sep-1", None, CALLBACK)
        claims = await asyncio.gather(
            registry.claim_submission("r-1", "replica-a"),
            registry.claim_submission("r-1", "replica-b"),
        )
        winners = [claim for claim in claims if claim is not None]
        assert len(winners) == 1
        assert winners[0].submit_owner in {"replica-a", "replica-b"}
        assert winners[0].submit_started_at is not None
        assert await registry.claim_submission("r-1", "replica-c") is None

    async def test_claimable_requests_oldest_first_never_the_claimed(
        self, registry: Registry
    ) -> None:
        """What the submitter reads: untried requests, oldest first; one claimed, of
        unknown outcome or released is left out or back in as it should be."""
        for n in range(4):
            await registry.request(f"r-{n}", "sep-1", None, CALLBACK)
        await registry.claim_submission("r-1", "a")
        await registry.claim_submission("r-2", "a")
        await registry.submission_unknown("r-2", "timeout after sending")
        await registry.claim_submission("r-3", "a")
        await registry.release_submission("r-3")
        assert [t.request_id for t in await registry.claimable(10)] == ["r-0", "r-3"]
        assert [t.request_id for t in await registry.claimable(1)] == ["r-0"]

    async def test_submitted_gives_the_intent_its_task(self, registry: Registry) -> None:
        """The provider's task id, state submitted, the first poll scheduled; idempotent."""
        await registry.request("r-1", "sep-1", None, CALLBACK)
        await registry.claim_submission("r-1", "a")
        first_poll = now() + timedelta(minutes=5)
        task = await registry.submitted("r-1", "t-1", first_poll)
        assert (task.task_id, task.state, task.next_poll_at) == ("t-1", "submitted", first_poll)
        assert await registry.submitted("r-1", "t-1", first_poll) == task

    async def test_a_first_poll_given_as_a_delay_runs_on_the_database_clock(
        self, registry: Registry
    ) -> None:
        """A delay is added to the database's now(), so replicas' skewed clocks agree."""
        await registry.request("r-1", "sep-1", None, CALLBACK)
        await registry.claim_submission("r-1", "a")
        task = await registry.submitted("r-1", "t-1", timedelta(minutes=5))
        assert task.submitted_at is not None and task.next_poll_at is not None
        assert task.next_poll_at - task.submitted_at == timedelta(minutes=5)
        assert await registry.get("t-1") == task
        assert await registry.get_by_request("r-1") == task
        assert await states(registry, task.pk) == [(None, "requested"), ("requested", "submitted")]

    async def test_a_released_intent_can_be_claimed_again(self, registry: Registry) -> None:
        """The provider certainly made no task: another attempt may start."""
        await registry.request("r-1", "sep-1", None, CALLBACK)
        await registry.claim_submission("r-1", "a")
        assert await registry.release_submission("r-1") is True
        claim = await registry.claim_submission("r-1", "b")
        assert claim is not None and claim.submit_owner == "b"

    async def test_a_rejected_intent_fails_for_good(self, registry: Registry) -> None:
        """A permanent provider error: failed, with its reason, never claimed again."""
        await registry.request("r-1", "sep-1", None, CALLBACK)
        await registry.claim_submission("r-1", "a")
        task = await registry.submission_rejected("r-1", "400: bad separation task")
        assert task.state is TaskState.FAILED and task.failed_at is not None
        assert (task.submit_outcome, task.submit_reason) == ("rejected", "400: bad separation task")
        assert await registry.release_submission("r-1") is False
        assert await registry.claim_submission("r-1", "b") is None
        assert (await states(registry, task.pk))[-1] == ("requested", "failed")

    async def test_unknown_outcomes_are_never_retried_and_are_listed(
        self, registry: Registry
    ) -> None:
        """Marked unknown, or started long ago and never resolved (a crash): both listed for
        an operator; neither can be claimed or released again."""
        for request_id in ("r-unknown", "r-crashed", "r-fresh", "r-idle"):
            await registry.request(request_id, "sep-1", None, CALLBACK)
        for request_id in ("r-unknown", "r-crashed", "r-fresh"):
            await registry.claim_submission(request_id, "a")
        task = await registry.submission_unknown("r-unknown", "timeout after sending")
        assert task.submit_outcome == "unknown"
        async with registry.pool.acquire() as conn:
            await conn.execute(
                "UPDATE tasks SET submit_started_at = now() - interval '1 hour'"
                " WHERE request_id = 'r-crashed'"
            )
        listed = await registry.unknown_submissions(timedelta(minutes=5))
        assert [t.request_id for t in listed] == ["r-crashed", "r-unknown"]
        assert await registry.release_submission("r-unknown") is False
        assert await registry.claim_submission("r-unknown", "b") is None

    async def test_an_unknown_request_is_an_error(self, registry: Registry) -> None:
        with pytest.raises(UnknownTaskError, match="r-none"):
            await registry.submitted("r-none", "t-1", now())


class TestDeliveries:
    async def test_an_unknown_task_becomes_an_external_one(self, registry: Registry) -> None:
        """A callback for a task requested elsewhere: tracked, once, however often it comes."""
        for _ in range(2):
            task = await registry.record_delivery(
                "t-ext", body_sha256=sha("a"), received_at=now(), verified=True, source="callback"
            )
        assert (task.origin, task.state, task.request_id) == ("external", "submitted", None)
        await registry.record_delivery(
            "t-ext", body_sha256=sha("a"), received_at=now(), verified=False, source="poll"
        )
        deliveries = await registry.deliveries(task.pk)
        assert [(d.source, d.body_sha256, d.verified) for d in deliveries] == [
            ("callback", sha("a"), True),
            ("poll", sha("a"), False),
        ]
        assert await states(registry, task.pk) == [(None, "submitted")]

    async def test_a_callback_naming_its_request_heals_the_orphan(self, registry: Registry) -> None:
        """The replica died between the provider's answer and its write: the callback,
        carrying the request id, links the provider's task to the intent."""
        await registry.request("r-1", "sep-1", None, CALLBACK)
        await registry.claim_submission("r-1", "a")
        await registry.submission_unknown("r-1", "crashed")
        task = await registry.record_delivery(
            "t-1",
            body_sha256=sha("a"),
            received_at=now(),
            verified=True,
            source="callback",
            request_id="r-1",
        )
        assert (task.request_id, task.task_id, task.origin) == ("r-1", "t-1", "tracker")
        assert task.state is TaskState.SUBMITTED
        history = await registry.history(task.pk)
        assert history[-1].reason == "healed by callback"
        assert len(await registry.list_tasks()) == 1
        assert len(await registry.deliveries(task.pk)) == 1
        # The submitting replica was only slow: its late write keeps the link and schedules
        # the poll that catches the task should its callback not end it.
        late = await registry.submitted("r-1", "t-1", timedelta(minutes=5))
        assert (late.pk, late.task_id) == (task.pk, "t-1")
        assert late.next_poll_at is not None

    async def test_an_external_row_is_folded_into_its_intent(self, registry: Registry) -> None:
        """The callback came (without the request id) before the provider's answer was
        written: submitted() adopts that row's deliveries and terminal state."""
        await registry.request("r-1", "sep-1", None, CALLBACK)
        await registry.claim_submission("r-1", "a")
        await registry.record_delivery(
            "t-1", body_sha256=sha("a"), received_at=now(), verified=True, source="callback"
        )
        assert await registry.transition("t-1", TaskState.COMPLETED, reason="callback")
        task = await registry.submitted("r-1", "t-1", now())
        assert (task.request_id, task.state, task.next_poll_at) == ("r-1", "completed", None)
        assert len(await registry.list_tasks()) == 1
        assert len(await registry.deliveries(task.pk)) == 1
        assert ("submitted", "completed") in await states(registry, task.pk)

    async def test_racing_the_provider_answer_with_its_callback(self, registry: Registry) -> None:
        """The answer's write and the callback (naming its request) in either order, at
        once, for many requests: one row each, linked, no deadlock, no error."""

        async def race(n: int) -> None:
            request_id, task_id = f"r-{n}", f"t-{n}"
            await registry.request(request_id, "sep-1", None, CALLBACK)
            await registry.claim_submission(request_id, "a")
            deliver = registry.record_delivery(
                task_id,
                body_sha256=sha(task_id),
                received_at=now(),
                verified=True,
                source="callback",
                request_id=request_id if n % 2 else None,
            )
            answer = registry.submitted(request_id, task_id, now())
            await asyncio.gather(*((deliver, answer) if n % 3 else (answer, deliver)))

        await asyncio.gather(*(race(n) for n in range(24)))
        tasks = await registry.list_tasks()
        assert len(tasks) == 24
        assert {(t.request_id, t.task_id, t.state) for t in tasks} == {
            (f"r-{n}", f"t-{n}", TaskState.SUBMITTED) for n in range(24)
        }
        for task in tasks:
            assert len(await registry.deliveries(task.pk)) == 1

    async def test_two_replicas_seeing_one_new_task_make_one_row(
        self, registry: Registry, database_url: str
    ) -> None:
        """The same external task's callback and poll on two replicas at once."""
        other = await Registry.connect(database_url)
        try:
            await asyncio.gather(
                *(
                    replica.record_delivery(
                        "t-ext",
                        body_sha256=sha("a"),
                        received_at=now(),
                        verified=True,
                        source=source,
                    )
                    for replica in (registry, other)
                    for source in ("callback", "poll")
                )
            )
        finally:
            await other.close()
        (task,) = await registry.list_tasks()
        assert task.task_id == "t-ext" and len(await registry.deliveries(task.pk)) == 2
        assert await states(registry, task.pk) == [(None, "submitted")]


class TestTransitions:
    async def test_states_only_move_forward(self, registry: Registry) -> None:
        """Submitted -> completed moves; back to submitted, or to failed after, does not."""
        task_id = await submitted_task(registry)
        at = now() - timedelta(seconds=30)
        assert await registry.transition(task_id, TaskState.COMPLETED, reason="cb", at=at)
        assert not await registry.transition(task_id, TaskState.SUBMITTED)
        assert not await registry.transition(task_id, TaskState.FAILED)
        assert not await registry.transition(task_id, TaskState.EXPIRED)
        task = await registry.get(task_id)
        assert task is not None
        assert (task.state, task.completed_at, task.next_poll_at) == ("completed", at, None)
        history = await registry.history(task.pk)
        assert (history[-1].to_state, history[-1].at, history[-1].reason) == (
            "completed",
            at,
            "cb",
        )

    async def test_a_late_result_replaces_expired(self, registry: Registry) -> None:
        """Expired is final only until a result shows up after all."""
        task_id = await submitted_task(registry)
        assert await registry.transition(task_id, TaskState.EXPIRED)
        assert await registry.transition(task_id, TaskState.EMPTY, reason="late poll")
        assert not await registry.transition(task_id, TaskState.COMPLETED)
        task = await registry.get(task_id)
        assert task is not None and task.state is TaskState.EMPTY

    async def test_an_unknown_task_is_an_error(self, registry: Registry) -> None:
        with pytest.raises(UnknownTaskError, match="t-none"):
            await registry.transition("t-none", TaskState.COMPLETED)


class TestPolling:
    async def test_only_due_tasks_are_leased(self, registry: Registry) -> None:
        """Not yet due, terminal, or leased by another: none of these is handed out."""
        due = await submitted_task(registry)
        await submitted_task(registry, poll_in=3600)
        done = await submitted_task(registry)
        await registry.transition(done, TaskState.COMPLETED)
        leased = await registry.lease_due_polls("a", limit=10, lease_seconds=60)
        assert [t.task_id for t in leased] == [due]
        assert leased[0].lease_owner == "a" and leased[0].lease_until is not None
        assert await registry.lease_due_polls("b", limit=10, lease_seconds=60) == []

    async def test_two_replicas_never_lease_the_same_task(
        self, registry: Registry, database_url: str
    ) -> None:
        """Two pools (two replicas) leasing at once get disjoint sets that cover all."""
        task_ids = {await submitted_task(registry) for _ in range(40)}
        other = await Registry.connect(database_url)
        try:
            rounds = await asyncio.gather(
                *(
                    replica.lease_due_polls(name, limit=7, lease_seconds=60)
                    for _ in range(4)
                    for name, replica in (("a", registry), ("b", other))
                )
            )
        finally:
            await other.close()
        leased = [task.task_id for batch in rounds for task in batch]
        assert len(leased) == len(set(leased)) == len(task_ids)
        assert set(leased) == task_ids

    async def test_a_lapsed_lease_is_taken_over(self, registry: Registry) -> None:
        """A replica that died holding a lease delays the task by the lease only."""
        task_id = await submitted_task(registry)
        assert len(await registry.lease_due_polls("dead", limit=1, lease_seconds=0.01)) == 1
        await asyncio.sleep(0.05)
        leased = await registry.lease_due_polls("alive", limit=1, lease_seconds=60)
        assert [t.task_id for t in leased] == [task_id]
        assert not await registry.poll_done(task_id, "dead", outcome="pending", next_poll_at=now())

    async def test_poll_done_records_and_reschedules(self, registry: Registry) -> None:
        """The poll is kept, the lease released, the next poll set (or none once ended)."""
        task_id = await submitted_task(registry)
        await registry.lease_due_polls("a", limit=1, lease_seconds=60)
        later = now() + timedelta(seconds=30)
        assert await registry.poll_done(
            task_id, "a", outcome="pending", detail="successFlag 0", next_poll_at=later
        )
        task = await registry.get(task_id)
        assert task is not None
        assert (task.poll_count, task.next_poll_at, task.lease_owner) == (1, later, None)
        assert task.last_polled_at is not None
        polls = await registry.polls(task.pk)
        assert [(p.owner, p.outcome, p.detail) for p in polls] == [
            ("a", "pending", "successFlag 0")
        ]
        assert await registry.lease_due_polls("a", limit=1, lease_seconds=60) == []
        async with registry.pool.acquire() as conn:
            await conn.execute("UPDATE tasks SET next_poll_at = now() WHERE task_id = $1", task_id)
        await registry.lease_due_polls("a", limit=1, lease_seconds=60)
        assert await registry.poll_done(
            task_id, "a", outcome="pending", next_poll_at=timedelta(seconds=45)
        )
        task = await registry.get(task_id)
        assert task is not None and task.next_poll_at is not None
        assert task.last_polled_at is not None
        assert task.next_poll_at - task.last_polled_at == timedelta(seconds=45)


class TestExpiryAndMetrics:
    async def test_old_tasks_expire_and_are_counted(self, registry: Registry) -> None:
        """Past retention: expired; within the warning: at risk; the oldest open age."""
        old, risky, fresh = [await submitted_task(registry) for _ in range(3)]
        async with registry.pool.acquire() as conn:
            for task_id, age in ((old, "15 days"), (risky, "12 days")):
                await conn.execute(
                    "UPDATE tasks SET submitted_at = now() - $2::interval,"
                    " created_at = now() - $2::interval WHERE task_id = $1",
                    task_id,
                    timedelta(days=int(age.split()[0])),
                )
        retention, warning = timedelta(days=14), timedelta(days=3)
        assert await registry.at_risk(retention, warning) == 2
        expired = await registry.expire_due(retention)
        assert [t.task_id for t in expired] == [old]
        assert expired[0].state is TaskState.EXPIRED and expired[0].expired_at is not None
        assert await registry.at_risk(retention, warning) == 1
        counts = await registry.counts_by_state()
        assert counts[TaskState.EXPIRED] == 1 and counts[TaskState.SUBMITTED] == 2
        assert counts[TaskState.FAILED] == 0
        age = await registry.oldest_open_age()
        assert age is not None and age >= timedelta(days=12).total_seconds()
        assert (await registry.get(fresh)) is not None
        assert [t.task_id for t in await registry.list_tasks(TaskState.EXPIRED)] == [old]

    async def test_no_open_task_has_no_age(self, registry: Registry) -> None:
        assert await registry.oldest_open_age() is None
        assert await registry.list_tasks() == []


class TestUnavailable:
    async def test_a_database_that_is_gone_is_a_retryable_error(self) -> None:
        """Nothing listening: the caller gets our Transient error, not asyncpg's."""
        with pytest.raises(RegistryUnavailableError, match="could not connect"):
            await Registry.connect("postgresql://postgres@127.0.0.1:1/none")

    @pytest.mark.slow
    async def test_a_crashed_server_is_retryable_and_its_return_is_seen(self) -> None:
        """Killed mid-life: calls fail with our retryable error; once it is back the
        same registry works again, with what was committed before the crash."""
        server = await asyncio.to_thread(LocalPostgres(fast=False).start)
        try:
            registry = await Registry.connect(server.url)
            try:
                await registry.request("r-1", "sep-1", None, CALLBACK)
                await asyncio.to_thread(server.kill)
                with pytest.raises(RegistryUnavailableError):
                    await registry.get_by_request("r-1")
                await asyncio.to_thread(server.start)
                task = await registry.get_by_request("r-1")
                assert task is not None and task.state is TaskState.REQUESTED
            finally:
                await registry.close()
        finally:
            await asyncio.to_thread(server.stop)


class TestSetup:
    async def test_the_app_opens_and_closes_the_registry(self, database_url: str) -> None:
        """setup_registry: a migrated registry under REGISTRY while the app runs."""
        app = web.Application()
        setup_registry(app, database_url)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            registry = app[REGISTRY]
            assert await registry.counts_by_state() == dict.fromkeys(TaskState, 0)
        finally:
            await runner.cleanup()
        with pytest.raises(RegistryUnavailableError):
            await registry.counts_by_state()


def test_asyncpg_is_real() -> None:
    """The tests talk to the real driver (no stand-in): a guard against a future shim."""
    assert asyncpg.__name__ == "asyncpg"
