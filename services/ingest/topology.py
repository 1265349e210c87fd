"""Connecting to Redis as it is deployed: one server, a Sentinel-watched primary, or a Cluster.

``REDIS_URL`` says where, ``REDIS_MODE`` how to read it. A plain client on a Cluster gets
``MOVED`` for most keys and a plain client on a Sentinel's primary keeps writing to a
demoted one; each topology needs its own redis-py client, chosen here and nowhere else.

* ``standalone``: ``redis[s]://[user:password@]host:port/db``, as redis-py reads it;
* ``cluster``: ``redis[s]://[user:password@]host:port[,host:port...]`` seed nodes (any
  reachable member finds the others; db 0 only, a Cluster has no other);
* ``sentinel``: ``redis[s]://[user:password@]host:port[,host:port...]/db`` names the
  Sentinels (port 26379 when left out); ``REDIS_SENTINEL_MASTER`` names the primary they
  watch. The credentials are the data nodes'; the Sentinels are asked without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias
from urllib.parse import unquote, urlsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisClusterException, RedisError

from services.common.settings import RedisMode

__all__ = ["REDIS_ERRORS", "RedisAddress", "RedisClient", "RedisConnection", "connect"]

RedisClient: TypeAlias = aioredis.Redis | RedisCluster

#: What a client of any topology raises when Redis cannot answer (a Cluster client's own
#: errors, such as "cannot be connected", are not RedisErrors).
REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError)

_DEFAULT_PORTS: Final = {"cluster": 6379, "sentinel": 26379}

#: Tries after the first: one, soon, is enough to reach a failed-over primary through a
#: fresh connection; redis-py's default (10, backing off to 1 s) would hold a request for
#: 10 s or more while Redis is down, when the sender gives up after 15.
_RETRIES: Final = 1


def _retry() -> Retry:
    """A fresh policy per client (redis-py's Retry objects are mutable)."""
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=_RETRIES)


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """A cluster or sentinel ``REDIS_URL``, read: the nodes to ask and how to log in."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False

    @classmethod
    def parse(cls, url: str, mode: RedisMode) -> RedisAddress:
        """Raises ValueError saying what is wrong, never echoing the URL (it holds a password)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"REDIS_MODE={mode} needs a redis:// or rediss:// URL")
        if parts.query or parts.fragment:
            raise ValueError(f"REDIS_MODE={mode} reads no ?options in the URL")
        credentials, _, hosts = parts.netloc.rpartition("@")
        user, _, password = credentials.partition(":")
        nodes = tuple(_node(host, _DEFAULT_PORTS[mode]) for host in hosts.split(",") if host)
        if not nodes:
            raise ValueError(f"REDIS_MODE={mode} needs at least one host:port in the URL")
        path = parts.path.strip("/") or "0"
        if not path.isdigit():
            raise ValueError("the URL's path must be a database number")
        if mode == "cluster" and path != "0":
            raise ValueError("a Redis Cluster has database 0 only")
        return cls(
            nodes=nodes,
            username=unquote(user) or None,
            password=unquote(password) or None,
            db=int(path),
            tls=parts.scheme == "rediss",
        )


def _node(text: str, default_port: int) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or "]" in port:  # no port, or the tail of a bare IPv6 address
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError("each node in the URL must be host or host:port")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class RedisConnection:
    """The client the store talks to, and what else must be closed with it."""

    client: RedisClient
    sentinel: Sentinel | None = None

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.sentinel is not None:
            await self.sentinel.aclose()


def connect(url: str, *, mode: RedisMode, master: str, timeout: float) -> RedisConnection:
    """A client for the topology; nothing is sent until its first command.

    Every socket operation is bounded by ``timeout``; raises ValueError for a URL the mode
    cannot use.
    """
    if mode == "standalone":
        return RedisConnection(
            aioredis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=30,
                decode_responses=True,
                retry=_retry(),
            )
        )
    address = RedisAddress.parse(url, mode)
    if mode == "cluster":
        return RedisConnection(
            RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
                username=address.username,
                password=address.password,
                ssl=address.tls,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                decode_responses=True,
                retry=_retry(),
            )
        )
    # redis-py leaves Sentinel.__init__ unannotated.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(address.nodes),
        sentinel_kwargs={
            "ssl": address.tls,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": _retry(),
        },
    )
    client = sentinel.master_for(
        master,
        redis_class=aioredis.Redis,
        username=address.username,
        password=address.password,
        db=address.db,
        ssl=address.tls,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=True,
        retry=_retry(),
    )
    return RedisConnection(client, sentinel)
