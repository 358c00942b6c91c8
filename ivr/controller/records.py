"""Call records in SQL: written when a call starts, is answered and ends."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ivr.controller.store import CallData
from ivr.models import Callback, CallEvent, CallRecord

log = logging.getLogger(__name__)


class CallRecords:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self._sessions

    async def callback_call(self, callback_id: str) -> str | None:
        """The record of the call that asked for this callback."""
        async with self._sessions() as session:
            callback = await session.get(Callback, callback_id)
            return callback.call_id if callback else None

    async def started(self, call: CallData, at: datetime) -> None:
        async with self._sessions() as session, session.begin():
            session.add(
                CallRecord(
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
                )
            )

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
        async with self._sessions() as session, session.begin():
            session.add(CallEvent(call_id=call.record_id, kind=kind, agent=agent or None,
                                  detail=detail))

    async def _update(self, record_id: str, **values: object) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(CallRecord).where(CallRecord.id == record_id).values(**values)
            )

    async def callback_requested(self, call: CallData, callback_id: str) -> None:
        async with self._sessions() as session, session.begin():
            session.add(Callback(id=callback_id, call_id=call.record_id, number=call.caller,
                                 queue=call.queue))
