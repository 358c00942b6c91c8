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


async def _ari_apps(ari: AriClient, apps: list[str]) -> Part:
    # A Stasis app is registered while its controller holds the events WebSocket. Calls are
    # taken while at least one controller is connected (Asterisk tries the next app).
    connected = []
    for app in apps:
        try:
            await ari.application(app)
            connected.append(app)
        except AriError as exc:
            if not exc.not_found:
                raise
    missing = [app for app in apps if app not in connected]
    if not connected:
        return {"state": "down", "error": f"no controller is connected to Stasis app "
                f"{' or '.join(repr(app) for app in apps)}"}
    return {"state": "up", "apps": connected, "apps_down": missing}


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


async def check_parts(ari: AriClient, apps: list[str], redis: Redis, engine: AsyncEngine
                      ) -> dict[str, Part]:
    names = ("asterisk", "ari", "redis", "database")
    results = await asyncio.gather(
        _checked(_asterisk(ari)),
        _checked(_ari_apps(ari, apps)),
        _checked(_redis(redis)),
        _checked(_database(engine)),
    )
    return dict(zip(names, results, strict=True))
