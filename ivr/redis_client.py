"""The one way every process connects to Redis: short timeouts and retries on a lost link,
so a Redis restart costs a call a retry, not an error; and a bounded pool that a burst (every
agent's phone registering at once, a crowd of calls) waits on rather than failing."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ivr.settings import Settings

MAX_CONNECTIONS = 64  # per process
WAIT_FOR_CONNECTION = 10.0  # seconds a request may wait for a free connection of the pool


def connect_redis(settings: Settings, timeout: float = 2.0) -> Redis:
    pool = BlockingConnectionPool.from_url(
        settings.redis_dsn,
        max_connections=MAX_CONNECTIONS,
        timeout=WAIT_FOR_CONNECTION,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis.from_pool(pool)
