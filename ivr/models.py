"""Durable records, kept in SQL: users of the API and the record of every call."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def start_of_today() -> datetime:
    """Midnight of today in the server's time zone (as UTC): "today" in figures."""
    now = datetime.now(UTC).astimezone()
    return now.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes: they were stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def as_utc(moment: datetime | None) -> str | None:
    """ISO 8601 with its zone."""
    return None if moment is None else aware(moment).isoformat()


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


class Role(StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Server defaults too: init_schema adds these columns to a users table made before them.
    display_name: Mapped[str] = mapped_column(String(128), default="", server_default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class Agent(Base):
    """An agent: their SIP account (for the softphone), skills and languages.

    Only the digest of the SIP password is kept (MD5 of user:realm:password, what SIP digest
    authentication needs); the password itself is shown once, when it is made.
    """

    __tablename__ = "agents"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)  # the SIP user too
    name: Mapped[str] = mapped_column(String(128))
    skills: Mapped[dict[str, int]] = mapped_column(JSON)  # topic -> proficiency 1-5
    languages: Mapped[list[str]] = mapped_column(JSON)
    sip_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DialplanVersion(Base):
    """One published version of the dialplan: what callers heard from `published_at` on."""

    __tablename__ = "dialplan_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    published_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    author: Mapped[str] = mapped_column(String(64), default="")
    note: Mapped[str] = mapped_column(String(256), default="")
    checksum: Mapped[str] = mapped_column(String(64), index=True)
    sources: Mapped[dict[str, str]] = mapped_column(JSON)  # file name -> text, as edited
    bundle: Mapped[str] = mapped_column(Text)  # the checked Dialplan, as JSON


class DialledNumber(Base):
    """A number of the live dialplan (dids.yaml), rewritten at each publish: the cluster's SIP
    edge refuses a call for any other number before a node sees it."""

    __tablename__ = "dialplan_numbers"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)


class CallEvent(Base):
    """One step of a call's timeline: queued, offered, answered, no answer, abandoned..."""

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(32), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    agent: Mapped[str | None] = mapped_column(String(64), default=None)
    detail: Mapped[str] = mapped_column(String(256), default="")


class Callback(Base):
    """A caller who chose to be called back, keeping their place in line."""

    __tablename__ = "callbacks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # "cb-..." in the queue
    call_id: Mapped[str] = mapped_column(String(32), index=True)  # the call that asked
    number: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="waiting")  # done, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    agent: Mapped[str | None] = mapped_column(String(64), default=None)
    done_at: Mapped[datetime | None] = mapped_column(default=None)


class CallOutcome(StrEnum):
    """How a call ended."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"  # the server finished the call's service and hung up
    CALLER_HUNG_UP = "caller_hung_up"
    NOT_IN_SERVICE = "not_in_service"
    ANSWERED = "answered"  # talked with an agent
    ABANDONED = "abandoned"  # hung up while waiting in a queue
    NO_AGENTS = "no_agents"  # reached a queue that no logged-in agent could serve
    CALLBACK = "callback"  # chose to be called back, keeping the place in line
    TRANSFERRED = "transferred"  # an agent passed the call to a department outside
    RESOLVED_BY_BOT = "resolved_by_bot"  # the callbot answered and the caller said that was all
    FAILED = "failed"  # the server could not serve the call (an error, reported in the log)
    UNOBSERVED_END = "unobserved_end"  # ended while no controller was listening
    CUT = "cut"  # the node carrying the call died: its Asterisk started again without it


class CallRecord(Base):
    """One call, from the first ring to the hang-up."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    channel_id: Mapped[str] = mapped_column(String(64), index=True)
    did: Mapped[str] = mapped_column(String(32))
    caller: Mapped[str] = mapped_column(String(64), default="")
    line: Mapped[str | None] = mapped_column(String(32), default=None)
    district: Mapped[str | None] = mapped_column(String(32), default=None)
    language: Mapped[str | None] = mapped_column(String(8), default=None)
    path: Mapped[list[str]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    outcome: Mapped[str] = mapped_column(String(32), default=CallOutcome.IN_PROGRESS)
    hangup_cause: Mapped[str | None] = mapped_column(String(64), default=None)
    queue: Mapped[str | None] = mapped_column(String(64), default=None)  # topic:language
    agent: Mapped[str | None] = mapped_column(String(64), default=None)
    queued_at: Mapped[datetime | None] = mapped_column(default=None)
    wait_seconds: Mapped[float | None] = mapped_column(default=None)
    dialplan_version: Mapped[int | None] = mapped_column(Integer, default=None)
    callback_of: Mapped[str | None] = mapped_column(String(32), default=None)  # the call that asked
    bot: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # what the callbot did

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel_id": self.channel_id,
            "did": self.did,
            "caller": self.caller,
            "line": self.line,
            "district": self.district,
            "language": self.language,
            "path": list(self.path or []),
            "started_at": as_utc(self.started_at),
            "answered_at": as_utc(self.answered_at),
            "ended_at": as_utc(self.ended_at),
            "outcome": self.outcome,
            "hangup_cause": self.hangup_cause,
            "queue": self.queue,
            "agent": self.agent,
            "queued_at": as_utc(self.queued_at),
            "wait_seconds": self.wait_seconds,
            "dialplan_version": self.dialplan_version,
            "callback_of": self.callback_of,
            "bot": self.bot,
        }


class AuditEntry(Base):
    """One change made through the API: who, when, what (``ivr.api.audit``)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64), index=True)  # e.g. "dialplan.publish"
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": as_utc(self.at), "username": self.username,
                "role": self.role, "action": self.action, "target": self.target,
                "detail": self.detail}


class ConsultationRecord(Base):
    """What the agent wrote about a call (in wrap-up): category, notes, how it ended."""

    __tablename__ = "consultation_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(32), index=True)  # the call record
    agent: Mapped[str] = mapped_column(String(64), index=True)
    category: Mapped[str] = mapped_column(String(64))  # a topic id, or a finer category
    notes: Mapped[str] = mapped_column(Text, default="")
    resolution: Mapped[str] = mapped_column(String(32))  # resolved, transferred, ...
    question_type: Mapped[str | None] = mapped_column(String(64), default=None)
    written_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "call_id": self.call_id, "agent": self.agent,
                "category": self.category, "notes": self.notes,
                "resolution": self.resolution, "question_type": self.question_type,
                "written_at": as_utc(self.written_at)}
