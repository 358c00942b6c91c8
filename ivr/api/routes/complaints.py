"""Complaints the callbot took down on calls (illegal parking, large waste), for agents to
follow up and supervisors to review: list, read one by its receipt number, and complete or
close it (audited)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from callbot.complaints import Complaint, ComplaintStatus
from callbot.intake import DISTRICTS, REPORT_KINDS
from ivr.api.audit import record_change
from ivr.api.auth import Principal, require_roles
from ivr.api.errors import field_errors
from ivr.models import Role

router = APIRouter(prefix="/api/complaints", tags=["complaints"])

Staff = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.SUPERVISOR, Role.ADMIN))]


class ComplaintOut(BaseModel):
    receipt: str = Field(examples=["1203-0042"])
    kind: str = Field(examples=["illegal_parking"])
    status: str = Field(description="incomplete, filed, handed_over or closed")
    district: str | None = Field(examples=["gangnam"])
    language: str
    details: dict[str, str] = Field(examples=[{"place": "강남구 역삼동 123 앞",
                                               "vehicle": "12가3456", "when": "now"}])
    transcript: list[str]
    call_record_id: str
    note: str
    created_at: datetime
    updated_at: datetime


class ComplaintChange(BaseModel):
    """An agent's follow-up: details completed or put right, a status, a note."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["incomplete", "filed", "handed_over", "closed"] | None = None
    details: dict[str, str] | None = Field(default=None,
                                           description="detail -> value, for the kind's details")
    district: str | None = Field(default=None, description="one of the 25 district ids")
    note: str | None = Field(default=None, max_length=1000)


async def _complaint(request: Request, receipt: str) -> Complaint:
    async with request.app.state.sessions() as session:
        complaint: Complaint | None = await session.scalar(
            select(Complaint).where(Complaint.receipt == receipt))
    if complaint is None:
        raise HTTPException(404, f"no complaint {receipt}")
    return complaint


@router.get("", response_model=list[ComplaintOut], summary="Complaints, newest first")
async def list_complaints(
    request: Request, _: Staff,
    status: Annotated[ComplaintStatus | None, Query()] = None,
    kind: Annotated[str | None, Query(examples=["illegal_parking"])] = None,
    district: Annotated[str | None, Query(examples=["gangnam"])] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[ComplaintOut]:
    query = select(Complaint).order_by(Complaint.created_at.desc()).limit(limit)
    if status is not None:
        query = query.where(Complaint.status == status)
    if kind is not None:
        query = query.where(Complaint.kind == kind)
    if district is not None:
        query = query.where(Complaint.district == district)
    async with request.app.state.sessions() as session:
        rows = await session.scalars(query)
        return [ComplaintOut.model_validate(row.as_dict()) for row in rows]


@router.get("/{receipt}", response_model=ComplaintOut, summary="One complaint")
async def get_complaint(request: Request, receipt: str, _: Staff) -> ComplaintOut:
    return ComplaintOut.model_validate((await _complaint(request, receipt)).as_dict())


def _problems(complaint: Complaint, change: ComplaintChange) -> list[tuple[tuple[str, ...], str]]:
    problems: list[tuple[tuple[str, ...], str]] = []
    known = {detail.name for detail in REPORT_KINDS[complaint.kind].details} \
        if complaint.kind in REPORT_KINDS else set()
    for name, value in (change.details or {}).items():
        if name not in known:
            problems.append((("details", name), f"not a detail of {complaint.kind} "
                                                f"(its details: {', '.join(sorted(known))})"))
        elif not value.strip():
            problems.append((("details", name), "empty"))
    if change.district is not None and change.district not in DISTRICTS:
        problems.append((("district",), f"unknown district {change.district!r}"))
    return problems


@router.patch("/{receipt}", response_model=ComplaintOut, summary="Follow a complaint up")
async def change_complaint(request: Request, receipt: str, change: ComplaintChange,
                           principal: Staff) -> ComplaintOut:
    complaint = await _complaint(request, receipt)
    if problems := _problems(complaint, change):
        raise field_errors(problems)
    before: dict[str, Any] = {"status": complaint.status, "details": dict(complaint.details),
                              "district": complaint.district, "note": complaint.note}
    async with request.app.state.sessions() as session:
        row = await session.scalar(select(Complaint).where(Complaint.receipt == receipt))
        assert row is not None
        if change.status is not None:
            row.status = change.status
        if change.details:
            row.details = {**row.details, **{k: v.strip() for k, v in change.details.items()}}
        if change.district is not None:
            row.district = change.district
        if change.note is not None:
            row.note = change.note
        await session.commit()
        after = row.as_dict()
    await record_change(request, principal, "complaint.update", receipt,
                        {"from": before, "to": {name: after[name] for name in before}})
    return ComplaintOut.model_validate(after)
