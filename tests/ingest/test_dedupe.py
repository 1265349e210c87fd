"""The dedupe stores behind one interface: the in-process one and a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from devenv.redis import LocalRedis, LocalRedisCluster, LocalRedisSentinel
from services.ingest.dedupe import (
    _CLAIM_SHA1,
    Claim,
    DedupeStore,
    DedupeUnavailable,
    Delivery,
    MemoryDedupeStore,
    RedisDedupeStore,
    binding_ttl,
)

from ..fixtures.redis import TOPOLOGIES, topology


@pytest.fixture(name="store", params=["memory", *TOPOLOGIES])
async def fixture_store(request: pytest.FixtureRequest) -> AsyncIterator[DedupeStore]:
    """Each test runs in process and on each Redis topology."""
    store: DedupeStore
    if request.param == "memory":
        store = MemoryDedupeStore(window_seconds=60, binding_seconds=660)
    else:
        redis = topology(request, request.param)
        store = RedisDedupeStore.from_url(
            redis.url, window_seconds=60, binding_seconds=660, mode=redis.mode, master=redis.master
        )
    try:
        yield store
    finally:
        await store.close()


def delivery(task: str, sha: str = "a" * 64, signature: tuple[int, str] | None = None) -> Delivery:
    return Delivery(task, sha, signature)


def unique() -> str:
    return f"task-{uuid.uuid4().hex[:12]}"


class TestDedupeStore:
    async def test_claim_then_complete_makes_duplicates(self, store: DedupeStore) -> None:
        """A completed delivery is a duplicate afterwards."""
        d = delivery(unique())
        first = await store.claim(d, lease_seconds=5)
        assert first.claim is Claim.CLAIMED
        await store.complete(d, first.token)
        assert (await store.claim(d, lease_seconds=5)).claim is Claim.DUPLICATE

    async def test_other_body_is_another_delivery(self, store: DedupeStore) -> None:
        """Same task, different body sha: a new delivery."""
        task = unique()
        claimed = await store.claim(delivery(task, "a" * 64), lease_seconds=5)
        await store.complete(delivery(task, "a" * 64), claimed.token)
        assert (await store.claim(delivery(task, "b" * 64), lease_seconds=5)).claim is Claim.CLAIMED

    async def test_released_claim_can_be_claimed_again(self, store: DedupeStore) -> None:
        """A failed publish releases the claim so the sender's retry goes through."""
        d = delivery(unique())
        first = await store.claim(d, lease_seconds=5)
        assert (await store.claim(d, lease_seconds=5)).claim is Claim.PENDING
        await store.release(d, first.token)
        assert (await store.claim(d, lease_seconds=5)).claim is Claim.CLAIMED

    async def test_release_by_a_stranger_is_ignored(self, store: DedupeStore) -> None:
        """Only the lease's owner can release it."""
        d = delivery(unique())
        await store.claim(d, lease_seconds=5)
        await store.release(d, "not-the-token")
        assert (await store.claim(d, lease_seconds=5)).claim is Claim.PENDING

    async def test_lease_expires(self, store: DedupeStore) -> None:
        """A claim whose owner vanished expires with its lease."""
        d = delivery(unique())
        await store.claim(d, lease_seconds=0.2)
        await asyncio.sleep(0.35)
        assert (await store.claim(d, lease_seconds=5)).claim is Claim.CLAIMED

    async def test_concurrent_claims_have_one_winner(self, store: DedupeStore) -> None:
        """Of 50 simultaneous identical claims exactly one wins."""
        d = delivery(unique())
        results = await asyncio.gather(*(store.claim(d, lease_seconds=5) for _ in range(50)))
        assert [r.claim for r in results].count(Claim.CLAIMED) == 1

    async def test_signature_is_bound_to_its_first_body(self, store: DedupeStore) -> None:
        """Another body under a used signature is SIGNATURE_REUSED; the same body is not."""
        task, sig = unique(), (1_700_000_000, "c2ln")
        first = await store.claim(delivery(task, "a" * 64, sig), lease_seconds=5)
        await store.complete(delivery(task, "a" * 64, sig), first.token)
        other = await store.claim(delivery(task, "b" * 64, sig), lease_seconds=5)
        assert other.claim is Claim.SIGNATURE_REUSED
        again = await store.claim(delivery(task, "a" * 64, sig), lease_seconds=5)
        assert again.claim is Claim.DUPLICATE

    async def test_binding_survives_a_failed_publish(self, store: DedupeStore) -> None:
        """A released claim keeps its signature binding: a swapped body is still refused."""
        task, sig = unique(), (1_700_000_000, "c2ln")
        first = await store.claim(delivery(task, "a" * 64, sig), lease_seconds=5)
        await store.release(delivery(task, "a" * 64, sig), first.token)
        other = await store.claim(delivery(task, "b" * 64, sig), lease_seconds=5)
        assert other.claim is Claim.SIGNATURE_REUSED

    async def test_wait_returns_when_the_owner_finishes(self, store: DedupeStore) -> None:
        """A waiter sees the owner's outcome without waiting for its whole budget."""
        d = delivery(unique())
        first = await store.claim(d, lease_seconds=5)

        async def finish_soon() -> None:
            await asyncio.sleep(0.1)
            await store.complete(d, first.token)

        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(store.wait(d, within=5), finish_soon())
        assert loop.time() - started < 2
        assert (await store.claim(d, lease_seconds=5)).claim is Claim.DUPLICATE


def test_binding_outlives_the_signature() -> None:
    """A binding lasts longer than the 2 x tolerance span a timestamp can verify in."""
    assert binding_ttl(300) > 600


class TestMemoryStore:
    async def test_bounded(self) -> None:
        """The in-process store forgets the oldest entries past its bound."""
        store = MemoryDedupeStore(window_seconds=60, binding_seconds=60, max_entries=10)
        for i in range(30):
            d = delivery(f"t{i}")
            await store.complete(d, (await store.claim(d, lease_seconds=5)).token)
        assert (await store.claim(delivery("t29"), lease_seconds=5)).claim is Claim.DUPLICATE
        assert (await store.claim(delivery("t0"), lease_seconds=5)).claim is Claim.CLAIMED


@pytest.mark.redis
class TestRedisStore:
    async def test_window_is_the_expiry(self, redis_url: str) -> None:
        """A completed delivery expires after the dedupe window; a binding after its TTL."""
        store = RedisDedupeStore.from_url(redis_url, window_seconds=1234, binding_seconds=660)
        try:
            d = delivery(unique(), signature=(1, "c2ln"))
            await store.complete(d, (await store.claim(d, lease_seconds=5)).token)
            client = store._redis
            keys = sorted(await client.keys(f"*{d.task_id}*"))
            ttls = sorted([await client.ttl(k) for k in keys])
            assert len(keys) == 2
            assert 600 < ttls[0] <= 660 and 1200 < ttls[1] <= 1234
        finally:
            await store.close()

    async def test_concurrent_requests_share_pipelines_with_their_own_answers(
        self, redis_url: str
    ) -> None:
        """600 concurrent claims (more than one pipeline holds) each get their own answer."""
        store = RedisDedupeStore.from_url(redis_url, window_seconds=60, binding_seconds=660)
        try:
            task = unique()
            mine = [delivery(task, f"{i:064x}", signature=(1, f"s{i}")) for i in range(300)]
            # The same signatures with other bodies: refused, in the same pipelines.
            swapped = [delivery(task, f"{i + 1:064x}", signature=(1, f"s{i}")) for i in range(300)]
            first = await asyncio.gather(*(store.claim(d, lease_seconds=5) for d in mine))
            assert [r.claim for r in first] == [Claim.CLAIMED] * 300
            assert len({r.token for r in first}) == 300
            await asyncio.gather(
                *(store.complete(d, r.token) for d, r in zip(mine, first, strict=True))
            )
            again = await asyncio.gather(
                *(
                    store.claim(d, lease_seconds=5)
                    for pair in zip(mine, swapped, strict=True)
                    for d in pair
                )
            )
            assert [r.claim for r in again] == [Claim.DUPLICATE, Claim.SIGNATURE_REUSED] * 300
        finally:
            await store.close()

    async def test_claims_survive_an_emptied_script_cache(self, redis_url: str) -> None:
        """After SCRIPT FLUSH (a restarted or failed-over Redis) claims still work."""
        store = RedisDedupeStore.from_url(redis_url, window_seconds=60, binding_seconds=660)
        try:
            first = delivery(unique())
            assert (await store.claim(first, lease_seconds=5)).claim is Claim.CLAIMED
            await store._redis.script_flush()
            claims = await asyncio.gather(
                *(store.claim(delivery(unique()), lease_seconds=5) for _ in range(5)),
                store.claim(first, lease_seconds=5),
            )
            assert [c.claim for c in claims] == [Claim.CLAIMED] * 5 + [Claim.PENDING]
            assert await store._redis.script_exists(_CLAIM_SHA1) == [True]
        finally:
            await store.close()

    async def test_down_raises_unavailable(self) -> None:
        """A Redis that is gone raises DedupeUnavailable quickly, not a redis-py error."""
        server = LocalRedis().start()
        store = RedisDedupeStore.from_url(server.url, window_seconds=60, binding_seconds=60)
        try:
            server.kill()
            with pytest.raises(DedupeUnavailable):
                await store.claim(delivery(unique()), lease_seconds=5)
            with pytest.raises(DedupeUnavailable):
                await store.ping()
        finally:
            await store.close()
            server.stop()


@pytest.mark.redis
class TestCluster:
    async def test_claims_on_every_primary_all_succeed(
        self, redis_cluster: LocalRedisCluster
    ) -> None:
        """24 tasks land on all three primaries; each claim, dedupe and binding holds."""
        store = RedisDedupeStore.from_url(
            redis_cluster.url, window_seconds=60, binding_seconds=660, mode="cluster"
        )
        try:
            tasks = [unique() for _ in range(24)]
            signed = [delivery(t, "a" * 64, (1_700_000_000, f"s-{t}")) for t in tasks]
            unsigned = [delivery(t, "c" * 64) for t in tasks]
            first = await asyncio.gather(*(store.claim(d, lease_seconds=5) for d in signed))
            assert [r.claim for r in first] == [Claim.CLAIMED] * 24
            await asyncio.gather(
                *(store.complete(d, r.token) for d, r in zip(signed, first, strict=True))
            )
            again = await asyncio.gather(*(store.claim(d, lease_seconds=5) for d in signed))
            assert [r.claim for r in again] == [Claim.DUPLICATE] * 24
            swapped = [delivery(d.task_id, "b" * 64, d.signature) for d in signed]
            forged = await asyncio.gather(*(store.claim(d, lease_seconds=5) for d in swapped))
            assert [r.claim for r in forged] == [Claim.SIGNATURE_REUSED] * 24
            plain = await asyncio.gather(*(store.claim(d, lease_seconds=5) for d in unsigned))
            assert [r.claim for r in plain] == [Claim.CLAIMED] * 24
            # Meaningful only if the tasks really spread: every primary holds some.
            for node in redis_cluster.nodes:
                assert int(node.info("keyspace").get("db0", "keys=0").split(",")[0][5:]) > 0
        finally:
            await store.close()

    async def test_a_plain_client_on_a_cluster_is_not_enough(
        self, redis_cluster: LocalRedisCluster
    ) -> None:
        """REDIS_MODE=standalone on one cluster node: claims for other nodes' slots fail
        (MOVED) and say so as DedupeUnavailable: why REDIS_MODE=cluster exists."""
        one_node = f"redis://127.0.0.1:{redis_cluster.nodes[0].port}/0"
        store = RedisDedupeStore.from_url(one_node, window_seconds=60, binding_seconds=660)
        failed = 0
        try:
            for _ in range(24):
                try:
                    await store.claim(delivery(unique()), lease_seconds=5)
                except DedupeUnavailable as exc:
                    assert "moved" in str(exc).lower()
                    failed += 1
        finally:
            await store.close()
        assert failed > 0


@pytest.mark.redis
@pytest.mark.slow
class TestSentinelFailover:
    @pytest.mark.parametrize("kill", [True, False], ids=["primary-killed", "sentinel-failover"])
    async def test_claims_work_again_through_the_new_primary(self, kill: bool) -> None:
        """The primary is killed (or demoted by SENTINEL FAILOVER); once the Sentinels
        promote the replica, claims go to it, and what was recorded before (and
        replicated) is still a duplicate, its signature still bound."""
        with LocalRedisSentinel() as sentinel:
            store = RedisDedupeStore.from_url(
                sentinel.url, window_seconds=60, binding_seconds=660, mode="sentinel"
            )
            try:
                old = sentinel.primary()
                before = delivery(unique(), signature=(1_700_000_000, "c2ln"))
                claimed = await store.claim(before, lease_seconds=5)
                await store.complete(before, claimed.token)
                await store._redis.execute_command("WAIT", 1, 5000)  # on the replica too
                new = sentinel.fail_over(kill=kill)
                assert new is not old
                after = delivery(unique())
                for _ in range(50):  # the client learns of the new primary on its next try
                    try:
                        result = await store.claim(after, lease_seconds=5)
                        break
                    except DedupeUnavailable:
                        await asyncio.sleep(0.2)
                else:
                    pytest.fail("no claim succeeded after the failover")
                assert result.claim is Claim.CLAIMED
                assert (await store.claim(before, lease_seconds=5)).claim is Claim.DUPLICATE
                swapped = delivery(before.task_id, "b" * 64, before.signature)
                assert (await store.claim(swapped, lease_seconds=5)).claim is (
                    Claim.SIGNATURE_REUSED
                )
                assert new.ask("exists", store._keys(after)[-1]).strip() == "1"
            finally:
                await store.close()
