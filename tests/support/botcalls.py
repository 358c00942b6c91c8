"""Calls to the callbot, from the caller's side: reach the bot, speak into the call (espeak-ng
English, or natural Korean speech through the telephone band), and follow the call's step in
its live state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from ivr.ari import AriClient
from ivr.redis_client import connect_redis
from tests.conftest import audio_for, caller_number, wait_for
from tests.support.sip import SippCall
from tests.support.speech import (
    alaw,
    frames,
    korean_recordings,
    spoken,
    telephone,
    write_pcap,
)
from tests.support.stack import Server


async def live_call(server: Server, caller: str) -> dict[str, str]:
    """The caller's call now, as its live state in Redis holds it ({} once it ended)."""
    redis = connect_redis(server.settings)
    try:
        async for key in redis.scan_iter(match="ivr:call:*"):
            values = cast(dict[str, str], await redis.hgetall(key))
            if values.get("caller") == caller:
                return values
        return {}
    finally:
        await redis.aclose()


async def live_step(server: Server, caller: str) -> str:
    return (await live_call(server, caller)).get("step", "")


async def live_bot(server: Server, caller: str) -> dict[str, Any]:
    """The bot's part of the call now (phase, transcript...)."""
    return cast(dict[str, Any], json.loads((await live_call(server, caller)).get("bot") or "{}"))


async def bot_step(server: Server, caller: str, steps: tuple[str, ...]) -> None:
    async def reached() -> bool:
        return await live_step(server, caller) in steps

    await wait_for(reached, 60, what=f"the bot in {steps}")


def korean(name: str, folder: Path, start: float = 0.0,
           seconds: float | None = None) -> tuple[list[bytes], str]:
    """A natural Korean recording as the caller's speech (A-law payloads), and what it says."""
    recording, transcript = next((path, text) for path, text in korean_recordings()
                                 if path.name == name)
    return frames(alaw(telephone(recording, folder, start, seconds))), transcript


async def bot_caller(server: Server, keys: str) -> tuple[str, SippCall]:
    """A caller on 120 who presses ``keys`` to reach the callbot."""
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    await audio_for(call, 0.5)
    await call.rtp.press(keys)
    return caller, call


async def korean_bot(server: Server) -> tuple[str, SippCall]:
    """120, then 1 (traffic), 1 (the callbot): the Korean line."""
    return await bot_caller(server, "11")


def question(text: str, folder: Path, voice: str = "en-us") -> list[bytes]:
    """The caller's words as 20 ms A-law payloads, also kept as a pcap for inspection."""
    payloads = frames(alaw(spoken(text, folder, voice=voice)))
    write_pcap(payloads, folder / f"{'-'.join(text.split())}.pcap")
    return payloads


async def english_bot(server: Server) -> tuple[str, SippCall]:
    """120, then 9 (other languages), 1 (English), 1 (traffic: the callbot)."""
    return await bot_caller(server, "911")


async def hang_up(server: Server, caller: str) -> None:
    """The call ends on the caller's side (Asterisk hangs up their channel)."""
    channel = (await live_call(server, caller))["channel_id"]
    ari = AriClient(server.settings.ari_base_url, server.settings.ari_user,
                    server.settings.ari_secret())
    try:
        await ari.hangup(channel)
    finally:
        await ari.close()


async def say(call: SippCall, text: str, folder: Path, before: float = 0.3) -> None:
    """The caller says ``text`` (espeak-ng English), then the line's quiet, as a phone goes on
    sending it."""
    await call.rtp.silence(before)
    await call.rtp.say(question(text, folder))
    await call.rtp.silence(1.5)


async def queued_call(server: Server, caller: str) -> dict[str, str]:
    """Until the caller waits in a queue; the call's live state then."""
    async def queued() -> dict[str, str] | None:
        now = await live_call(server, caller)
        return now if now.get("state") == "queued" else None

    found: dict[str, str] = await wait_for(queued, 60, what="the caller in a queue")
    return found
