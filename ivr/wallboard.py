"""The supervisors' figures, now: per queue, per agent, for the callbot, and today's calls.

Live figures come from Redis (who waits, since when; each agent's state and since when);
today's come from the call records in SQL. Service level is the share of today's queued calls
answered within ``SERVICE_LEVEL_SECONDS`` (abandoned calls count against it).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callbot.service import bot_figures
from ivr.acd.core import PREFIX, Acd, call_key, queue_key
from ivr.controller.store import CallData
from ivr.models import CallOutcome, CallRecord, aware, start_of_today

SERVICE_LEVEL_SECONDS = 15.0


async def live_calls(redis: Redis) -> list[dict[str, Any]]:
    """Every call in progress: who, where it came in, where it is now."""
    calls = []
    async for key in redis.scan_iter(match="ivr:call:*"):
        values = cast(dict[str, str], await redis.hgetall(key))
        if not values or not values.get("channel_id"):
            continue
        call = CallData.from_redis(values)
        calls.append({
            "channel_id": call.channel_id, "caller": call.caller, "did": call.did,
            "line": call.line, "district": call.district, "language": call.language,
            "state": str(call.state), "step": call.step, "queue": call.queue,
            "agent": call.agent, "started_at": call.started_at, "queued_at": call.queued_at,
            "path": call.path})
    return sorted(calls, key=lambda call: call["started_at"])


async def _queues(redis: Redis, acd: Acd, now_ms: int) -> dict[str, dict[str, Any]]:
    queues: dict[str, dict[str, Any]] = {}
    for queue in await acd.queues():
        waiting = cast(list[str], await redis.zrange(queue_key(queue), 0, -1))
        longest = 0.0
        for call_id in waiting:
            entered = await redis.hget(call_key(call_id), "entered_ms")
            if entered:
                longest = max(longest, (now_ms - int(entered)) / 1000)
        recent = [float(v) for v in await redis.lrange(f"{PREFIX}:handle:{queue}", 0, -1)]
        queues[queue] = {"waiting": len(waiting), "longest_wait_s": round(longest, 1),
                         "average_handle_s": round(sum(recent) / len(recent), 1)
                         if recent else None,
                         "staffed": await acd.staffed(*queue.split(":", 1))}
    return queues


async def _agents(redis: Redis, now_ms: int) -> list[dict[str, Any]]:
    agents = []
    for agent_id in sorted(cast(set[str], await redis.smembers(f"{PREFIX}:agents"))):
        values = cast(dict[str, str], await redis.hgetall(f"{PREFIX}:agent:{agent_id}"))
        if not values:
            continue
        since = int(values.get("state_since_ms") or now_ms)
        agents.append({"agent": agent_id, "name": values.get("name", ""),
                       "state": values.get("state", ""),
                       "pause_reason": values.get("pause_reason", ""),
                       "for_s": round((now_ms - since) / 1000), "call": values.get("call", ""),
                       "registered": values.get("registered") == "1"})
    return agents


async def _today(sessions: async_sessionmaker[AsyncSession],
                 queues: dict[str, dict[str, Any]]) -> dict[str, Any]:
    since = start_of_today()
    async with sessions() as session:
        records = (await session.scalars(
            select(CallRecord).where(CallRecord.started_at >= since))).all()
    by_hour: Counter[str] = Counter()
    by_topic: Counter[str] = Counter()
    per_queue: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        by_hour[f"{aware(record.started_at).astimezone().hour:02d}"] += 1
        topic = (record.queue or "").split(":")[0] or (record.bot or {}).get("topic") or "menu"
        by_topic[topic] += 1
        if not record.queue or record.outcome == CallOutcome.IN_PROGRESS:
            continue
        counts = per_queue[record.queue]
        counts["offered"] += 1
        if record.outcome == CallOutcome.ABANDONED:
            counts["abandoned"] += 1
        elif record.agent and record.wait_seconds is not None:
            counts["answered"] += 1
            counts["answered_in_time"] += record.wait_seconds <= SERVICE_LEVEL_SECONDS
    for queue, counts in per_queue.items():
        figures = queues.setdefault(queue, {"waiting": 0, "longest_wait_s": 0.0,
                                            "average_handle_s": None, "staffed": 0})
        done = counts["answered"] + counts["abandoned"]
        figures.update({
            "answered_today": counts["answered"], "abandoned_today": counts["abandoned"],
            "service_level": round(counts["answered_in_time"] / done, 3) if done else None,
            "abandon_rate": round(counts["abandoned"] / done, 3) if done else None})
    return {"calls": len(records), "by_hour": dict(sorted(by_hour.items())),
            "by_topic": dict(by_topic.most_common())}


async def snapshot(redis: Redis, sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    """Everything the wallboard shows, as of now."""
    now_ms = int(time.time() * 1000)
    acd = Acd(redis)
    queues = await _queues(redis, acd, now_ms)
    today = await _today(sessions, queues)
    agents = await _agents(redis, now_ms)
    return {
        "at": datetime.now(UTC).isoformat(),
        "service_level_seconds": SERVICE_LEVEL_SECONDS,
        "queues": queues,
        "agents": agents,
        "agents_by_state": dict(Counter(agent["state"] for agent in agents)),
        "bot": await bot_figures(redis),
        "today": today,
        "live_calls": await live_calls(redis),
    }
