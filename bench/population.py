"""The callbot's spoken population for `make bench`: held-out questions asked by voice on real
SIP calls, and what the bot made of them, as a caller would live it.

- English: 50 held-out questions (38 the knowledge base covers, 12 it does not), said by
  espeak-ng through the telephone band;
- Korean: the 25 recordings of natural Korean speech (``../shared/speech/ko``), each on four
  lines (a plain phone line, a quiet one, and two noisy ones): 100 calls. They are not
  questions about the city (no registry package carries a natural Korean voice to say the
  held-out questions), so each is a question the bot must not answer: the figures are what it
  heard (CER) and that it asked again or handed over, never reading an answer.

Each caller dials 120, reaches the callbot, asks, and then behaves as a caller would: an
answer to their question gets 1 ("that answered it"), another answer 2; "is it about ...?" gets
1 if it is, 2 if not; asked to say it again, they say it once more. Four calls run at once.

Figures per language: recognition error (CER for Korean, WER for English) on the caller's
first turn, topic and question-type accuracy (the type the bot answered or offered first),
wrong answers read aloud (over every call, out-of-domain ones included), containment (calls the
bot resolved), what became of the calls, and the end of speech to the first answer audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.botcalls import (
    BotCall,
    CallerEar,
    SpokenQuestion,
    at_once,
    call_records,
    caller_question,
    calling,
    hang_up,
    line_quiet,
    live_bot,
    until,
)
from bench.load import percentiles
from bench.stacks import run_alone
from bench.understanding import OUT_OF_DOMAIN, held_out
from callbot.knowledge import load_seed
from ivr.ari import AriClient
from ivr.controller.bot import BOT_ANSWER, BOT_LISTENING, BOT_PROMPT, BOT_THINKING
from tests.support.sip import SippCall
from tests.support.speech import (
    character_errors,
    korean_recordings,
    spoken,
    telephone,
    word_errors,
)
from tests.support.stack import Server

PROJECT = Path(__file__).resolve().parents[1]
KEYS = {"ko": "11", "en": "911"}  # from 120's greeting to the callbot: traffic, in Korean / English
ENGLISH_IN_DOMAIN, ENGLISH_OUT_OF_DOMAIN = 38, 12
QUICK_ENGLISH, QUICK_KOREAN = 8, 8
AT_ONCE = 4
# The lines the Korean recordings come in on: (name, level change in dB, signal-to-noise dB).
KOREAN_LINES = (("phone", 0.0, None), ("quiet line", -12.0, None), ("noise 15 dB", 0.0, 15.0),
                ("noise 10 dB", 0.0, 10.0))
# The caller's turns at most: the question, said again if asked, yes or no to "is it about
# ...?", 1 or 2 to "did that answer it?".
TURNS = 5
REPLY_SECONDS = 25.0  # after the caller stops, the bot does something within this


@dataclass
class Caller:
    """One spoken call: what the caller asks and what the bot did with it."""

    language: str
    line: str  # the line condition (Korean), or "phone"
    question: SpokenQuestion
    call: BotCall | None = None
    heard: str = ""  # what the bot heard on the caller's first turn
    offered: str = ""  # the question type the bot answered or asked about first
    answered: list[str] = field(default_factory=list)  # question types whose answer was read
    asked_again: int = 0
    problem: str = ""

    @property
    def in_domain(self) -> bool:
        return self.question.question_type != OUT_OF_DOMAIN


def _korean_line(samples: bytes, level_db: float, noise_db: float | None, seed: int) -> bytes:
    """8 kHz speech made quieter, or with line noise at ``noise_db`` below the speech."""
    speech = np.frombuffer(samples, dtype=np.int16).astype(np.float64)
    speech *= 10 ** (level_db / 20)
    if noise_db is not None:
        loud = np.abs(speech) > np.abs(speech).max() * 0.05
        power = float(np.mean(speech[loud] ** 2)) if loud.any() else 1.0
        noise = np.random.default_rng(seed).normal(0.0, 1.0, speech.size)
        speech += noise * np.sqrt(power / 10 ** (noise_db / 10))
    return np.clip(speech, -32768, 32767).astype(np.int16).tobytes()


def _callers(folder: Path, quick: bool) -> list[Caller]:
    callers = []
    english = [q for q in held_out() if q.language == "en"]
    inside = [q for q in english if q.expected != OUT_OF_DOMAIN]
    outside = [q for q in english if q.expected == OUT_OF_DOMAIN]
    chosen = (inside[:QUICK_ENGLISH - 2] + outside[:2] if quick else
              inside[:ENGLISH_IN_DOMAIN] + outside[:ENGLISH_OUT_OF_DOMAIN])
    for question in chosen:
        samples = spoken(question.text, folder)
        callers.append(Caller("en", "phone", caller_question(question.expected, question.text,
                                                            samples)))
    recordings = korean_recordings()
    korean = [(number, recording, transcript) for number, (recording, transcript)
              in enumerate(recordings * len(KOREAN_LINES))]
    if quick:  # a few recordings, on every line
        korean = korean[::len(korean) // QUICK_KOREAN][:QUICK_KOREAN]
    for number, recording, transcript in korean:
        line, level, noise = KOREAN_LINES[number // len(recordings)]
        samples = _korean_line(telephone(recording, folder), level, noise, seed=number)
        callers.append(Caller("ko", line, caller_question(OUT_OF_DOMAIN, transcript, samples)))
    return callers


async def _until_moved_on(api: httpx.AsyncClient, call: BotCall, pending: str) -> None:
    """Until the bot has taken the caller's yes or no to "is it about <pending>?"."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and call.sipp.running:
        if (await live_bot(api, call)).get("pending") != pending:
            return
        await asyncio.sleep(0.1)


def _caller_lines(bot: dict[str, Any]) -> str:
    lines = [line.removeprefix("caller:").replace("(not made out)", "").strip()
             for line in bot.get("transcript") or () if line.startswith("caller:")]
    return " ".join(line for line in lines if line)


async def _one_call(server: Server, api: httpx.AsyncClient, ari: AriClient, caller: Caller,
                    calls: list[BotCall]) -> None:
    """Dial, reach the bot, ask, and answer the bot as the caller would, up to TURNS turns."""
    question = caller.question
    number = f"0109991{random.randrange(10_000):04d}"  # plainly fake, one per call
    sipp = SippCall("caller.xml", "120", server.sip_target, server.workdir, number)
    sipp.rtp = ear = CallerEar()
    call = caller.call = BotCall(number, question, sipp, ear)
    calls.append(call)

    def hung_up() -> bool:
        return not sipp.running

    quiet: asyncio.Task[None] | None = None
    try:
        await sipp.start()
        await until(lambda: ear.audio_seconds >= 0.5 or hung_up(), 20, "greeting")
        await ear.press(KEYS[caller.language])
        await until(lambda: call.step == BOT_LISTENING or hung_up(), 30, "bot listening")
        speak = True
        for turn in range(TURNS):
            if hung_up():
                break
            if speak:
                if quiet is not None:
                    quiet.cancel()
                await ear.silence(0.5)
                await ear.say(question.payloads)
                call.voice_ended = time.monotonic()
                quiet = asyncio.create_task(line_quiet(ear))
                speak = False
            # The bot's reply: an answer, a prompt (ask again, or "is it about...?"), or the
            # way to an agent.
            await until(lambda: call.step not in (BOT_LISTENING, BOT_THINKING) or hung_up(),
                        REPLY_SECONDS, "reply from the bot")
            bot = await live_bot(api, call)
            if turn == 0:
                caller.heard = _caller_lines(bot)
            if call.step == BOT_ANSWER:
                answered = str(bot.get("question_type") or "")
                caller.answered.append(answered)
                caller.offered = caller.offered or answered
                await ear.press("1" if answered == question.question_type else "2")
                await until(lambda: call.step != BOT_ANSWER or hung_up(), 10, "goodbye")
            elif call.step == BOT_PROMPT and bot.get("pending"):
                pending = str(bot["pending"])
                caller.offered = caller.offered or pending
                await ear.press("1" if pending == question.question_type else "2")
                await _until_moved_on(api, call, pending)
            elif call.step == BOT_PROMPT:
                caller.asked_again += 1  # say it again, once the bot has asked
                await until(lambda: call.step == BOT_LISTENING or hung_up(), 30,
                            "bot listening again")
                speak = True
            else:
                break  # to an agent (or goodbye)
    except Exception as exc:  # one call's failure is a figure, not the bench's end
        caller.problem = f"{type(exc).__name__}: {exc}"
    finally:
        if quiet is not None:
            quiet.cancel()
        if not hung_up():
            await asyncio.sleep(1.0)  # a goodbye ends the call by itself
            await hang_up(ari, call)
        with contextlib.suppress(Exception):
            await sipp.finished(30)
        await sipp.stop()


def _topics() -> dict[str, str]:
    return {entry.id: entry.topic for entry in load_seed(PROJECT / "knowledge" / "seed")}


def _figures(callers: list[Caller], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    topics = _topics()
    figures: dict[str, Any] = {}
    for language in ("ko", "en"):
        mine = [c for c in callers if c.language == language]
        if not mine:
            continue
        errors = length = 0
        outcomes: Counter[str] = Counter()
        latencies: list[float] = []
        topic_right = type_right = wrong = resolved = 0
        for caller in mine:
            said = caller.question.text
            if language == "ko":
                error, size = character_errors(caller.heard, said)
            else:
                error, size = word_errors(caller.heard, said)
            errors, length = errors + error, length + size
            assert caller.call is not None
            record = records.get(caller.call.caller) or {}
            bot = record.get("bot") or {}
            latencies += [s["first_audio_ms"] for s in bot.get("stages") or ()
                          if "first_audio_ms" in s]
            expected = caller.question.question_type
            if caller.in_domain:
                offered_topic = topics.get(caller.offered) or str(bot.get("skill") or "")
                topic_right += offered_topic == topics.get(expected)
                type_right += caller.offered == expected
            wrong += sum(answered != expected for answered in caller.answered)
            resolved += record.get("outcome") == "resolved_by_bot"
            if caller.problem or not record:
                outcomes["failed"] += 1
            elif record.get("outcome") == "resolved_by_bot":
                outcomes["resolved"] += 1
            elif bot.get("handoff"):
                outcomes[f"handed over: {bot['handoff']}"] += 1
            else:
                outcomes[str(record.get("outcome"))] += 1
        inside = sum(c.in_domain for c in mine)
        figures[language] = {
            "calls": len(mine), "in_domain": inside, "out_of_domain": len(mine) - inside,
            "lines": dict(Counter(c.line for c in mine)),
            ("cer" if language == "ko" else "wer"): round(errors / max(length, 1), 3),
            "topic_accuracy": round(topic_right / inside, 3) if inside else None,
            "question_type_accuracy": round(type_right / inside, 3) if inside else None,
            "wrong_answers_read": wrong,
            "wrong_answer_rate": round(wrong / len(mine), 3),
            "containment": round(resolved / len(mine), 3),
            "asked_again": sum(c.asked_again > 0 for c in mine),
            "outcomes": dict(outcomes.most_common()),
            "first_answer_audio_ms": percentiles(latencies),
            "problems": [f"{c.language} {c.question.text[:40]!r}: {c.problem}"
                         for c in mine if c.problem][:5],
        }
    return figures


async def spoken_population(server: Server, folder: Path, quick: bool = False
                            ) -> dict[str, Any]:
    """Every caller of the population, AT_ONCE at a time, and the figures of their calls."""
    callers = await asyncio.to_thread(_callers, folder, quick)
    started = time.monotonic()
    since = datetime.now(UTC) - timedelta(seconds=1)
    async with calling(server) as (api, ari, calls):
        await at_once(AT_ONCE, [_one_call(server, api, ari, caller, calls)
                                for caller in callers])
        records = await call_records(api, {call.caller for call in calls}, since)
    return {**_figures(callers, records), "at_once": AT_ONCE,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "median_question_seconds": round(statistics.median(
                c.question.voice_seconds for c in callers), 1)}


async def _alone(server: Server, quick: bool) -> dict[str, Any]:
    return await spoken_population(server, server.workdir / "population", quick)


if __name__ == "__main__":
    run_alone("population", _alone)
