"""GET /api/calls: the most recent call records, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from ivr.api.auth import Principal, require_roles
from ivr.models import CallEvent, CallRecord, Role, aware

router = APIRouter(prefix="/api/calls", tags=["calls"])


class CallOut(BaseModel):
    id: str
    channel_id: str
    did: str
    caller: str
    line: str | None
    district: str | None
    language: str | None
    path: list[str]
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    outcome: str
    hangup_cause: str | None
    queue: str | None
    agent: str | None
    queued_at: datetime | None
    wait_seconds: float | None
    dialplan_version: int | None
    callback_of: str | None  # for a callback: the call that asked for it
    bot: dict[str, Any] | None = None  # the callbot's transcript, question type, confidence,
    # whether it resolved the call or why it handed over


class CallEventOut(BaseModel):
    at: datetime
    kind: str
    agent: str | None
    detail: str


class CallDetailOut(CallOut):
    events: list[CallEventOut]


@router.get("", response_model=list[CallOut], summary="Recent calls, newest first")
async def list_calls(
    request: Request,
    _: Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SUPERVISOR))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[CallOut]:
    async with request.app.state.sessions() as session:
        rows = await session.scalars(
            select(CallRecord).order_by(CallRecord.started_at.desc()).limit(limit)
        )
        return [CallOut.model_validate(row.as_dict()) for row in rows]


@router.get("/{call_id}", response_model=CallDetailOut, summary="One call with its timeline")
async def get_call(
    request: Request,
    call_id: str,
    _: Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SUPERVISOR))],
) -> CallDetailOut:
    async with request.app.state.sessions() as session:
        record = await session.get(CallRecord, call_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no call {call_id}")
        events = await session.scalars(
            select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.id))
        timeline = [CallEventOut(at=aware(e.at), kind=e.kind, agent=e.agent, detail=e.detail)
                    for e in events]
    return CallDetailOut.model_validate({**record.as_dict(), "events": timeline})
