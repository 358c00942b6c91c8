"""What the controller's calls use of the callbot: the knowledge, the understanding, a
recognizer per language, answers rendered to audio (cached), and the bot's figures.

Built once per controller at start (``Callbot.start``): a recognizer that is configured but
cannot be used stops the start with a message naming the setting, never an error mid-call.
Admins' edits of the knowledge base reach it through ``Callbot.refresh``.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callbot import complaints
from callbot.audio import Utterance
from callbot.embeddings import shared_embedder
from callbot.knowledge import (
    Entry,
    knowledge_version,
    load_entries,
    load_synonyms,
    seed_knowledge,
    seed_synonyms,
)
from callbot.recognizers import (
    ModelSettings,
    Recognizer,
    build_recognizers,
    close_recognizers,
)
from callbot.understand import Match, Understanding
from ivr.prompts import Prompt, has_voice, render
from ivr.settings import Settings

log = logging.getLogger(__name__)

METRICS_KEY = "ivr:metrics:bot"
LATENCIES_KEY = "ivr:metrics:bot:latency_ms"  # end of speech -> first audio of the answer
KEEP_LATENCIES = 1000


@dataclass
class Heard:
    """One utterance, recognized."""

    text: str
    audio_seconds: float
    recognition_seconds: float
    ended_at: float  # time.monotonic() at the end of speech
    confidence: float = 1.0  # the recognizer's own (0..1)
    no_speech: float = 0.0  # how likely the audio held no speech


@dataclass
class Callbot:
    settings: Settings
    redis: Redis
    sessions: async_sessionmaker[AsyncSession]  # where the entries come from
    entries: list[Entry]
    understanding: Understanding
    recognizers: dict[str, Recognizer] = field(default_factory=dict)
    knowledge_version: int = 0  # ivr:knowledge:version when the entries were loaded
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {entry.id: entry for entry in self.entries}

    @classmethod
    async def start(cls, settings: Settings, redis: Redis,
                    sessions: async_sessionmaker[AsyncSession]) -> Callbot:
        """Seed the knowledge base (entries it lacks), load it, and build the recognizers."""
        added = await seed_all(settings, sessions)
        # Read before loading: an edit made meanwhile then shows as a newer version.
        version = await knowledge_version(redis)
        entries, understanding = await load_understanding(settings, sessions)
        models = ModelSettings(
            whisper=settings.path(settings.whisper_model) if settings.whisper_model else None,
            vosk=settings.vosk_models(), cache=settings.path(settings.model_cache),
            workers=settings.recognizer_workers,
            whisper_vocabulary=settings.whisper_vocabulary_prompt)
        recognizers = await asyncio.to_thread(
            build_recognizers, settings.bot_recognizer_choices(), models, entries)
        log.info("callbot: %d question types (%d new), recognizers: %s", len(entries), added,
                 ", ".join(f"{lang}={r.engine}" for lang, r in recognizers.items()) or "none")
        return cls(settings, redis, sessions, entries, understanding, recognizers,
                   knowledge_version=version)

    async def refresh(self) -> bool:
        """Reload the knowledge base if it changed since it was loaded (its version in Redis
        moved); returns True if it was reloaded. Cheap when nothing changed: one Redis GET.

        Never fails a call: if Redis or SQL cannot be read, the bot keeps what it has. The
        recognizers are not rebuilt (PocketSphinx's English grammar keeps its phrasings).
        """
        try:
            if await knowledge_version(self.redis) == self.knowledge_version:
                return False
            async with self._reloading:  # calls starting together reload once
                # Again: another call may have reloaded while this one waited.
                version = await knowledge_version(self.redis)
                if version == self.knowledge_version:
                    return False
                entries, understanding = await load_understanding(self.settings, self.sessions)
                self.entries = entries
                self.understanding = understanding
                self.by_id = {entry.id: entry for entry in entries}
                self.knowledge_version = version
        except (RedisError, SQLAlchemyError) as exc:
            log.warning("knowledge base not reloaded (%s): the callbot keeps what it has", exc)
            return False
        log.info("callbot: knowledge base version %d, %d question types", version, len(entries))
        return True

    def hears(self, language: str) -> bool:
        return language in self.recognizers

    def can_start_early(self, language: str) -> bool:
        """Whether a recognizer worker is free now for work that may be thrown away (an
        utterance begun at a pause): it must never delay an utterance that is over."""
        return self.recognizers[language].pool.idle() > 0

    async def recognize(self, language: str, utterance: Utterance) -> Heard:
        """What the caller said; RecognitionFailed if the utterance could not be recognized
        (its worker died, say): the call then hands over, and no other call is touched."""
        started = time.perf_counter()
        transcript = await self.recognizers[language].recognize(utterance.audio)
        took = time.perf_counter() - started
        await self.redis.hincrbyfloat(METRICS_KEY, "audio_seconds", utterance.seconds)
        await self.redis.hincrbyfloat(METRICS_KEY, "recognition_seconds", took)
        return Heard(transcript.text, utterance.seconds, took, utterance.ended_at,
                     transcript.confidence, transcript.no_speech)

    def close(self) -> None:
        close_recognizers(self.recognizers)

    async def understand(self, text: str, language: str) -> Match:
        # On a thread: the meaning of the question is computed by the embedding model.
        return await asyncio.to_thread(self.understanding.match, text, language)

    def entries_of(self, topic: str, limit: int = 5) -> list[Entry]:
        """The question types of a topic, for the keypad version's list."""
        return [entry for entry in self.entries if entry.topic == topic][:limit]

    async def speak(self, text: str, language: str) -> str:
        """A text of the moment (an answer) as media; renderings are cached by language and
        text, so a repeated answer costs nothing."""
        # A language espeak has no voice for (Mongolian) hears its answer, in English, in the
        # English voice.
        voice = "" if has_voice(language, self.settings.tts_engine) else "en"
        prompt = Prompt("bot", language, text, voice=voice)
        path: Path = await asyncio.to_thread(render, prompt, self.settings.rendered_prompts_path,
                                             self.settings.tts_engine)
        return f"sound:{path}"

    # --- Complaints taken down on calls (callbot.intake) ----------------------------------------

    async def open_complaint(self, kind: str, district: str | None, language: str,
                             call_record_id: str) -> str:
        """A new incomplete complaint; its receipt number."""
        return await complaints.open_complaint(self.sessions, kind, district, language,
                                               call_record_id)

    async def save_complaint(self, receipt: str, *, details: dict[str, str],
                             transcript: list[str],
                             status: complaints.ComplaintStatus | None = None,
                             district: str | None = None) -> None:
        await complaints.save_complaint(self.sessions, receipt, details=details,
                                        transcript=transcript, status=status,
                                        district=district)

    # --- Figures ------------------------------------------------------------------------------

    async def count(self, what: str) -> None:
        await self.redis.hincrby(METRICS_KEY, what, 1)

    async def answer_latency(self, milliseconds: float) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(LATENCIES_KEY, round(milliseconds, 1))
            pipe.ltrim(LATENCIES_KEY, 0, KEEP_LATENCIES - 1)
            await pipe.execute()


async def seed_all(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> int:
    """The question types and synonyms of the seed files that the database lacks."""
    added = await seed_knowledge(sessions, settings.knowledge_seed_path)
    await seed_synonyms(sessions, settings.knowledge_synonyms_path)
    return added


async def load_understanding(settings: Settings, sessions: async_sessionmaker[AsyncSession]
                             ) -> tuple[list[Entry], Understanding]:
    """The knowledge base as it is in SQL now, indexed for understanding (on a thread: the
    embedding model may have new phrasings to embed)."""
    entries = await load_entries(sessions)
    synonyms = await load_synonyms(sessions)
    cache = settings.path(settings.model_cache) / "e5-passages.npz"
    understanding = await asyncio.to_thread(
        lambda: Understanding(entries, synonyms, shared_embedder(cache)))
    return entries, understanding


async def bot_figures(redis: Redis) -> dict[str, float]:
    """The bot's figures so far: calls, resolved (containment), hand-offs and why, recognition
    time per second of audio, and the answer latency (median, 95th percentile)."""
    raw = cast(dict[str, str], await redis.hgetall(METRICS_KEY))
    figures = {name: float(value) for name, value in raw.items()}
    calls = figures.get("calls", 0.0)
    figures["containment"] = figures.get("resolved", 0.0) / calls if calls else 0.0
    audio = figures.get("audio_seconds", 0.0)
    figures["recognition_per_audio_second"] = (
        figures.get("recognition_seconds", 0.0) / audio if audio else 0.0)
    latencies = sorted(float(v) for v in await redis.lrange(LATENCIES_KEY, 0, -1))
    if latencies:
        figures["answer_latency_ms_p50"] = statistics.median(latencies)
        figures["answer_latency_ms_p95"] = latencies[min(len(latencies) - 1,
                                                         int(len(latencies) * 0.95))]
    return figures
