"""How quickly the controller acts on what Asterisk tells it: from the moment Asterisk stamped an
ARI event to the controller's first request to ARI in answer to it (an answer, a playback, a
bridge, a hang-up). Kept per controller as a histogram of whole milliseconds and added to
Redis every few seconds, where /metrics and `make bench` read it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from contextvars import ContextVar
from datetime import datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ivr.ari import Event

log = logging.getLogger(__name__)

REACTION_KEY = "ivr:metrics:reaction_ms"  # hash: whole milliseconds -> events
LONGEST_MS = 1000  # slower reactions are counted as this
FLUSH_SECONDS = 2.0

# The event being handled, per task: (the task, when Asterisk stamped the event).
_handling: ContextVar[tuple[asyncio.Task[object] | None, float] | None] = ContextVar(
    "ivr_handling", default=None)


def event_time(event: Event) -> float | None:
    """Asterisk's timestamp of an event (``2026-11-22T03:46:05.123+0000``), in epoch seconds;
    None for the controller's own events (timers, hand-overs), which carry none."""
    stamp = event.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


class ReactionTimes:
    def __init__(self) -> None:
        self._counts: collections.Counter[int] = collections.Counter()

    def handling(self, event: Event | None) -> None:
        """The current task now handles ``event`` (None: nothing)."""
        stamped = event_time(event) if event is not None else None
        _handling.set(None if stamped is None else (asyncio.current_task(), stamped))

    def acted(self) -> None:
        """A request to ARI is about to go out: the first one of the task handling an event
        is that event's reaction. Tasks started meanwhile inherit the context, not the event."""
        handling = _handling.get()
        if handling is None or handling[0] is not asyncio.current_task():
            return
        _handling.set(None)
        elapsed_ms = int((time.time() - handling[1]) * 1000)
        self._counts[max(0, min(elapsed_ms, LONGEST_MS))] += 1

    async def flush(self, redis: Redis) -> None:
        if not self._counts:
            return
        counts, self._counts = self._counts, collections.Counter()
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for millis, count in counts.items():
                    pipe.hincrby(REACTION_KEY, str(millis), count)
                await pipe.execute()
        except RedisError as exc:  # kept for the next flush
            self._counts.update(counts)
            log.warning("reaction times not saved: %s", exc)

    async def keep_flushing(self, redis: Redis) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush(redis)


async def reaction_histogram(redis: Redis) -> dict[int, int]:
    """Every controller's reactions so far: whole milliseconds -> events."""
    raw = await redis.hgetall(REACTION_KEY)
    return {int(millis): int(count) for millis, count in raw.items()}


def percentile(histogram: dict[int, int], share: float) -> float | None:
    """The reaction time (ms) that ``share`` (0-1) of the events were at or under."""
    total = sum(histogram.values())
    if not total:
        return None
    wanted = share * total
    seen = 0
    for millis in sorted(histogram):
        seen += histogram[millis]
        if seen >= wanted:
            return float(millis)
    return float(max(histogram))
