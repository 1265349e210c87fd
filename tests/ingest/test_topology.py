"""How REDIS_MODE reads REDIS_URL: seed nodes for a Cluster, Sentinels for a Sentinel set."""

from __future__ import annotations

import pytest

from services.ingest.topology import RedisAddress, connect


class TestRedisAddress:
    def test_cluster_seed_nodes(self) -> None:
        """Every host:port is a seed node; credentials are unquoted; no path is db 0."""
        address = RedisAddress.parse("redis://app:p%40ss@10.0.0.1:7000,10.0.0.2:7001", "cluster")
        assert address == RedisAddress(
            nodes=(("10.0.0.1", 7000), ("10.0.0.2", 7001)), username="app", password="p@ss"
        )

    def test_sentinels_default_port_db_and_tls(self) -> None:
        """A Sentinel without a port is on 26379; the path is the database; rediss is TLS."""
        address = RedisAddress.parse("rediss://:secret@s1,s2:26380,[::1]/2", "sentinel")
        assert address.nodes == (("s1", 26379), ("s2", 26380), ("::1", 26379))
        assert (address.username, address.password, address.db, address.tls) == (
            None,
            "secret",
            2,
            True,
        )

    @pytest.mark.parametrize(
        ("url", "mode", "says"),
        [
            ("http://user:hunter2@h:1", "cluster", "redis:// or rediss://"),
            ("redis://user:hunter2@h:1/3", "cluster", "database 0 only"),
            ("redis://user:hunter2@", "sentinel", "at least one host"),
            ("redis://user:hunter2@h:port", "sentinel", "host or host:port"),
            ("redis://user:hunter2@h:1/x", "sentinel", "database number"),
            ("redis://user:hunter2@h:1?ssl_cert_reqs=none", "cluster", "no ?options"),
        ],
    )
    def test_unusable_urls_say_why_without_the_password(
        self, url: str, mode: str, says: str
    ) -> None:
        """Each refusal names the problem and never repeats the URL (it holds a password)."""
        with pytest.raises(ValueError) as caught:
            RedisAddress.parse(url, mode)  # type: ignore[arg-type]
        assert says in str(caught.value)
        assert "hunter2" not in str(caught.value)


class TestConnect:
    async def test_each_mode_gets_its_client(self) -> None:
        """Standalone: a plain client; cluster: a cluster client; sentinel: a client whose
        pool asks the Sentinels for the primary (nothing is sent before the first command)."""
        plain = connect("redis://h:1/0", mode="standalone", master="m", timeout=1)
        cluster = connect("redis://h:1", mode="cluster", master="m", timeout=1)
        watched = connect("redis://h:1", mode="sentinel", master="primary-a", timeout=1)
        try:
            assert type(plain.client).__name__ == "Redis" and plain.sentinel is None
            assert type(cluster.client).__name__ == "RedisCluster"
            assert watched.sentinel is not None
            pool = watched.client.connection_pool
            assert getattr(pool, "service_name", None) == "primary-a"
        finally:
            for connection in (plain, cluster, watched):
                await connection.aclose()
