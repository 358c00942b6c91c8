"""Published dialplan versions: kept in SQL, the live one named in Redis.

Publishing checks the files, renders their prompts and stores the result as a new version;
the live version's id is set in Redis (``ivr:dialplan:live``), where every controller reads it
when a call starts. A call keeps the version it started with; a refused dialplan changes
nothing. Publishing files identical to the live version makes no new version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ivr.db import create_engine, init_schema, sessionmaker
from ivr.dialplan.check import CheckResult, load, offices_to_render
from ivr.dialplan.model import Dialplan
from ivr.dialplan.source import Problem
from ivr.models import DialledNumber, DialplanVersion
from ivr.prompts import render_all, voice_warnings
from ivr.redis_client import connect_redis
from ivr.settings import Settings

log = logging.getLogger(__name__)

LIVE_KEY = "ivr:dialplan:live"


class DialplanRefused(Exception):
    """The dialplan has problems; the live version stays live."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("dialplan refused:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass
class Published:
    dialplan: Dialplan
    created: bool  # False: identical to the live version, nothing new
    warnings: list[str]


def check_files(settings: Settings) -> CheckResult:
    result = load(settings.dialplans_path, settings.prompts_source_path / "prompts.yaml")
    result.warnings += voice_warnings(result.texts, settings.recordings_path,
                                      settings.tts_engine)
    return result


def _checksum(sources: dict[str, str], prompt_files: dict[str, str]) -> str:
    text = json.dumps({"sources": sources, "prompt_files": prompt_files}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class DialplanVersions:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], redis: Redis) -> None:
        self._sessions = sessions
        self._redis = redis
        self._cache: dict[int, Dialplan] = {}
        self._last_live: int | None = None

    async def publish_files(self, settings: Settings, author: str = "",
                            note: str = "") -> Published:
        """Check dialplans/ and the prompts, render them, and make the result live."""
        result = check_files(settings)
        if not result.ok or result.dialplan is None:
            raise DialplanRefused(result.problems)
        plan = result.dialplan
        rendered = render_all(
            result.texts, settings.rendered_prompts_path,
            settings.recordings_path, settings.tts_engine,
            offices_to_render(plan, result.texts))
        plan = plan.model_copy(update={"prompt_files": rendered.files,
                                       "dynamic_prompts": rendered.dynamic})
        return await self.publish(plan, result.sources, author, note, rendered.warnings)

    async def publish(self, plan: Dialplan, sources: dict[str, str], author: str, note: str,
                      warnings: list[str]) -> Published:
        checksum = _checksum(sources, plan.prompt_files)
        live = await self.live_row()
        if live is not None and live.checksum == checksum:
            await self._set_live(live.id)
            await self._announce_numbers(plan)
            return Published(await self.get(live.id), False, warnings)
        async with self._sessions() as session, session.begin():
            row = DialplanVersion(author=author, note=note, checksum=checksum,
                                  sources=sources, bundle="{}")
            session.add(row)
            await session.flush()
            plan = plan.model_copy(update={"version": row.id})
            row.bundle = plan.model_dump_json()
        await self._set_live(row.id)
        await self._announce_numbers(plan)
        self._cache[row.id] = plan
        log.info("dialplan version %d published%s", row.id, f" by {author}" if author else "")
        return Published(plan, True, warnings)

    async def _set_live(self, version_id: int) -> None:
        self._last_live = version_id
        try:
            await self._redis.set(LIVE_KEY, version_id)
        except RedisError as exc:
            log.warning("live dialplan not announced in Redis: %s", exc)

    async def _announce_numbers(self, plan: Dialplan) -> None:
        """The center's numbers, for the SIP edge of a cluster: it refuses any other number
        before a node sees the call. Replaced in one transaction: the edge never sees half."""
        async with self._sessions() as session, session.begin():
            await session.execute(delete(DialledNumber))
            session.add_all(DialledNumber(number=did.number) for did in plan.dids)

    async def live_row(self) -> DialplanVersion | None:
        async with self._sessions() as session:
            result = await session.scalar(
                select(DialplanVersion).order_by(DialplanVersion.id.desc()).limit(1))
            return result

    async def live_id(self) -> int | None:
        """The live version: Redis says it; SQL has the last published when Redis forgot."""
        try:
            value = await self._redis.get(LIVE_KEY)
            if value is not None:
                self._last_live = int(value)
                return self._last_live
        except RedisError as exc:
            log.warning("live dialplan not read from Redis (%s); using version %s", exc,
                        self._last_live)
            if self._last_live is not None:
                return self._last_live
        row = await self.live_row()
        if row is not None:
            await self._set_live(row.id)
            return row.id
        return None

    async def get(self, version_id: int) -> Dialplan:
        plan = self._cache.get(version_id)
        if plan is None:
            async with self._sessions() as session:
                row = await session.get(DialplanVersion, version_id)
            if row is None:
                raise LookupError(f"no dialplan version {version_id}")
            plan = self._cache[version_id] = Dialplan.model_validate_json(row.bundle)
        return plan

    async def live(self) -> Dialplan:
        version_id = await self.live_id()
        if version_id is None:
            raise LookupError("no dialplan has been published (ivr dialplan publish)")
        return await self.get(version_id)


async def publish_from_files(settings: Settings, author: str = "", note: str = "") -> Published:
    """Publish dialplans/ as it is on disk (``ivr dialplan publish``, ``ivr run`` at start)."""
    engine = create_engine(settings.sql_url)
    redis = connect_redis(settings)
    try:
        await init_schema(engine)
        versions = DialplanVersions(sessionmaker(engine), redis)
        return await versions.publish_files(settings, author, note)
    finally:
        await redis.aclose()
        await engine.dispose()


async def live_version_number(settings: Settings) -> int | None:
    engine = create_engine(settings.sql_url)
    redis = connect_redis(settings)
    try:
        await init_schema(engine)
        return await DialplanVersions(sessionmaker(engine), redis).live_id()
    finally:
        await redis.aclose()
        await engine.dispose()
