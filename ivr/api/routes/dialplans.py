"""Admins edit the dialplan: view, edit, check, diff against the live version, publish, history,
roll back. Publishing goes live without a restart: the next call takes the new version.

Edits go to the working copy (``ivr.dialplan.drafts``); a file with problems is refused with
the file, line and reason, and nothing is written. Supervisors may look, not change.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from ivr.api.audit import record_change
from ivr.api.auth import Principal, require_roles
from ivr.dialplan import drafts
from ivr.dialplan.check import CheckResult
from ivr.dialplan.source import Problem
from ivr.dialplan.versions import DialplanRefused
from ivr.models import DialplanVersion, Role, aware

router = APIRouter(prefix="/api/dialplans", tags=["dialplans"])

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
Viewer = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SUPERVISOR))]

# One edit or publication at a time: each checks the working copy as a whole.
working_copy_lock = asyncio.Lock()


class ProblemOut(BaseModel):
    file: str
    line: int
    reason: str


class CheckOut(BaseModel):
    ok: bool
    problems: list[ProblemOut]
    warnings: list[str]


class FileIn(BaseModel):
    text: str = Field(max_length=1_000_000)


class ChangesIn(BaseModel):
    files: dict[str, str] = Field(default_factory=dict,
                                  description="file name -> text, checked as if written")


class PublishIn(BaseModel):
    note: str = Field(default="", max_length=256)


class VersionOut(BaseModel):
    id: int
    published_at: datetime
    author: str
    note: str
    live: bool


class PublishOut(BaseModel):
    version: int
    created: bool = Field(description="False: identical to the live version, nothing new")
    warnings: list[str]


class RollbackIn(BaseModel):
    note: str = Field(default="", max_length=256)
    discard_draft: bool = Field(
        default=False, description="the working copy has unpublished edits: lose them")


def _problems(problems: list[Problem]) -> list[ProblemOut]:
    return [ProblemOut(file=p.file, line=p.line, reason=p.reason) for p in problems]


def _check_out(result: CheckResult) -> CheckOut:
    return CheckOut(ok=result.ok, problems=_problems(result.problems), warnings=result.warnings)


def refused(problems: list[Problem]) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail={
        "message": "refused: the live dialplan is unchanged",
        "problems": [p.model_dump() for p in _problems(problems)]})


async def _live_sources(request: Request) -> tuple[int | None, dict[str, str]]:
    versions = request.app.state.dialplans
    live = await versions.live_id()
    if live is None:
        return None, {}
    async with request.app.state.sessions() as session:
        row = await session.get(DialplanVersion, live)
    return live, dict(row.sources) if row else {}


@router.get("/files", summary="The working copy: every file and its text")
async def files(request: Request, principal: Viewer) -> dict[str, str]:
    return drafts.read_files(request.app.state.settings)


@router.put("/files/{name}", response_model=CheckOut,
            summary="Replace a file of the working copy (refused if the dialplan would break)")
async def put_file(request: Request, name: str, body: FileIn, principal: Admin) -> CheckOut:
    settings = request.app.state.settings
    async with working_copy_lock:
        try:
            result = await asyncio.to_thread(drafts.write, settings, {name: body.text})
        except drafts.UnknownFile as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    if not result.ok:
        raise refused(result.problems)
    await record_change(request, principal, "dialplan.edit", name,
                        {"bytes": len(body.text.encode())})
    return _check_out(result)


@router.post("/check", response_model=CheckOut,
             summary="Check the working copy, or it with some files changed (nothing written)")
async def check(request: Request, body: ChangesIn, principal: Viewer) -> CheckOut:
    try:
        result = await asyncio.to_thread(drafts.check, request.app.state.settings, body.files)
    except drafts.UnknownFile as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return _check_out(result)


@router.get("/diff", summary="What publishing would change: the live version -> working copy")
async def diff(request: Request, principal: Viewer) -> dict[str, object]:
    live, sources = await _live_sources(request)
    text = drafts.diff(sources, drafts.read_files(request.app.state.settings))
    return {"live_version": live, "changed": bool(text), "diff": text}


@router.post("/publish", response_model=PublishOut,
             summary="Make the working copy live (the next call takes it)")
async def publish(request: Request, body: PublishIn, principal: Admin) -> PublishOut:
    state = request.app.state
    async with working_copy_lock:
        try:
            published = await state.dialplans.publish_files(state.settings, principal.username,
                                                            body.note)
        except DialplanRefused as exc:
            raise refused(exc.problems) from exc
    if published.created:
        await record_change(request, principal, "dialplan.publish",
                            f"version {published.dialplan.version}", {"note": body.note})
    return PublishOut(version=published.dialplan.version, created=published.created,
                      warnings=published.warnings)


@router.get("/versions", response_model=list[VersionOut], summary="Published versions")
async def versions(request: Request, principal: Viewer, limit: int = 50) -> list[VersionOut]:
    live = await request.app.state.dialplans.live_id()
    async with request.app.state.sessions() as session:
        rows = (await session.scalars(select(DialplanVersion).order_by(
            DialplanVersion.id.desc()).limit(max(1, min(limit, 500))))).all()
    return [VersionOut(id=row.id, published_at=aware(row.published_at), author=row.author,
                       note=row.note, live=row.id == live) for row in rows]


# A version number as SQL keeps it: a larger one is refused (422), not a server error.
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/versions/{version}", summary="The files of a published version")
async def version_files(request: Request, version: VersionNumber,
                        principal: Viewer) -> dict[str, str]:
    async with request.app.state.sessions() as session:
        row = await session.get(DialplanVersion, version)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dialplan version {version}")
    return dict(row.sources)


@router.post("/versions/{version}/rollback", response_model=PublishOut,
             summary="Put an older version's files back and publish them")
async def rollback(request: Request, version: VersionNumber, body: RollbackIn,
                   principal: Admin) -> PublishOut:
    state = request.app.state
    async with state.sessions() as session:
        row = await session.get(DialplanVersion, version)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dialplan version {version}")
    _, live_sources = await _live_sources(request)
    if drafts.read_files(state.settings) != live_sources and not body.discard_draft:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            "the working copy has unpublished edits: publish them first, or "
                            "roll back with discard_draft: true")
    async with working_copy_lock:
        result = await asyncio.to_thread(drafts.write, state.settings, dict(row.sources))
        if not result.ok:  # an old version that no longer fits (e.g. a prompt file changed)
            raise refused(result.problems)
        note = body.note or f"rollback to version {version}"
        published = await state.dialplans.publish_files(state.settings, principal.username,
                                                        note)
    await record_change(request, principal, "dialplan.rollback", f"version {version}",
                        {"new_version": published.dialplan.version})
    return PublishOut(version=published.dialplan.version, created=published.created,
                      warnings=published.warnings)
