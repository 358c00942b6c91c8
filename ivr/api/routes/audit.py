"""GET /api/audit: the changes made through the API, newest first (admins and supervisors)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from ivr.api.auth import Principal, require_roles
from ivr.models import AuditEntry, Role

router = APIRouter(prefix="/api/audit", tags=["audit"])


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    username: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]


@router.get("", response_model=list[AuditEntryOut], summary="The audit log, newest first")
async def list_audit(
    request: Request,
    _: Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SUPERVISOR))],
    action: Annotated[str | None, Query(max_length=64,
                                        description='the start of the action, e.g. "user."')]
    = None,
    username: Annotated[str | None, Query(max_length=64, description="who made the change")]
    = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryOut]:
    query = select(AuditEntry)
    if action:
        # autoescape: a "%" or "_" in the filter is taken literally, not as a wildcard.
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    if username:
        query = query.where(AuditEntry.username == username)
    query = query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    async with request.app.state.sessions() as session:
        entries = await session.scalars(query)
        return [AuditEntryOut.model_validate(entry.as_dict()) for entry in entries]
