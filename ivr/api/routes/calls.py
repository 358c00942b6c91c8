"""GET /api/calls: the most recent call records, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from ivr.api.auth import Principal, require_roles
from ivr.models import CallRecord, Role

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
    dialplan_version: int | None


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
