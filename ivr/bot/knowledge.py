"""The knowledge base: the question types the callbot can answer, with their answers.

It starts from ``knowledge/seed.yaml`` (format in its header) and lives in SQL, where admins
edit it. Seeding only adds the question types the database does not have yet, so an edit made
by an admin is never overwritten by a newer seed file, and a question type an admin deleted is
remembered (``knowledge_deleted``) so that the seed does not bring it back.

Each change through the API increments ``ivr:knowledge:version`` in Redis: the controllers'
callbots compare it with the version they loaded and reload when it moved.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.asyncio import Redis
from sqlalchemy import JSON, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ivr.dialplan.model import LANGUAGES
from ivr.dialplan.source import SourceFile, read
from ivr.models import Base, utcnow

log = logging.getLogger(__name__)

# What every answer must exist in: the main line's language and the fallback of the others.
REQUIRED_ANSWER_LANGUAGES = ("ko", "en")

# Incremented at every change of the knowledge base, so that callbots know to reload it.
VERSION_KEY = "ivr:knowledge:version"


class KnowledgeError(Exception):
    """The knowledge base was refused; each problem names the entry and the field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _known_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language '{language}' (known: {', '.join(LANGUAGES)})")
    return language


class Entry(BaseModel):
    """One question type: how callers ask it, what the bot answers, who is responsible."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    topic: str = Field(min_length=1)
    skill: str = Field(min_length=1)  # the agent queue's topic when the bot hands over
    department: str = Field(min_length=1)
    contact: str = Field(pattern=r"^[0-9][0-9-]*[0-9]$")
    phrasings: dict[str, list[str]]
    answer: dict[str, str]

    @field_validator("phrasings")
    @classmethod
    def _phrasings(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for language, questions in value.items():
            _known_language(language)
            if not questions:
                raise ValueError(f"'{language}' has no phrasings")
            if any(not question.strip() for question in questions):
                raise ValueError(f"'{language}' has an empty phrasing")
        if not any(value.values()):
            raise ValueError("at least one phrasing is needed")
        return value

    @field_validator("answer")
    @classmethod
    def _answers(cls, value: dict[str, str]) -> dict[str, str]:
        for language, text in value.items():
            _known_language(language)
            if not text.strip():
                raise ValueError(f"the '{language}' answer is empty")
        missing = [language for language in REQUIRED_ANSWER_LANGUAGES if language not in value]
        if missing:
            raise ValueError(f"an answer in {' and '.join(missing)} is required")
        return value

    def answer_in(self, language: str) -> str:
        """The answer in the caller's language, else English, else Korean."""
        for choice in (language, "en", "ko"):
            if choice in self.answer:
                return self.answer[choice]
        return next(iter(self.answer.values()))


class KnowledgeEntry(Base):
    """An entry of the knowledge base as kept in SQL (and edited by admins)."""

    __tablename__ = "knowledge_entries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    topic: Mapped[str] = mapped_column(String(32), index=True)
    skill: Mapped[str] = mapped_column(String(32))
    department: Mapped[str] = mapped_column(String(128))
    contact: Mapped[str] = mapped_column(String(32))
    phrasings: Mapped[dict[str, list[str]]] = mapped_column(JSON)  # language -> questions
    answers: Mapped[dict[str, str]] = mapped_column(JSON)  # language -> answer
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @classmethod
    def from_entry(cls, entry: Entry) -> KnowledgeEntry:
        return cls(id=entry.id, topic=entry.topic, skill=entry.skill,
                   department=entry.department, contact=entry.contact,
                   phrasings={k: list(v) for k, v in entry.phrasings.items()},
                   answers=dict(entry.answer))

    def to_entry(self) -> Entry:
        return Entry(id=self.id, topic=self.topic, skill=self.skill,
                     department=self.department, contact=self.contact,
                     phrasings=self.phrasings, answer=self.answers)


class KnowledgeDeleted(Base):
    """A question type an admin deleted: the seed must not add it again at the next start."""

    __tablename__ = "knowledge_deleted"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(default=utcnow)


async def knowledge_version(redis: Redis) -> int:
    """The knowledge base's version in Redis (0 before its first change)."""
    value = await redis.get(VERSION_KEY)
    return int(value) if value is not None else 0


async def bump_knowledge_version(redis: Redis) -> int:
    """Tell the callbots that the knowledge base changed; returns the new version."""
    return int(await redis.incr(VERSION_KEY))


def menu_topics(menus_file: Path) -> list[str]:
    """The topic ids of the dialplan (``topics:`` in menus.yaml): what topic and skill may be."""
    source = read(menus_file)
    data = source.data if isinstance(source.data, dict) else {}
    topics = data.get("topics")
    if source.problems or not isinstance(topics, list):
        raise KnowledgeError([f"{menus_file.name}: no list of topics"])
    return [str(topic) for topic in topics]


def load_seed(path: Path, topics: Collection[str] | None = None) -> list[Entry]:
    """Read and check a knowledge file; KnowledgeError lists every problem found.

    With ``topics``, each entry's topic and skill must be one of them.
    """
    source = read(path)
    if source.problems:
        raise KnowledgeError([str(problem) for problem in source.problems])
    data = source.data
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise KnowledgeError([f"{source.name}:1: expected 'entries:' with a list of entries"])
    problems: list[str] = []
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(data["entries"]):
        entry = _check_entry(source, index, raw, topics, problems)
        if entry is None:
            continue
        if entry.id in seen:
            problems.append(f"{source.name}:{source.line_of(('entries', index, 'id'))}: entry "
                            f"'{entry.id}': id: already used by entry #{seen[entry.id] + 1}")
            continue
        seen[entry.id] = index
        entries.append(entry)
    if problems:
        raise KnowledgeError(problems)
    return entries


def _check_entry(source: SourceFile, index: int, raw: Any, topics: Collection[str] | None,
                 problems: list[str]) -> Entry | None:
    # Named by its id when it has one, so that the message says which question type is wrong.
    name = f"'{raw['id']}'" if isinstance(raw, dict) and raw.get("id") else f"#{index + 1}"
    where: tuple[str | int, ...] = ("entries", index)
    if not isinstance(raw, dict):
        problems.append(f"{source.name}:{source.line_of(where)}: entry {name}: not a mapping")
        return None
    try:
        entry = Entry.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            line = source.line_of((*where, *error["loc"]))
            problems.append(f"{source.name}:{line}: entry {name}: {field}: {error['msg']}")
        return None
    if topics is not None:
        for field in ("topic", "skill"):
            value = getattr(entry, field)
            if value not in topics:
                line = source.line_of((*where, field))
                problems.append(f"{source.name}:{line}: entry {name}: {field}: '{value}' is not "
                                f"a topic of the dialplan ({', '.join(topics)})")
                return None
    return entry


async def seed_knowledge(sessions: async_sessionmaker[AsyncSession], path: Path,
                         topics: Collection[str] | None = None) -> int:
    """Add the entries of the seed file that the database does not have; returns how many.

    Entries already there are left as they are (an admin may have edited them), and so are
    entries an admin deleted: they stay deleted.
    """
    entries = load_seed(path, topics)
    for attempt in range(3):
        async with sessions() as session:
            existing = set((await session.scalars(select(KnowledgeEntry.id))).all())
            deleted = set((await session.scalars(select(KnowledgeDeleted.id))).all())
            new = [entry for entry in entries
                   if entry.id not in existing and entry.id not in deleted]
            session.add_all(KnowledgeEntry.from_entry(entry) for entry in new)
            try:
                await session.commit()
            except IntegrityError:
                # Another process seeded at the same moment: look again at what is there.
                await session.rollback()
                log.info("knowledge seed raced with another process (attempt %d)", attempt + 1)
                continue
        if new:
            log.info("knowledge base: %d question types added from %s", len(new), path)
        return len(new)
    raise KnowledgeError([f"{path.name}: could not seed the knowledge base (kept conflicting)"])


async def load_entries(sessions: async_sessionmaker[AsyncSession]) -> list[Entry]:
    """Every question type in the database, by id. A broken row is logged and left out, so
    that one bad edit does not take the callbot down."""
    async with sessions() as session:
        rows = (await session.scalars(select(KnowledgeEntry).order_by(KnowledgeEntry.id))).all()
    entries = []
    for row in rows:
        try:
            entries.append(row.to_entry())
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in error["loc"]) for error in exc.errors())
            log.error("knowledge entry '%s' left out: invalid %s", row.id, fields)
    return entries
