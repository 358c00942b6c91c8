"""The callbot's knowledge base, edited by admins: question types, how callers ask them, and
what the bot answers.

A change is checked like the seed file (answers in ko and en, topic and skill from the live
dialplan), written to the audit log, and used at once: by ``POST /api/bot/ask`` in this process,
and by the controllers' callbots from their next call on (``ivr:knowledge:version`` in Redis,
see ``Callbot.refresh``). A deleted question type is remembered, so the seed file does not bring
it back at the next start.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from callbot.knowledge import (
    Entry,
    KnowledgeDeleted,
    KnowledgeEntry,
    KnowledgeSynonym,
    bump_knowledge_version,
    load_synonyms,
    synonym_problem,
)
from callbot.service import load_understanding
from ivr.api.audit import record_change
from ivr.api.auth import Principal, require_roles
from ivr.api.errors import field_errors
from ivr.models import Role, aware

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/knowledge", tags=["knowledge base"])

AnyRole = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.SUPERVISOR, Role.ADMIN))]
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


class EntryContent(BaseModel):
    """What a question type says. Checked with the knowledge base's own rules (``Entry``)."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(description="the menu topic it belongs to", examples=["water"])
    title: dict[str, str] = Field(
        default_factory=dict,
        description="language -> a short name, for the bot's confirming question",
        examples=[{"ko": "수도관 누수", "en": "a burst water pipe"}])
    skill: str = Field(description="the agent queue's topic when the bot hands over",
                       examples=["water"])
    department: str = Field(examples=["상수도사업본부 요금과"])
    contact: str = Field(examples=["02-120"])
    phrasings: dict[str, list[str]] = Field(
        description="language -> how callers ask it",
        examples=[{"ko": ["수도관이 터졌어요"], "en": ["a water pipe burst"]}])
    answer: dict[str, str] = Field(
        description="language -> the bot's answer; ko and en are required",
        examples=[{"ko": "누수 신고는 120으로 하세요.", "en": "Report a leak by calling 120."}])


class NewEntry(EntryContent):
    id: str = Field(description="lower-case letters, digits and _", examples=["water_leak"])


class EntryOut(NewEntry):
    updated_at: datetime | None


def _content(row: KnowledgeEntry) -> dict[str, Any]:
    return {"topic": row.topic, "title": row.titles or {}, "skill": row.skill,
            "department": row.department, "contact": row.contact, "phrasings": row.phrasings,
            "answer": row.answers}


def _out(row: KnowledgeEntry) -> EntryOut:
    return EntryOut(id=row.id, updated_at=aware(row.updated_at) if row.updated_at else None,
                    **_content(row))


def _searchable(entry: EntryOut) -> str:
    phrasings = [text for texts in entry.phrasings.values() for text in texts]
    return "\n".join([entry.id, entry.department, entry.contact, *phrasings,
                      *entry.answer.values()]).casefold()


async def _live_topics(request: Request) -> list[str]:
    try:
        plan = await request.app.state.dialplans.live()
    except LookupError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return list(plan.topics)


async def _checked(request: Request, entry_id: str, content: EntryContent) -> Entry:
    """The entry as the callbot will load it, or 422 naming each wrong field."""
    try:
        entry = Entry.model_validate({"id": entry_id, **content.model_dump()})
    except ValidationError as exc:
        raise field_errors([(error["loc"], error["msg"]) for error in exc.errors()]) from exc
    topics = await _live_topics(request)
    # The bot hands over to the skill's queue: both must exist in what callers get now.
    wrong = [((field,), f"'{getattr(entry, field)}' is not a topic of the live dialplan "
                        f"({', '.join(topics)})")
             for field in ("topic", "skill") if getattr(entry, field) not in topics]
    if wrong:
        raise field_errors(wrong)
    return entry


async def _row(request: Request, entry_id: str) -> KnowledgeEntry:
    async with request.app.state.sessions() as session:
        row: KnowledgeEntry | None = await session.get(KnowledgeEntry, entry_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no question type {entry_id!r}")
    return row


async def _changed(request: Request) -> None:
    """Use the knowledge base as it is now: here at once, in the controllers at their next
    call."""
    state = request.app.state
    # One rebuild at a time, each from SQL after its change: the last one is always current.
    async with state.knowledge_lock:
        _, state.understanding = await load_understanding(state.settings, state.sessions)
    try:
        await bump_knowledge_version(state.redis)
    except RedisError as exc:
        # Saved in SQL all the same; the callbots reload at the next change or restart.
        log.error("knowledge base changed but the callbots were not told (Redis: %s)", exc)


@router.get("", response_model=list[EntryOut], summary="The question types, by id")
async def list_entries(
    request: Request,
    principal: AnyRole,
    topic: Annotated[str | None, Query(description="only this topic")] = None,
    q: Annotated[str | None, Query(description="text in the id, department, phrasings or "
                                   "answers (any case)")] = None,
) -> list[EntryOut]:
    query = select(KnowledgeEntry).order_by(KnowledgeEntry.id)
    if topic:
        query = query.where(KnowledgeEntry.topic == topic)
    async with request.app.state.sessions() as session:
        rows = list(await session.scalars(query))
    entries = [_out(row) for row in rows]
    if q:
        # Filtered here, not in SQL: JSON columns differ between SQLite and PostgreSQL, and
        # the knowledge base is a few hundred entries.
        needle = q.casefold()
        entries = [entry for entry in entries if needle in _searchable(entry)]
    return entries


class Synonym(BaseModel):
    """A word callers use, and what the knowledge base calls it."""

    model_config = ConfigDict(extra="forbid")

    meaning: str = Field(description="the knowledge base's words for it", examples=["수도 요금"])


class SynonymOut(Synonym):
    word: str = Field(examples=["물값"])


@router.get("/synonyms", response_model=list[SynonymOut],
            summary="The colloquial words the bot reads as what they mean")
async def list_synonyms(request: Request, principal: AnyRole) -> list[SynonymOut]:
    synonyms = await load_synonyms(request.app.state.sessions)
    return [SynonymOut(word=word, meaning=meaning) for word, meaning in sorted(synonyms.items())]


@router.put("/synonyms/{word}", response_model=SynonymOut,
            summary="Add or change a colloquial word (admin)")
async def put_synonym(request: Request, word: str, body: Synonym,
                      principal: Admin) -> SynonymOut:
    problem = synonym_problem(word, body.meaning)
    if problem:
        raise field_errors([(("meaning",) if "meaning" in problem else ("word",), problem)])
    word, meaning = word.strip(), body.meaning.strip()
    async with request.app.state.sessions() as session, session.begin():
        row = await session.get(KnowledgeSynonym, word)
        before = None if row is None or row.deleted else row.meaning
        if row is None:
            session.add(KnowledgeSynonym(word=word, meaning=meaning))
        else:
            row.meaning, row.deleted = meaning, False
    if before != meaning:
        await record_change(request, principal, "knowledge.synonym", word,
                            {"from": before, "to": meaning})
        await _changed(request)
    return SynonymOut(word=word, meaning=meaning)


@router.delete("/synonyms/{word}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a colloquial word (admin); the seed does not bring it back")
async def delete_synonym(request: Request, word: str, principal: Admin) -> Response:
    async with request.app.state.sessions() as session, session.begin():
        row = await session.get(KnowledgeSynonym, word)
        if row is None or row.deleted:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no synonym {word!r}")
        removed = row.meaning
        row.deleted = True
    await record_change(request, principal, "knowledge.synonym", word,
                        {"from": removed, "to": None})
    await _changed(request)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{entry_id}", response_model=EntryOut, summary="One question type")
async def get_entry(request: Request, entry_id: str, principal: AnyRole) -> EntryOut:
    return _out(await _row(request, entry_id))


@router.post("", response_model=EntryOut, status_code=status.HTTP_201_CREATED,
             summary="Add a question type (admin)")
async def create_entry(request: Request, body: NewEntry, principal: Admin) -> EntryOut:
    entry = await _checked(request, body.id, body)
    exists = HTTPException(status.HTTP_409_CONFLICT,
                           f"question type {entry.id!r} exists already: PUT changes it")
    try:
        async with request.app.state.sessions() as session, session.begin():
            if await session.get(KnowledgeEntry, entry.id) is not None:
                raise exists
            session.add(KnowledgeEntry.from_entry(entry))
            # Made again after a deletion: it is no longer a deleted one.
            await session.execute(delete(KnowledgeDeleted).where(KnowledgeDeleted.id == entry.id))
    except IntegrityError as exc:  # added by another admin at the same moment
        raise exists from exc
    await record_change(request, principal, "knowledge.create", entry.id,
                        entry.model_dump(exclude={"id"}))
    await _changed(request)
    return _out(await _row(request, entry.id))


@router.put("/{entry_id}", response_model=EntryOut, summary="Change a question type (admin)")
async def update_entry(request: Request, entry_id: str, body: EntryContent,
                       principal: Admin) -> EntryOut:
    entry = await _checked(request, entry_id, body)
    async with request.app.state.sessions() as session, session.begin():
        row = await session.get(KnowledgeEntry, entry_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no question type {entry_id!r}")
        before = _content(row)
        new = KnowledgeEntry.from_entry(entry)
        for column in ("topic", "titles", "skill", "department", "contact", "phrasings",
                       "answers"):
            setattr(row, column, getattr(new, column))
        after = _content(row)
    changes = {field: {"from": before[field], "to": after[field]}
               for field in before if before[field] != after[field]}
    if changes:
        await record_change(request, principal, "knowledge.update", entry_id, changes)
        await _changed(request)
    return _out(await _row(request, entry_id))


@router.delete("/{entry_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a question type (admin); the seed does not bring it back")
async def delete_entry(request: Request, entry_id: str, principal: Admin) -> Response:
    async with request.app.state.sessions() as session, session.begin():
        row = await session.get(KnowledgeEntry, entry_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no question type {entry_id!r}")
        removed = _content(row)
        await session.delete(row)
        await session.merge(KnowledgeDeleted(id=entry_id))
    # The whole entry goes to the audit log, so that it can be made again if need be.
    await record_change(request, principal, "knowledge.delete", entry_id, removed)
    await _changed(request)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
