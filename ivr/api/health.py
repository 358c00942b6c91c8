"""The state of each part the server stands on, for GET /health and /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ivr.ari import AriClient, AriError

PART_TIMEOUT = 2.0

Part = dict[str, Any]


async def _asterisk(ari: AriClient) -> Part:
    info = await ari.asterisk_info()
    return {"state": "up", "version": info.get("system", {}).get("version")}


async def _ari_app(ari: AriClient, app: str) -> Part:
    # The Stasis app is registered while a controller holds the events WebSocket.
    try:
        await ari.application(app)
    except AriError as exc:
        if exc.not_found:
            return {"state": "down", "error": f"no controller is connected to Stasis app {app!r}"}
        raise
    return {"state": "up", "app": app}


async def _redis(redis: Redis) -> Part:
    await redis.ping()
    return {"state": "up"}


async def _database(engine: AsyncEngine) -> Part:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return {"state": "up", "dialect": engine.dialect.name}


async def _checked(probe: Any) -> Part:
    try:
        result: Part = await asyncio.wait_for(probe, PART_TIMEOUT)
        return result
    except TimeoutError:
        return {"state": "down", "error": f"no answer within {PART_TIMEOUT} s"}
    except Exception as exc:
        return {"state": "down", "error": f"{type(exc).__name__}: {exc}"}


async def check_parts(ari: AriClient, app: str, redis: Redis, engine: AsyncEngine
                      ) -> dict[str, Part]:
    names = ("asterisk", "ari", "redis", "database")
    results = await asyncio.gather(
        _checked(_asterisk(ari)),
        _checked(_ari_app(ari, app)),
        _checked(_redis(redis)),
        _checked(_database(engine)),
    )
    return dict(zip(names, results, strict=True))
