"""The knowledge base: the question types the callbot can answer, with their answers.

It starts from ``knowledge/seed/*.yaml`` (one file per topic; format in
``knowledge/README.md``) and lives in SQL, where admins edit it. Seeding only adds the
question types the database does not have yet, so an edit made by an admin is never
overwritten by a newer seed file, and a question type an admin deleted is remembered
(``knowledge_deleted``) so that the seed does not bring it back.

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


def _texts(value: dict[str, str], what: str) -> dict[str, str]:
    """A text per language: known languages, none empty."""
    for language, text in value.items():
        _known_language(language)
        if not text.strip():
            raise ValueError(f"the '{language}' {what} is empty")
    return value


class Entry(BaseModel):
    """One question type: how callers ask it, what the bot answers, who is responsible."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    topic: str = Field(min_length=1)
    skill: str = Field(min_length=1)  # the agent queue's topic when the bot hands over
    department: str = Field(min_length=1)
    contact: str = Field(pattern=r"^[0-9][0-9-]*[0-9]$")
    # language -> a short name of the question type, for the bot's confirming question
    title: dict[str, str] = Field(default_factory=dict)
    phrasings: dict[str, list[str]]
    answer: dict[str, str]

    @field_validator("title")
    @classmethod
    def _titles(cls, value: dict[str, str]) -> dict[str, str]:
        return _texts(value, "title")

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
        _texts(value, "answer")
        missing = [language for language in REQUIRED_ANSWER_LANGUAGES if language not in value]
        if missing:
            raise ValueError(f"an answer in {' and '.join(missing)} is required")
        return value

    def title_in(self, language: str) -> str:
        """The name of the question type in the caller's language (else English, else its
        first phrasing): what the bot asks the caller to confirm."""
        for choice in (language, "en"):
            if choice in self.title:
                return self.title[choice]
        phrasings = self.phrasings.get(language) or self.phrasings.get("en") or [self.id]
        return phrasings[0]

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
    titles: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)  # language -> name
    phrasings: Mapped[dict[str, list[str]]] = mapped_column(JSON)  # language -> questions
    answers: Mapped[dict[str, str]] = mapped_column(JSON)  # language -> answer
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @classmethod
    def from_entry(cls, entry: Entry) -> KnowledgeEntry:
        return cls(id=entry.id, topic=entry.topic, skill=entry.skill,
                   department=entry.department, contact=entry.contact,
                   titles=dict(entry.title),
                   phrasings={k: list(v) for k, v in entry.phrasings.items()},
                   answers=dict(entry.answer))

    def to_entry(self) -> Entry:
        return Entry(id=self.id, topic=self.topic, skill=self.skill,
                     department=self.department, contact=self.contact,
                     title=self.titles or {}, phrasings=self.phrasings, answer=self.answers)


class KnowledgeSynonym(Base):
    """A word callers use (물값) and what the knowledge base calls it (수도 요금)."""

    __tablename__ = "knowledge_synonyms"

    word: Mapped[str] = mapped_column(String(64), primary_key=True)
    meaning: Mapped[str] = mapped_column(String(128))
    # Deleted by an admin: kept, so that the seed file does not bring it back.
    deleted: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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


def seed_files(path: Path) -> list[Path]:
    """The knowledge files: every ``*.yaml`` of a folder, by name, or one file."""
    if path.is_dir():
        return sorted(path.glob("*.yaml"))
    return [path]


def load_seed(path: Path, topics: Collection[str] | None = None) -> list[Entry]:
    """Read and check the knowledge files (a folder, or one file); KnowledgeError lists every
    problem found, with file and line. An id is unique across all the files.

    With ``topics``, each entry's topic and skill must be one of them.
    """
    problems: list[str] = []
    entries: list[Entry] = []
    where: dict[str, str] = {}
    for file in seed_files(path):
        try:
            found = _load_file(file, topics)
        except KnowledgeError as exc:
            problems.extend(exc.problems)
            continue
        for entry, line in found:
            if entry.id in where:
                problems.append(f"{line}: entry '{entry.id}': id: already used at "
                                f"{where[entry.id]}")
                continue
            where[entry.id] = line
            entries.append(entry)
    if not entries and not problems:
        problems.append(f"{path}: no knowledge files with entries")
    if problems:
        raise KnowledgeError(problems)
    return entries


def _load_file(path: Path, topics: Collection[str] | None) -> list[tuple[Entry, str]]:
    """The entries of one file, each with its place (file:line)."""
    source = read(path)
    if source.problems:
        raise KnowledgeError([str(problem) for problem in source.problems])
    data = source.data
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise KnowledgeError([f"{source.name}:1: expected 'entries:' with a list of entries"])
    problems: list[str] = []
    entries: list[tuple[Entry, str]] = []
    for index, raw in enumerate(data["entries"]):
        entry = _check_entry(source, index, raw, topics, problems)
        if entry is not None:
            entries.append((entry, f"{source.name}:{source.line_of(('entries', index, 'id'))}"))
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


# --- Synonyms ----------------------------------------------------------------------------------

def load_synonyms_file(path: Path) -> dict[str, str]:
    """``synonyms:`` of a file (word -> meaning); KnowledgeError with file:line for a bad pair.
    A missing file is no synonyms."""
    if not path.exists():
        return {}
    source = read(path)
    if source.problems:
        raise KnowledgeError([str(problem) for problem in source.problems])
    data = source.data if isinstance(source.data, dict) else {}
    pairs = data.get("synonyms") or {}
    if not isinstance(pairs, dict):
        raise KnowledgeError([f"{source.name}:1: expected 'synonyms:' with word: meaning pairs"])
    problems = []
    for word, meaning in pairs.items():
        problem = synonym_problem(str(word), str(meaning) if meaning is not None else "")
        if problem:
            problems.append(f"{source.name}:{source.line_of(('synonyms', word))}: {problem}")
    if problems:
        raise KnowledgeError(problems)
    return {str(word).strip(): str(meaning).strip() for word, meaning in pairs.items()}


def synonym_problem(word: str, meaning: str) -> str | None:
    """Why a synonym pair cannot be used, or None."""
    if not word.strip():
        return "the word is empty"
    if not meaning.strip():
        return f"'{word}': the meaning is empty"
    if len(word) > 64 or len(meaning) > 128:
        return f"'{word}': too long (word 64, meaning 128 characters at most)"
    if word.strip() == meaning.strip():
        return f"'{word}': the word and its meaning are the same"
    return None


async def seed_synonyms(sessions: async_sessionmaker[AsyncSession], path: Path) -> int:
    """Add the synonyms of the file that the database does not have (deleted ones stay
    deleted); returns how many."""
    pairs = load_synonyms_file(path)
    for _ in range(3):
        async with sessions() as session:
            known = set((await session.scalars(select(KnowledgeSynonym.word))).all())
            new = {word: meaning for word, meaning in pairs.items() if word not in known}
            session.add_all(KnowledgeSynonym(word=word, meaning=meaning)
                            for word, meaning in new.items())
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                continue
        return len(new)
    raise KnowledgeError([f"{path.name}: could not seed the synonyms (kept conflicting)"])


async def load_synonyms(sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    """The synonyms in use: word -> meaning."""
    async with sessions() as session:
        rows = (await session.scalars(select(KnowledgeSynonym)
                                      .where(KnowledgeSynonym.deleted.is_(False)))).all()
    return {row.word: row.meaning for row in rows}
