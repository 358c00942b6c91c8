"""Call records in SQL: written when a call starts, is answered and ends, with its timeline.

Hundreds of calls write at once, so writes are committed in groups: every writer still waits
until its own write is committed (nothing is reported written that is not), but the writes that
arrive together share one transaction instead of paying for one each.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from ivr.controller.store import CallData
from ivr.db import sessionmaker
from ivr.models import Callback, CallEvent, CallRecord

# The tables themselves (not the ORM classes): plain Core statements cost a fraction to build.
CALLS = cast(Table, CallRecord.__table__)
EVENTS = cast(Table, CallEvent.__table__)
CALLBACKS = cast(Table, Callback.__table__)

log = logging.getLogger(__name__)


class GroupCommit:
    """One writer task: takes every statement waiting, runs them in one transaction, and tells
    each waiting call when it is committed. A group that fails is written again one statement
    per transaction, so that one bad write fails alone."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._waiting: list[tuple[Executable, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, statement: Executable) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((statement, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting())
        await done

    async def _write_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self._commit([statement for statement, _ in group])
            except SQLAlchemyError as exc:
                if len(group) == 1:
                    _settle(group[0][1], exc)
                    continue
                log.warning("a group of %d writes failed (%s): writing them one by one",
                            len(group), exc)
                for statement, done in group:
                    try:
                        await self._commit([statement])
                    except SQLAlchemyError as one:
                        _settle(done, one)
                    else:
                        _settle(done, None)
            else:
                for _, done in group:
                    _settle(done, None)

    async def _commit(self, statements: list[Executable]) -> None:
        async with self._engine.begin() as connection:
            for statement in statements:
                await connection.execute(statement)


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # the call that waited was cancelled: its write stands anyway
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class CallRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = sessionmaker(engine)
        self._writes = GroupCommit(engine)

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
