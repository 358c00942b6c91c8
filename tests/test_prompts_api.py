"""Admins manage prompts through the API: texts changed and re-rendered, recordings uploaded
(WAV, MP3; anything else refused with the reason), and every prompt playable in a browser."""

from __future__ import annotations

from pathlib import Path

import httpx

from ivr.models import Role
from tests.conftest import Server, live_dialplan
from tests.support.speech import tone
from tests.support.users import signed_in


async def test_change_a_prompt_text_and_publish(server: Server, api: httpx.AsyncClient) -> None:
    prompts = (await api.get("/api/prompts")).json()
    before = prompts["goodbye"]["en"]["text"]
    assert prompts["main_menu"]["ko"]["recording"] is False
    heard = await api.get("/api/prompts/goodbye/en/audio")
    assert heard.status_code == 200 and heard.content[:4] == b"RIFF"

    changed = await api.put("/api/prompts/goodbye/en", json={"text": "Goodbye from the test."})
    assert changed.status_code == 200, changed.text
    assert (await api.get("/api/prompts")).json()["goodbye"]["en"]["text"] == (
        "Goodbye from the test.")
    assert "Goodbye from the test." in (await api.get("/api/dialplans/diff")).json()["diff"]
    new_audio = await api.get("/api/prompts/goodbye/en/audio")
    assert new_audio.content != heard.content  # rendered again from the new words
    old_file = (await live_dialplan(server)).prompt_files["goodbye/en"]
    assert (await api.post("/api/dialplans/publish", json={})).status_code == 200
    assert (await live_dialplan(server)).prompt_files["goodbye/en"] != old_file

    # Back as it was (the session's other tests hear the shipped prompts).
    assert (await api.put("/api/prompts/goodbye/en", json={"text": before})).status_code == 200
    assert (await api.post("/api/dialplans/publish", json={})).status_code == 200
    assert (await api.put("/api/prompts/nothing/en", json={"text": "x"})).status_code == 404


async def test_recordings_wav_and_mp3_and_nothing_else(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    tts = (await api.get("/api/prompts/no_input/en/audio")).content
    wav = await api.post("/api/prompts/no_input/en/recording",
                         files={"file": ("hello.wav", tone(tmp_path / "t.wav"), "audio/wav")})
    assert wav.status_code == 200 and wav.json()["recording"], wav.text
    recorded = (await api.get("/api/prompts/no_input/en/audio")).content
    assert recorded[:4] == b"RIFF" and recorded != tts
    mp3 = await api.post("/api/prompts/no_input/en/recording",
                         files={"file": ("hello.mp3", tone(tmp_path / "t.mp3"), "audio/mpeg")})
    assert mp3.status_code == 200, mp3.text

    text = await api.post("/api/prompts/no_input/en/recording",
                          files={"file": ("notes.wav", b"just some words", "audio/wav")})
    assert text.status_code == 422 and "WAV or MP3" in text.json()["detail"]
    broken = await api.post("/api/prompts/no_input/en/recording",
                            files={"file": ("b.wav", b"RIFF\x00\x00\x00\x00WAVEjunk" * 4,
                                            "audio/wav")})
    assert broken.status_code == 422 and "could not be read" in broken.json()["detail"]
    assert (await api.get("/api/prompts")).json()["no_input"]["en"]["recording"] is True

    removed = await api.delete("/api/prompts/no_input/en/recording")
    assert removed.status_code == 200 and removed.json()["recording"] is False
    assert (await api.get("/api/prompts/no_input/en/audio")).content == tts


async def test_agents_cannot_change_prompts(server: Server) -> None:
    async with signed_in(server, Role.AGENT) as agent:
        assert (await agent.get("/api/prompts")).status_code == 403
        assert (await agent.put("/api/prompts/goodbye/en", json={"text": "x"})).status_code == 403
