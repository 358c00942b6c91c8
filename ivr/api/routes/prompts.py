"""Admins manage prompts: list them by id and language, change a text (re-rendered by TTS),
upload a recording (WAV or MP3, converted for Asterisk), and play any of them in the browser.

Texts live in the working copy's ``prompts.yaml`` and recordings in
``audio_prompts/recordings/<lang>/<id>.wav|mp3``; callers hear a change once the dialplan is
published (``POST /api/dialplans/publish``), like any other edit.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, UploadFile, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from ivr.api.audit import record_change
from ivr.api.auth import Principal, require_roles
from ivr.api.routes.dialplans import refused, working_copy_lock
from ivr.dialplan import drafts
from ivr.dialplan.source import read
from ivr.models import Role
from ivr.prompts import (
    RECORDING_SUFFIXES,
    Prompt,
    PromptTexts,
    parse_prompt_texts,
    recording_for,
    render,
    to_telephone_wav,
)
from ivr.settings import Settings

router = APIRouter(prefix="/api/prompts", tags=["prompts"])

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
Viewer = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SUPERVISOR))]

MAX_RECORDING_BYTES = 20 * 1024 * 1024


class PromptText(BaseModel):
    text: str
    speak: str = ""
    recording: bool


class TextIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    speak: str = Field(default="", max_length=2000,
                       description="what the TTS engine says instead (pinyin, kana...)")


def _texts(settings: Settings) -> PromptTexts:
    """The working copy's prompt texts: only prompts.yaml is read (not the whole check)."""
    path = settings.prompts_source_path / drafts.PROMPTS_FILE
    texts, _ = parse_prompt_texts(read(path, drafts.PROMPTS_FILE))
    return texts


def _prompt(settings: Settings, prompt_id: str, language: str) -> Prompt:
    prompt = _texts(settings).get(prompt_id, {}).get(language)
    if prompt is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no prompt {prompt_id!r} in {language!r}")
    return prompt


@router.get("", summary="Every prompt, by id and language")
async def prompts(request: Request, principal: Viewer) -> dict[str, dict[str, PromptText]]:
    settings = request.app.state.settings
    recordings = settings.recordings_path
    texts = await asyncio.to_thread(_texts, settings)
    return {prompt_id: {language: PromptText(
        text=prompt.text, speak=prompt.speak,
        recording=recording_for(recordings, prompt_id, language) is not None)
        for language, prompt in by_language.items()}
        for prompt_id, by_language in sorted(texts.items())}


@router.get("/{prompt_id}/{language}/audio", response_class=FileResponse,
            summary="The prompt as callers would hear it (8 kHz WAV), to play in the browser")
async def audio(request: Request, prompt_id: str, language: str,
                principal: Viewer) -> FileResponse:
    settings = request.app.state.settings
    prompt = await asyncio.to_thread(_prompt, settings, prompt_id, language)
    recording = recording_for(settings.recordings_path, prompt_id, language)
    path = await asyncio.to_thread(render, prompt.fill(office="…"),
                                   settings.rendered_prompts_path, settings.tts_engine,
                                   recording)
    return FileResponse(path.with_suffix(".wav"), media_type="audio/wav")


@router.put("/{prompt_id}/{language}", summary="Change a prompt's text in one language")
async def put_text(request: Request, prompt_id: str, language: str, body: TextIn,
                   principal: Admin) -> PromptText:
    settings = request.app.state.settings
    prompts_file = settings.prompts_source_path / drafts.PROMPTS_FILE
    async with working_copy_lock:
        try:
            changed = drafts.set_prompt_text(prompts_file.read_text(encoding="utf-8"),
                                             prompt_id, language, body.text, body.speak)
        except drafts.UnknownFile as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        result = await asyncio.to_thread(drafts.write, settings,
                                         {drafts.PROMPTS_FILE: changed})
    if not result.ok:
        raise refused(result.problems)
    await record_change(request, principal, "prompt.text", f"{prompt_id}/{language}",
                        {"text": body.text})
    recording = recording_for(settings.recordings_path, prompt_id, language)
    return PromptText(text=body.text, speak=body.speak, recording=recording is not None)


def _kind(head: bytes, filename: str) -> str | None:
    """'.wav' or '.mp3' if the upload looks like one, else None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ".wav"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return ".mp3" if filename.lower().endswith(".mp3") or head[:3] == b"ID3" else None
    return None


def _store_recording(upload: bytes, suffix: str, target_dir: Path, prompt_id: str) -> None:
    """Convert it as Asterisk needs it first: what sox cannot read is refused, never stored."""
    with tempfile.TemporaryDirectory() as folder:
        original = Path(folder) / f"upload{suffix}"
        original.write_bytes(upload)
        try:
            to_telephone_wav(original, Path(folder) / "check.wav")
        except (subprocess.CalledProcessError, OSError) as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                                f"the file could not be read as {suffix[1:].upper()} audio"
                                ) from exc
        target_dir.mkdir(parents=True, exist_ok=True)
        for old in RECORDING_SUFFIXES:
            (target_dir / f"{prompt_id}{old}").unlink(missing_ok=True)
        shutil.copyfile(original, target_dir / f"{prompt_id}{suffix}")


@router.post("/{prompt_id}/{language}/recording", response_model=PromptText,
             summary="Upload a recording (WAV or MP3) that replaces the text's TTS")
async def upload_recording(request: Request, prompt_id: str, language: str, file: UploadFile,
                           principal: Admin) -> PromptText:
    settings = request.app.state.settings
    prompt = await asyncio.to_thread(_prompt, settings, prompt_id, language)
    data = await file.read(MAX_RECORDING_BYTES + 1)
    if len(data) > MAX_RECORDING_BYTES:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                            f"a recording may be at most {MAX_RECORDING_BYTES // 2**20} MB")
    suffix = _kind(data[:16], file.filename or "")
    if suffix is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                            "only WAV or MP3 recordings are accepted")
    target_dir = settings.recordings_path / language
    await asyncio.to_thread(_store_recording, data, suffix, target_dir, prompt_id)
    await record_change(request, principal, "prompt.recording", f"{prompt_id}/{language}",
                        {"bytes": len(data), "format": suffix[1:]})
    return PromptText(text=prompt.text, speak=prompt.speak, recording=True)


@router.delete("/{prompt_id}/{language}/recording", response_model=PromptText,
               summary="Remove a recording: the text is spoken by TTS again")
async def delete_recording(request: Request, prompt_id: str, language: str,
                           principal: Admin) -> PromptText:
    settings = request.app.state.settings
    prompt = await asyncio.to_thread(_prompt, settings, prompt_id, language)
    recording = recording_for(settings.recordings_path, prompt_id, language)
    if recording is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no recording to remove")
    recording.unlink()
    await record_change(request, principal, "prompt.recording_removed", f"{prompt_id}/{language}")
    return PromptText(text=prompt.text, speak=prompt.speak, recording=False)
