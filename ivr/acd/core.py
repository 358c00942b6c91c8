"""Skill queues and agents in Redis, and the atomic match of the next caller with the best agent.

Vocabulary as in Asterisk's queues.conf and FreeSWITCH's mod_callcenter:

- A *queue* is a skill: topic x language (``water:en``). Callers wait in it by rank: a higher
  priority first (a callback's turn, an urgent line), then the earliest entry.
- An *agent* has skills (a proficiency 1-5 per topic) and languages, and a state: logged out,
  available, reserved (a call is offered), on call, wrap-up, paused (with a reason). Only an
  available agent whose softphone is registered is ever offered a call.
- The *match* (``match.lua``) gives the head caller the most proficient free agent for the skill,
  the longest idle among equals. After ``widen_any_proficiency`` seconds of waiting any
  proficiency will do, after ``widen_any_agent`` any agent who speaks the caller's language.

Both the match and every agent state change are single Lua scripts: Redis runs each alone, so
no agent ever gets two calls and no caller is taken twice, with any number of controllers.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis

from ivr.cluster.redis_ha import replicated
from ivr.settings import Settings

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
PREFIX = "ivr:acd"
RANK_PRIORITY_STEP = 1e13  # a rank is (9 - priority) * 1e13 + entry time in ms


class AgentState(StrEnum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RESERVED = "reserved"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


def queue_name(topic: str, language: str) -> str:
    return f"{topic}:{language}"


def queue_key(queue: str) -> str:
    return f"{PREFIX}:queue:{queue}"


def agent_key(agent_id: str) -> str:
    return f"{PREFIX}:agent:{agent_id}"


def call_key(call_id: str) -> str:
    return f"{PREFIX}:call:{call_id}"


def now_ms() -> int:
    return int(time.time() * 1000)


# Same rank, new member: an entry of the queue becomes a callback without losing its place.
TO_CALLBACK = """
local queue = redis.call('HGET', KEYS[1], 'queue')
if not queue then return 0 end
local queue_key = ARGV[4] .. ':queue:' .. queue
local rank = redis.call('ZSCORE', queue_key, ARGV[1])
if not rank then return 0 end
redis.call('ZREM', queue_key, ARGV[1])
redis.call('ZADD', queue_key, rank, ARGV[2])
redis.call('HSET', KEYS[2], unpack(redis.call('HGETALL', KEYS[1])))
redis.call('HSET', KEYS[2], 'number', ARGV[3], 'callback_of', ARGV[1], 'state', 'callback')
redis.call('DEL', KEYS[1])
return 1
"""


@dataclass(frozen=True)
class AgentProfile:
    agent_id: str
    name: str
    skills: dict[str, int]  # topic -> proficiency 1-5
    languages: list[str]

    def __post_init__(self) -> None:
        for topic, proficiency in self.skills.items():
            if not 1 <= proficiency <= 5:
                raise ValueError(f"proficiency of {topic!r} must be 1-5, not {proficiency}")


@dataclass(frozen=True)
class Assignment:
    """A caller matched with an agent: the agent is now reserved for the call."""

    call_id: str
    agent_id: str
    queue: str
    level: int  # 0: the skill at the proficiency asked; 1: any proficiency; 2: any agent


@dataclass
class Widening:
    """When the search for an agent widens (queuerules.conf's penalty changes, in seconds)."""

    any_proficiency_after: float = 30.0
    any_agent_after: float = 60.0
    min_proficiency: int = 3


@dataclass
class Acd:
    redis: Redis
    widening: Widening = field(default_factory=Widening)
    # With Redis replicated (the cluster), a caller's place is on this many replicas before
    # the caller is told it: a failover then cannot lose it (about 0.3 ms an enqueue here).
    replicas: int = 0

    def __post_init__(self) -> None:
        self._match = self.redis.register_script((HERE / "match.lua").read_text())
        self._agent_state = self.redis.register_script((HERE / "agent.lua").read_text())
        self._to_callback = self.redis.register_script(TO_CALLBACK)

    # --- Agents -------------------------------------------------------------------------------

    async def save_agent(self, profile: AgentProfile) -> None:
        """Create or update an agent's skills and languages (a new agent is logged out)."""
        key = agent_key(profile.agent_id)
        await self.redis.hsetnx(key, "state", AgentState.LOGGED_OUT)
        await self.redis.hset(key, mapping={
            "name": profile.name,
            "skills": json.dumps(profile.skills),
            "languages": json.dumps(profile.languages),
        })
        await self.redis.sadd(f"{PREFIX}:agents", profile.agent_id)
        await self._change(profile.agent_id, "", "*")  # re-index with the new skills

    async def remove_agent(self, agent_id: str) -> None:
        await self._change(agent_id, AgentState.LOGGED_OUT, "*")
        await self.redis.delete(agent_key(agent_id), f"{agent_key(agent_id)}:indexes",
                                f"{agent_key(agent_id)}:staffed")
        await self.redis.srem(f"{PREFIX}:agents", agent_id)

    async def agent(self, agent_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(agent_key(agent_id)))

    async def _change(self, agent_id: str, state: str, allowed_from: str, reason: str = "",
                      call_id: str = "", registered: str = "") -> bool:
        result = await self._agent_state(
            keys=[agent_key(agent_id)],
            args=[state, allowed_from, now_ms(), reason, call_id, registered])
        return bool(int(cast(list[Any], result)[0]))

    async def set_registered(self, agent_id: str, registered: bool) -> None:
        """The agent's softphone registered or went away: only registered agents get calls."""
        await self._change(agent_id, "", "*", registered="1" if registered else "0")

    async def log_in(self, agent_id: str) -> bool:
        return await self._change(agent_id, AgentState.AVAILABLE, AgentState.LOGGED_OUT)

    async def log_out(self, agent_id: str) -> bool:
        return await self._change(agent_id, AgentState.LOGGED_OUT, ",".join(
            (AgentState.AVAILABLE, AgentState.PAUSED, AgentState.WRAP_UP)))

    async def pause(self, agent_id: str, reason: str) -> bool:
        return await self._change(agent_id, AgentState.PAUSED, ",".join(
            (AgentState.AVAILABLE, AgentState.WRAP_UP, AgentState.RESERVED)), reason=reason)

    async def ready(self, agent_id: str) -> bool:
        """Available again: after a pause, or at the end of wrap-up."""
        return await self._change(agent_id, AgentState.AVAILABLE, ",".join(
            (AgentState.PAUSED, AgentState.WRAP_UP)))

    async def answered(self, agent_id: str, call_id: str) -> bool:
        return await self._change(agent_id, AgentState.ON_CALL, AgentState.RESERVED,
                                  call_id=call_id)

    async def wrap_up(self, agent_id: str, call_id: str) -> bool:
        return await self._change(agent_id, AgentState.WRAP_UP, AgentState.ON_CALL,
                                  call_id=call_id)

    async def reserve(self, agent_id: str, call_id: str) -> bool:
        """Reserve a named agent for a call (a transfer to them), if they are free right now."""
        return await self._change(agent_id, AgentState.RESERVED, AgentState.AVAILABLE,
                                  call_id=call_id)

    async def reserve_best(self, topic: str, language: str, call_id: str) -> str | None:
        """Reserve the best free agent of a skill for a call (a consultation), if any."""
        for _ in range(3):  # another match may take the best one first: then the next best
            best = await self.redis.zrange(f"{PREFIX}:free:{queue_name(topic, language)}", 0, 0)
            if not best:
                return None
            if await self.reserve(str(best[0]), call_id):
                return str(best[0])
        return None

    async def release(self, agent_id: str) -> bool:
        """An offer withdrawn (the caller left first): the agent is free again, no fault."""
        return await self._change(agent_id, AgentState.AVAILABLE, AgentState.RESERVED)

    async def missed(self, agent_id: str, call_id: str, pause_after: int) -> bool:
        """The agent let an offered call ring out. Returns True if they are now paused."""
        misses = int(await self.redis.hincrby(agent_key(agent_id), "missed", 1))
        if misses >= pause_after:
            await self.redis.hset(agent_key(agent_id), "missed", 0)
            await self._change(agent_id, AgentState.PAUSED, AgentState.RESERVED,
                               reason="missed calls")
            return True
        await self._change(agent_id, AgentState.AVAILABLE, AgentState.RESERVED)
        return False

    async def handled(self, queue: str, talk_seconds: float) -> None:
        """Remember a handle time: estimated waits come from the recent ones."""
        key = f"{PREFIX}:handle:{queue}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, round(talk_seconds, 1))
            pipe.ltrim(key, 0, 49)
            await pipe.execute()

    # --- Callers ------------------------------------------------------------------------------

    async def enqueue(self, call_id: str, topic: str, language: str, priority: int = 0,
                      entered_ms: int | None = None) -> int:
        """Put a caller in the queue of a skill; returns their position (1 = next)."""
        queue = queue_name(topic, language)
        entered = entered_ms or now_ms()
        rank = (9 - max(0, min(priority, 9))) * RANK_PRIORITY_STEP + entered
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(call_key(call_id), mapping={
                "topic": topic, "language": language, "queue": queue, "priority": priority,
                "entered_ms": entered, "state": "queued"})
            pipe.zadd(queue_key(queue), {call_id: rank})
            pipe.sadd(f"{PREFIX}:queues", queue)
            await pipe.execute()
        if self.replicas and await replicated(self.redis, self.replicas, 100) < self.replicas:
            log.warning("caller %s queued, but no replica has their place yet", call_id)
        return await self.position(call_id)

    async def offer_to(self, agent_id: str, call_id: str, topic: str, language: str,
                       priority: int) -> bool:
        """A caller for one named agent: reserve them and keep the caller's entry outside the
        queue, so that a miss puts the caller in line (``requeue``) and nothing is lost."""
        await self.redis.hset(call_key(call_id), mapping={
            "topic": topic, "language": language, "queue": queue_name(topic, language),
            "priority": priority, "entered_ms": now_ms(), "state": "offered",
            "agent": agent_id})
        return await self.reserve(agent_id, call_id)

    async def requeue(self, call_id: str) -> None:
        """Back in line at the place it had (an agent did not answer): its rank is kept."""
        values = await self.entry(call_id)
        await self.enqueue(call_id, values["topic"], values["language"],
                           int(values.get("priority", 0)), int(values["entered_ms"]))

    async def to_callback(self, call_id: str, callback_id: str, number: str) -> bool:
        """The caller hangs up but keeps their place: the entry becomes a callback."""
        moved = await self._to_callback(
            keys=[call_key(call_id), call_key(callback_id)],
            args=[call_id, callback_id, number, PREFIX])
        return bool(moved)

    async def leave(self, call_id: str) -> None:
        """The caller is gone (answered elsewhere, abandoned): out of every queue."""
        queue = await self.redis.hget(call_key(call_id), "queue")
        async with self.redis.pipeline(transaction=True) as pipe:
            if queue:
                pipe.zrem(queue_key(str(queue)), call_id)
            pipe.delete(call_key(call_id))
            await pipe.execute()

    async def entry(self, call_id: str) -> dict[str, str]:
        """A queue entry: topic, language, queue, priority, entered_ms (and number, if a
        callback)."""
        return cast(dict[str, str], await self.redis.hgetall(call_key(call_id)))

    async def position(self, call_id: str) -> int:
        queue = await self.redis.hget(call_key(call_id), "queue")
        if queue is None:
            return 0
        rank = cast(int | None, await self.redis.zrank(queue_key(str(queue)), call_id))
        return 0 if rank is None else rank + 1

    async def estimated_wait(self, topic: str, language: str, position: int,
                             default_handle: float) -> float:
        """Seconds until a caller at ``position`` is answered, from recent handle times."""
        recent = [float(v) for v in await self.redis.lrange(
            f"{PREFIX}:handle:{queue_name(topic, language)}", 0, -1)]
        handle = sum(recent) / len(recent) if recent else default_handle
        return position * handle / max(1, await self.staffed(topic, language))

    async def staffed(self, topic: str, language: str) -> int:
        """Agents logged in (in any state) who could take a caller of this skill."""
        return await self.redis.scard(f"{PREFIX}:staffed:{queue_name(topic, language)}")

    async def waiting(self, queue: str) -> int:
        return await self.redis.zcard(queue_key(queue))

    async def queues(self) -> list[str]:
        return sorted(cast(set[str], await self.redis.smembers(f"{PREFIX}:queues")))

    # --- The match ----------------------------------------------------------------------------

    async def match(self, queues: list[str] | None = None) -> Assignment | None:
        """Give the most urgent caller of these queues (default: all) the best free agent."""
        names = queues if queues is not None else await self.queues()
        if not names:
            return None
        widening = self.widening
        result = await self._match(
            keys=[queue_key(name) for name in names],
            args=[now_ms(), widening.any_proficiency_after, widening.any_agent_after,
                  widening.min_proficiency])
        if result is None:
            return None
        call_id, agent_id, key, level = cast(list[Any], result)
        return Assignment(str(call_id), str(agent_id), str(key).removeprefix(
            f"{PREFIX}:queue:"), int(level))


def acd_for(settings: Settings, redis: Redis) -> Acd:
    """The ACD with the widening of the settings."""
    return Acd(redis, Widening(settings.widen_any_proficiency_seconds,
                               settings.widen_any_agent_seconds, settings.min_proficiency),
               replicas=1 if settings.redis_sentinels else 0)
