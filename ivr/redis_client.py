"""The one way every process connects to Redis: short timeouts and retries on a lost link,
so a Redis restart costs a call a retry, not an error; and a bounded pool that a burst (every
agent's phone registering at once, a crowd of calls) waits on rather than failing.

With ``IVR_REDIS_SENTINELS`` (the cluster) the primary's address comes from Sentinel, asked
again whenever a connection is made: after a failover, connections to the dead primary fail,
and the retries reconnect to the promoted replica. A primary that was demoted while still
running answers writes with READONLY; redis-py's Sentinel connection turns that into a
connection error, so it is retried too, on the new primary. The retries there last longer
than a promotion (``FAILOVER_RETRIES``): the same short timeouts, more patience.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ivr.settings import Settings

MAX_CONNECTIONS = 64  # per process
WAIT_FOR_CONNECTION = 10.0  # seconds a request may wait for a free connection of the pool
# Through Sentinel: a connection (new, or one that broke under a command) is tried again 0.1,
# 0.2, 0.4 s apart, then every half second, Sentinel asked each time: about 9 s in all, where a
# failover (ivr.cluster.redis_ha: down after 1 s, the vote, the promotion) takes 2 to 3. The
# half-second steps let a command through soon after the promotion.
FAILOVER_BACKOFF = ExponentialBackoff(cap=0.5, base=0.05)
FAILOVER_RETRIES = 20
FOLLOW_EVERY = 0.5  # seconds: how often a pool asks Sentinel whether the primary moved


class _PrimaryConnection(SentinelManagedConnection):
    """Asks Sentinel for the primary at every (re)connection.

    redis-py's own asks only in ``connect()``; a command that retries after its connection
    broke reconnects through ``connect_check_health`` to the address it had, the dead primary,
    until its retries run out (redis-py issue 3874). And one attempt here: the retries of the
    callers come back through this, and so ask Sentinel again each time."""

    async def connect_check_health(self, check_health: bool = True,
                                   retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health=check_health,
                                           retry_socket_connect=False)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (connections go to the primary it names) with the bound of the
    blocking pool: a request waits for a free connection instead of failing.

    And it asks Sentinel now and then whether the primary moved. An old primary that is still
    running (a stall longer than down-after, a manual failover) goes on taking writes after
    the switch, as a primary, until Sentinel turns it into a replica some 10 s later; all of
    them are then lost. Its connections do not break meanwhile, so without asking, the pool
    would keep using them."""

    _asked_at = 0.0

    async def get_connection(self, command_name: Any = None, *keys: Any,
                             **options: Any) -> AbstractConnection:
        if time.monotonic() - self._asked_at > FOLLOW_EVERY:
            self._asked_at = time.monotonic()
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                # If it moved, this closes the idle connections: they reconnect when used.
                await self.get_master_address()  # type: ignore[no-untyped-call]
        connection: AbstractConnection = await super().get_connection()  # type: ignore[no-untyped-call]
        address = (getattr(connection, "host", None), getattr(connection, "port", None))
        if self.master_address is not None and address != self.master_address:
            await connection.disconnect()  # was in use when it moved: reconnects on its command
        return connection


class _SentinelRedis(Redis):
    """Closes its Sentinel clients too."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            await self.sentinel_manager.aclose()


def connect_redis(settings: Settings, timeout: float = 2.0) -> Redis:
    if settings.redis_sentinels:
        return _connect_through_sentinel(settings, timeout)
    pool = BlockingConnectionPool.from_url(
        settings.redis_dsn, **_pool_options(timeout),
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3))
    return Redis.from_pool(pool)


def _pool_options(timeout: float) -> dict[str, Any]:
    """What every pool has, through Sentinel or not: the bound, the short timeouts, and
    retries on a lost link."""
    return {"max_connections": MAX_CONNECTIONS, "timeout": WAIT_FOR_CONNECTION,
            "decode_responses": True, "socket_timeout": timeout,
            "socket_connect_timeout": timeout, "health_check_interval": 10,
            "retry_on_error": [RedisConnectionError, RedisTimeoutError]}


def _connect_through_sentinel(settings: Settings, timeout: float) -> Redis:
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinel_addresses(),
        # One try per Sentinel and question: a Sentinel that is down is skipped for the next
        # (the retries of the connection above ask them all again).
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout,
                         "retry": Retry(NoBackoff(), 0)},
    )
    client: _SentinelRedis = sentinel.master_for(
        settings.redis_master_name,
        redis_class=_SentinelRedis,
        connection_pool_class=_BlockingSentinelPool,
        connection_class=_PrimaryConnection,
        **_pool_options(timeout),
        retry=Retry(FAILOVER_BACKOFF, retries=FAILOVER_RETRIES),
    )
    client.sentinel_manager = sentinel
    return client
