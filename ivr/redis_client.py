"""The one way every process connects to Redis: short timeouts and retries on a lost link,
so a Redis restart costs a call a retry, not an error."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ivr.settings import Settings


def connect_redis(settings: Settings, timeout: float = 2.0) -> Redis:
    return Redis.from_url(
        settings.redis_dsn,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
