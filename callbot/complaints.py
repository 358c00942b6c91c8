"""Complaints the callbot takes down (``callbot.intake``), kept in SQL.

A complaint is written when its intake begins, as ``incomplete``, and again at each detail
the caller confirms, so a caller who hangs up halfway leaves what they gave for an agent to
follow up. It is ``filed`` once every detail is in (the caller hears its receipt number), or
``handed_over`` when the caller could not give a detail and an agent took the call. Agents and
supervisors read them through ``/api/complaints``; an agent completes or closes one there.

The receipt number is the day and the complaint's number that day, ``MMDD-NNNN``: short enough
to read out digit by digit and to write down.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ivr.models import Base, as_utc, new_id, start_of_today, utcnow

RECEIPT_TRIES = 5  # two controllers numbering the same moment: the second takes the next


class ComplaintStatus(StrEnum):
    INCOMPLETE = "incomplete"  # the intake is going on, or the caller left halfway
    FILED = "filed"  # every detail given and confirmed
    HANDED_OVER = "handed_over"  # a detail could not be had: an agent took the call
    CLOSED = "closed"  # an agent followed it up


class Complaint(Base):
    __tablename__ = "complaints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    receipt: Mapped[str] = mapped_column(String(16), unique=True, index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # illegal_parking, large_waste
    status: Mapped[str] = mapped_column(String(16), index=True)
    district: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    language: Mapped[str] = mapped_column(String(8))
    details: Mapped[dict[str, str]] = mapped_column(JSON)  # place, vehicle, when, item...
    transcript: Mapped[list[str]] = mapped_column(JSON)
    call_record_id: Mapped[str] = mapped_column(String(32), index=True)
    note: Mapped[str] = mapped_column(String(1000), default="")  # an agent's follow-up
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def as_dict(self) -> dict[str, Any]:
        return {"receipt": self.receipt, "kind": self.kind, "status": self.status,
                "district": self.district, "language": self.language,
                "details": dict(self.details), "transcript": list(self.transcript),
                "call_record_id": self.call_record_id, "note": self.note,
                "created_at": as_utc(self.created_at), "updated_at": as_utc(self.updated_at)}


async def open_complaint(sessions: async_sessionmaker[AsyncSession], kind: str,
                         district: str | None, language: str, call_record_id: str) -> str:
    """A new incomplete complaint; its receipt number."""
    for _ in range(RECEIPT_TRIES):
        async with sessions() as session:
            today = start_of_today()
            count = await session.scalar(select(func.count()).select_from(Complaint).where(
                Complaint.created_at >= today)) or 0
            receipt = f"{today.astimezone():%m%d}-{count + 1:04d}"
            session.add(Complaint(receipt=receipt, kind=kind,
                                  status=ComplaintStatus.INCOMPLETE, district=district,
                                  language=language, details={}, transcript=[],
                                  call_record_id=call_record_id))
            try:
                await session.commit()
            except IntegrityError:
                continue  # another call took that number a moment ago
            return receipt
    raise RuntimeError("no free receipt number")


async def save_complaint(sessions: async_sessionmaker[AsyncSession], receipt: str, *,
                         details: dict[str, str], transcript: list[str],
                         status: ComplaintStatus | None = None,
                         district: str | None = None) -> None:
    """The complaint's details and transcript as they are now (and its status, if it moved)."""
    async with sessions() as session:
        complaint = await session.scalar(select(Complaint).where(Complaint.receipt == receipt))
        if complaint is None:
            return
        complaint.details = dict(details)
        complaint.transcript = list(transcript)
        if status is not None:
            complaint.status = status
        if district and not complaint.district:
            complaint.district = district
        await session.commit()
