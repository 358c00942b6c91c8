"""Call records in SQL: written when a call starts, is answered and ends, with its timeline.

Hundreds of calls write at once, so writes are committed in groups: the writes that arrive
together share one transaction instead of paying for one each. When the database cannot be
reached (PostgreSQL restarting, its host away), the writes are held in memory, in order, and
written when it is back: no record is lost to an outage the process outlives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from ivr.controller.store import CallData
from ivr.db import sessionmaker
from ivr.models import Callback, CallEvent, CallRecord

# The tables themselves (not the ORM classes): plain Core statements cost a fraction to build.
CALLS = cast(Table, CallRecord.__table__)
EVENTS = cast(Table, CallEvent.__table__)
CALLBACKS = cast(Table, Callback.__table__)

GROUP_LIMIT = 500  # statements in one transaction (after an outage thousands may wait)
# Writes held while the database is away: a call makes about ten, one held takes about 5 KB
# (measured), so this is hours of a busy day's calls in 250 MB. Past it, writes are refused.
MAX_HELD = 50_000
# The longest a call waits for its write's commit. A database that hangs instead of refusing
# (its host gone, no reset) is found away only when the connection times out: meanwhile the
# call goes on and its write stays in line, as a held one.
COMMIT_WAIT = 5.0
FIRST_RETRY = 0.2  # seconds before trying an unreachable database again; doubles up to:
MAX_RETRY = 2.0

log = logging.getLogger(__name__)


class WriteRefused(SQLAlchemyError):
    """Not kept: the database has been away so long that ``MAX_HELD`` writes wait already.
    An SQLAlchemyError, so that the callers' handling of a failed write logs it too."""


class GroupCommit:
    """One writer task: takes the oldest statements waiting, runs them in one transaction, and
    tells each waiting call when it is committed. A group that the database refuses is written
    again one statement per transaction, so that one bad write fails alone.

    A group that fails because the database cannot be reached stays first in line and is tried
    again after a pause (doubling up to ``MAX_RETRY``), for as long as it takes; the writes
    that come meanwhile queue behind it, so the order is kept.

    What a write waits for: while the database answers, its commit (a few ms; a write the
    database refuses fails for its caller), at most ``COMMIT_WAIT``. From the moment the
    database is found away until the writes held are all written, only until it is held: the
    callers are call flows, and a call must go on (prompts, queue, agent) while PostgreSQL
    restarts, not hang on its record. A held write that the database refuses once back has no
    caller left: it is logged.
    """

    def __init__(self, engine: AsyncEngine, max_held: int = MAX_HELD) -> None:
        self._engine = engine
        self._max_held = max_held
        self._waiting: deque[tuple[Executable, asyncio.Future[None]]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._away_since: float | None = None  # monotonic; None while the database answers
        self._holding = False  # writes return once held (from an outage until caught up)
        self._refusing = False
        self._closing = False
        self._retry_now = asyncio.Event()

    @property
    def waiting(self) -> int:
        """Writes not written yet (held, or in the group being committed)."""
        return len(self._waiting)

    async def write(self, statement: Executable) -> None:
        if len(self._waiting) >= self._max_held:
            if not self._refusing:
                self._refusing = True
                log.error("SQL database away: %d writes held, refusing more until it is back",
                          len(self._waiting))
            raise WriteRefused(f"{len(self._waiting)} writes are held already: not kept")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._holding:
            done.set_result(None)
        self._waiting.append((statement, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting())
        # On time out wait_for cancels ``done``: the write is settled as a held one.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, COMMIT_WAIT)

    async def close(self, timeout: float) -> None:
        """Write what waits before the process ends, trying an absent database again every
        ``FIRST_RETRY`` for at most ``timeout`` seconds; what is still held then is lost."""
        writer = self._writer
        if writer is None or writer.done():
            return
        self._closing = True
        self._retry_now.set()
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout)
        except TimeoutError:
            log.error("SQL database still away at shutdown: %d writes held are lost",
                      len(self._waiting))
            writer.cancel()

    async def _write_waiting(self) -> None:
        pause = FIRST_RETRY
        while self._waiting:
            waiting = len(self._waiting)
            try:
                await self._write_group()
            except Exception as exc:  # _write_group lets only "the database is away" through
                self._went_away(exc)
                self._retry_now.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._retry_now.wait(),
                                           FIRST_RETRY if self._closing else pause)
                pause = min(pause * 2, MAX_RETRY)
            else:
                pause = FIRST_RETRY
                if self._away_since is not None:
                    log.warning("SQL database back after %.1f s: writing the %d writes held",
                                time.monotonic() - self._away_since, waiting)
                    self._away_since = None
                    self._refusing = False
        self._holding = False

    async def _write_group(self) -> None:
        """Commit the oldest statements waiting, taking each off the line once settled. An
        error that says the database is away is raised; what was not written stays first."""
        group = list(itertools.islice(self._waiting, GROUP_LIMIT))
        try:
            await self._commit([statement for statement, _ in group])
        except Exception as exc:
            if _database_away(exc):
                raise
            if len(group) == 1:
                self._settle_first(exc)
                return
            log.warning("a group of %d writes failed (%s): writing them one by one",
                        len(group), _first_line(exc))
            for statement, _ in group:
                try:
                    await self._commit([statement])
                except Exception as one:
                    if _database_away(one):
                        raise
                    self._settle_first(one)
                else:
                    self._settle_first(None)
        else:
            for _ in group:
                self._settle_first(None)

    async def _commit(self, statements: list[Executable]) -> None:
        async with self._engine.begin() as connection:
            for statement in statements:
                await connection.execute(statement)

    def _went_away(self, error: Exception) -> None:
        if self._away_since is not None:
            return
        self._away_since = time.monotonic()
        self._holding = True
        log.warning("SQL database unreachable (%s): holding the %d writes waiting, and those "
                    "to come, until it is back", _first_line(error), len(self._waiting))
        for _, done in self._waiting:  # held from now on: their calls go on
            if not done.done():
                done.set_result(None)

    def _settle_first(self, error: Exception | None) -> None:
        _, done = self._waiting.popleft()
        if done.done():  # released once held, or its call was cancelled: the write stood alone
            if error is not None:
                log.error("a held write failed: %s", error)
        elif error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


# PostgreSQL's SQLSTATEs that say the server is not there (rather than refusing a statement):
# class 08 (connection exceptions), and admin/crash shutdown and "cannot connect now".
_AWAY_STATES = ("08", "57P01", "57P02", "57P03")


def _database_away(error: BaseException) -> bool:
    """Whether ``error`` means the database could not be reached (the write is kept and tried
    again), not that it refused the statement (an integrity error: the write fails)."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    seen: BaseException | None = error
    for _ in range(4):  # the driver's own error is under SQLAlchemy's (and its adapter's)
        if seen is None:
            break
        if isinstance(seen, OSError):  # refused, reset, timed out on connect
            return True
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_AWAY_STATES):
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class CallRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = sessionmaker(engine)
        self._writes = GroupCommit(engine)

    @property
    def waiting(self) -> int:
        """Writes not written yet: more than a few only while the database is away."""
        return self._writes.waiting

    async def close(self, timeout: float) -> None:
        """At shutdown: the writes held (the database away) are written if it comes back."""
        await self._writes.close(timeout)

    async def callback_call(self, callback_id: str) -> str | None:
        """The record of the call that asked for this callback."""
        async with self._sessions() as session:
            callback = await session.get(Callback, callback_id)
            return callback.call_id if callback else None

    async def started(self, call: CallData, at: datetime) -> None:
        await self._writes.write(insert(CALLS).values(
            id=call.record_id,
            channel_id=call.channel_id,
            did=call.did,
            caller=call.caller,
            line=call.line,
            district=call.district,
            language=call.language,
            path=list(call.path),
            started_at=at,
            dialplan_version=call.dialplan_version or None,
            callback_of=call.callback_of or None,
        ))

    async def answered(self, call: CallData, at: datetime) -> None:
        await self._update(call.record_id, answered_at=at)

    async def ended(self, call: CallData, at: datetime) -> None:
        queued_at = datetime.fromisoformat(call.queued_at) if call.queued_at else None
        waited_until = (datetime.fromisoformat(call.talk_started_at) if call.talk_started_at
                        else at)
        await self._update(
            call.record_id,
            ended_at=at,
            outcome=call.outcome,
            hangup_cause=call.hangup_cause or None,
            path=list(call.path),
            language=call.language,
            queue=call.queue or None,
            agent=call.agent or None,
            queued_at=queued_at,
            callback_of=call.callback_of or None,
            bot=call.bot.summary() if call.bot.topic else None,
            wait_seconds=round((waited_until - queued_at).total_seconds(), 2)
            if queued_at else None,
        )

    async def event(self, call: CallData, kind: str, agent: str = "", detail: str = "") -> None:
        """One step of the call's timeline (queue entry, offer, answer, no answer...)."""
        await self._writes.write(insert(EVENTS).values(
            call_id=call.record_id, kind=kind, agent=agent or None, detail=detail))

    async def _update(self, record_id: str, **values: object) -> None:
        await self._writes.write(
            update(CALLS).where(CALLS.c.id == record_id).values(**values))

    async def callback_requested(self, call: CallData, callback_id: str) -> None:
        await self._writes.write(insert(CALLBACKS).values(
            id=callback_id, call_id=call.record_id, number=call.caller, queue=call.queue))

    async def callback_status(self, callback_id: str, **values: object) -> None:
        """A callback's progress: its status, attempts, agent and when it was done."""
        await self._writes.write(
            update(CALLBACKS).where(CALLBACKS.c.id == callback_id).values(**values))
