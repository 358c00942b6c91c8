"""The agent desktop's own data: consultation records written in wrap-up, the agent's
callbacks, and their figures for today.

A consultation record belongs to a call; the agent who took the call writes it (a supervisor
or admin may too). Writing it again replaces the agent's earlier one for that call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from ivr.api.auth import Principal, require_roles
from ivr.models import (
    Callback,
    CallEvent,
    CallRecord,
    ConsultationRecord,
    Role,
    as_utc,
    start_of_today,
)

router = APIRouter(tags=["agent desk"])

AnyRole = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.SUPERVISOR, Role.ADMIN))]
AgentOnly = Annotated[Principal, Depends(require_roles(Role.AGENT))]

Resolution = Literal["resolved", "transferred", "callback_needed", "unresolved"]


class ConsultationIn(BaseModel):
    category: str = Field(min_length=1, max_length=64, examples=["water"])
    notes: str = Field(default="", max_length=10_000)
    resolution: Resolution
    question_type: str | None = Field(default=None, max_length=64,
                                      description="the knowledge base's question type, if any")


@router.put("/api/calls/{call_id}/consultation", summary="Write the consultation record of a call")
async def write_consultation(request: Request, call_id: str, body: ConsultationIn,
                             principal: AnyRole) -> dict[str, Any]:
    async with request.app.state.sessions() as session, session.begin():
        call = await session.get(CallRecord, call_id)
        if call is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no call {call_id}")
        if principal.role == Role.AGENT:
            agents = set((await session.scalars(select(CallEvent.agent).where(
                CallEvent.call_id == call_id, CallEvent.kind == "answered"))).all())
            if principal.username not in agents | {call.agent}:
                raise HTTPException(status.HTTP_403_FORBIDDEN,
                                    "only an agent who took the call writes its record")
        record = await session.scalar(select(ConsultationRecord).where(
            ConsultationRecord.call_id == call_id,
            ConsultationRecord.agent == principal.username))
        if record is None:
            record = ConsultationRecord(call_id=call_id, agent=principal.username,
                                        category=body.category, resolution=body.resolution)
            session.add(record)
        record.category, record.notes = body.category, body.notes
        record.resolution, record.question_type = body.resolution, body.question_type
        record.written_at = datetime.now(UTC)
        await session.flush()
        written: dict[str, Any] = record.as_dict()
    return written


@router.get("/api/calls/{call_id}/consultation", summary="The consultation records of a call")
async def read_consultation(request: Request, call_id: str,
                            principal: AnyRole) -> list[dict[str, Any]]:
    async with request.app.state.sessions() as session:
        rows = (await session.scalars(select(ConsultationRecord).where(
            ConsultationRecord.call_id == call_id).order_by(ConsultationRecord.id))).all()
    return [row.as_dict() for row in rows]


@router.get("/api/desk/callbacks", summary="The signed-in agent's callbacks")
async def my_callbacks(request: Request, principal: AgentOnly) -> list[dict[str, Any]]:
    async with request.app.state.sessions() as session:
        rows = (await session.scalars(select(Callback).where(
            Callback.agent == principal.username).order_by(Callback.requested_at.desc())
            .limit(100))).all()
    return [{"id": row.id, "number": row.number, "queue": row.queue, "status": row.status,
             "attempts": row.attempts, "requested_at": as_utc(row.requested_at),
             "done_at": as_utc(row.done_at)} for row in rows]


@router.get("/api/desk/today", summary="The signed-in agent's figures for today")
async def my_day(request: Request, principal: AgentOnly) -> dict[str, Any]:
    since = start_of_today()
    async with request.app.state.sessions() as session:
        calls = (await session.scalars(select(CallRecord).where(
            CallRecord.agent == principal.username, CallRecord.started_at >= since))).all()
        written = (await session.scalars(select(ConsultationRecord).where(
            ConsultationRecord.agent == principal.username,
            ConsultationRecord.written_at >= since))).all()
    talk = [(call.ended_at - call.answered_at).total_seconds() for call in calls
            if call.ended_at and call.answered_at]
    waits = [call.wait_seconds for call in calls if call.wait_seconds is not None]
    return {"agent": principal.username, "calls": len(calls),
            "average_call_s": round(sum(talk) / len(talk), 1) if talk else None,
            "average_wait_s": round(sum(waits) / len(waits), 1) if waits else None,
            "consultation_records": len(written),
            "resolved": sum(record.resolution == "resolved" for record in written)}
