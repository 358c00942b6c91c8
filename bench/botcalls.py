"""The caller's side of real calls to the callbot, shared by the bench's parts: a caller's
ear (the audio the server sends, and when), a question as the caller's phone sends it, and
each call's step in its live state."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

import httpx

from callbot.audio import VadSettings, level_db
from ivr.ari import AriClient, AriError, unless_gone
from ivr.controller.bot import BOT_LISTENING, LISTEN_SECONDS
from ivr.redis_client import connect_redis
from tests.support.sip import RtpSink, SippCall
from tests.support.speech import FRAME, alaw, frames
from tests.support.stack import Server, admin_client

T = TypeVar("T")

@dataclass
class CallerEar(RtpSink):
    """The caller's RTP endpoint, also noting when each packet of the server's audio came."""

    arrivals: list[float] = field(default_factory=list)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        super().datagram_received(data, addr)
        if len(data) >= 12:
            self.arrivals.append(time.monotonic())

    def first_after(self, moment: float) -> float | None:
        return next((arrival for arrival in self.arrivals if arrival > moment), None)


@dataclass(frozen=True)
class SpokenQuestion:
    question_type: str  # what was asked (or OUT_OF_DOMAIN)
    text: str  # the words said
    payloads: list[bytes]  # 20 ms of A-law each, as the caller's phone sends them
    voice_seconds: float  # from the first payload to the end of the last word


def caller_question(question_type: str, text: str, samples: bytes) -> SpokenQuestion:
    """A question as the caller's phone sends it, from 8 kHz 16-bit samples."""
    # The last word ends with the last frame the bot's voice activity could take for voice;
    # espeak-ng adds a few hundred ms of quiet after it.
    loud_enough = VadSettings().min_voice_db
    size = FRAME * 2
    voiced = [number for number in range(len(samples) // size)
              if level_db(samples[number * size:(number + 1) * size]) >= loud_enough]
    last = max(voiced, default=len(samples) // size)
    return SpokenQuestion(question_type, text, frames(alaw(samples)), (last + 1) * 0.02)


@dataclass
class BotCall:
    caller: str
    question: SpokenQuestion
    sipp: SippCall
    ear: CallerEar
    lead: float = 0.0  # seconds to wait before speaking, so that all callers stop together
    step: str = ""  # the call's step in its live state, as last seen
    state: str = ""  # ... its state (in_menu, with_bot, queued...), menu and queue
    menu: str = ""
    queue: str = ""
    channel_id: str = ""
    voice_ended: float = 0.0  # monotonic time of the caller's last word
    heard_ms: float | None = None  # last word -> first packet of the answer, at the caller
    finished: bool = False  # SIPp ended
    problem: str = ""  # why the call failed


async def until(check: Callable[[], T], seconds: float, what: str) -> T:
    deadline = time.monotonic() + seconds
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {seconds:.0f} s")
        await asyncio.sleep(0.02)
    return result


async def follow(server: Server, calls: list[BotCall], speak: asyncio.Event) -> None:
    """Each call's step, from the live state in Redis; and the moment for all to speak: when
    every call listens, or halfway to the bot's "are you there?" after the first one does."""
    redis = connect_redis(server.settings)
    first_listening = 0.0
    try:
        while True:
            by_caller = {call.caller: call for call in calls}  # callers may join meanwhile
            async for key in redis.scan_iter(match="ivr:call:*"):
                caller, step, state, menu, queue = cast(list[str | None], await redis.hmget(
                    key, ["caller", "step", "state", "menu", "queue"]))
                call = by_caller.get(caller or "")
                if call is not None:
                    call.step, call.channel_id = step or "", key.removeprefix("ivr:call:")
                    call.state, call.menu, call.queue = state or "", menu or "", queue or ""
            if not first_listening and any(call.step == BOT_LISTENING for call in calls):
                first_listening = time.monotonic()
            if all(call.step == BOT_LISTENING or call.problem for call in calls) or (
                    first_listening and time.monotonic() - first_listening > LISTEN_SECONDS / 2):
                speak.set()
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()


async def line_quiet(ear: RtpSink) -> None:
    """The line's quiet after the question, as a phone goes on sending it (until cancelled)."""
    while True:
        await ear.silence(0.2)


async def hang_up(ari: AriClient, call: BotCall) -> None:
    if call.channel_id:
        with contextlib.suppress(AriError), unless_gone():
            await ari.hangup(call.channel_id)


async def call_records(api: httpx.AsyncClient, callers: set[str], since: datetime
                       ) -> dict[str, dict[str, Any]]:
    """The ended call records of these callers, from ``since`` (each call has its number)."""
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 15
    while len(found) < len(callers) and time.monotonic() < deadline:
        response = await api.get("/api/calls", params={"limit": 200})
        response.raise_for_status()
        for record in response.json():
            if (record["caller"] in callers and record["ended_at"]
                    and datetime.fromisoformat(record["started_at"]) >= since):
                found[record["caller"]] = record
        await asyncio.sleep(0.3)
    return found


async def live_bot(api: httpx.AsyncClient, call: BotCall) -> dict[str, Any]:
    """The callbot's part of a call now (transcript, question type, what it asks...)."""
    response = await api.get(f"/api/calls/live/{call.channel_id}")
    return dict(response.json().get("bot") or {}) if response.status_code == 200 else {}


@contextlib.asynccontextmanager
async def calling(server: Server) -> AsyncIterator[tuple[httpx.AsyncClient, AriClient,
                                                         list[BotCall]]]:
    """What a bench part's callers share: an admin's API client, an ARI client to hang up
    with, and the list their calls go in, whose live state is followed meanwhile."""
    calls: list[BotCall] = []
    follower = asyncio.create_task(follow(server, calls, asyncio.Event()))
    ari = AriClient(server.settings.ari_base_url, server.settings.ari_user,
                    server.settings.ari_secret())
    try:
        async with admin_client(server) as api:
            yield api, ari, calls
    finally:
        follower.cancel()
        await asyncio.wait([follower])
        await ari.close()


async def at_once(count: int, calls: list[Awaitable[None]]) -> None:
    """The calls, ``count`` at a time."""
    slots = asyncio.Semaphore(count)

    async def one(call: Awaitable[None]) -> None:
        async with slots:
            await call

    await asyncio.gather(*(one(call) for call in calls))
