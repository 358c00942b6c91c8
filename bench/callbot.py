"""The callbot's figures for `make bench`, apart from the menus and the queues:

- recognition: each candidate recognizer on telephone audio (``bench/speech.py``);
- concurrent bot calls: waves of real calls (SIPp dials 120 and presses 9, 1, 1: English, the
  callbot) whose callers ask a question each and all stop speaking at the same moment, so the
  bot has that many utterances to recognize at once; up to the first wave whose answers lag;
- the time from the end of the caller's speech to the first audio of the answer (median and
  95th percentile), as the call records hold it and as the caller hears it.

The goal the figures are read against (not an assertion): the answer starts within 800 ms of
the end of the caller's speech (median). Both the records and the caller's side measure from
the last word itself, so both hold the quiet the bot waits for to know that the caller stopped
(``VadSettings.end_silence_ms``).

`python -m bench.callbot [--quick]` runs it alone on a stack of its own.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.botcalls import (
    BotCall,
    CallerEar,
    SpokenQuestion,
    call_records,
    caller_question,
    follow,
    hang_up,
    line_quiet,
    until,
)
from bench.front_door import front_door_calls
from bench.load import percentiles
from bench.population import spoken_population
from bench.speech import measure as measure_recognizers
from bench.stacks import run_alone
from bench.understanding import OUT_OF_DOMAIN, held_out, understanding
from callbot.audio import VadSettings
from callbot.recognizers import ModelSettings, build_recognizers, close_recognizers
from ivr.ari import AriClient
from ivr.controller.bot import BOT_ANSWER, BOT_LISTENING, BOT_THINKING, LISTEN_SECONDS
from tests.support.sip import SippCall
from tests.support.speech import spoken, upsampled
from tests.support.stack import Server, admin_client

GOAL_MS = 800.0  # the answer starts this soon after the caller's speech ends (median)
LAG_FACTOR = 2.0  # a wave's median this many times the single call's: answers lag
WAVES = (1, 2, 4, 8, 16)
QUICK_WAVES = (1, 2, 4)
SINGLE_TRIES = 3
QUESTIONS = 10  # held-out questions the callers ask
TO_THE_BOT = "911"  # on 120: other languages, English, traffic (the callbot)
REPLY_SECONDS = 15.0  # the bot answers, asks again or hands over within this (or it failed)


# --- Questions for the calls --------------------------------------------------------------


async def _answerable_questions(cache: Path, folder: Path) -> list[tuple[str, str]]:
    """Held-out English questions that espeak-ng's voice over the telephone band, recognized
    offline as the controller would, gets answered outright, the surest first: a call that is
    not answered then failed on the line (timing, load), not in recognition or understanding,
    which ``bench/speech.py``, ``bench/understanding.py`` and the spoken population measure.
    (The surest, because the line's audio differs a little from the offline copy, and a
    question answered only just may be asked to confirm on the line.)"""
    model, entries = understanding()
    recognizers = build_recognizers({"en": "whisper"}, ModelSettings(cache=cache, workers=1),
                                    entries)
    answered = []
    try:
        for question in held_out():
            if question.language != "en" or question.expected == OUT_OF_DOMAIN:
                continue
            audio = upsampled(spoken(question.text, folder), folder)
            heard = await recognizers["en"].recognize(audio)
            match = model.match(heard.text, "en")
            if match.question_type == question.expected:
                answered.append((match.confidence, question.expected, question.text))
    finally:
        close_recognizers(recognizers)
    answered.sort(key=lambda item: -item[0])
    return [(kind, text) for _, kind, text in answered[:QUESTIONS]]


# --- Real bot calls ---------------------------------------------------------------------------


async def _bot_call(call: BotCall, speak: asyncio.Event, ari: AriClient) -> None:
    """One caller: to the callbot, the question when everyone asks, then "yes, thank you"."""
    ear = call.ear

    def hung_up() -> bool:  # the server ended the call (SIPp ends at its BYE)
        return not call.sipp.running

    try:
        await call.sipp.start()
        await until(lambda: ear.audio_seconds >= 0.5 or hung_up(), 20, "greeting")
        if not hung_up():
            await ear.press(TO_THE_BOT)
            await until(lambda: call.step == BOT_LISTENING or hung_up(), 30, "bot listening")
        if hung_up():
            call.problem = "the server hung up before the bot listened"
            return
        await asyncio.wait_for(speak.wait(), LISTEN_SECONDS)
        await ear.silence(0.5 + call.lead)  # a phone sends the line's quiet meanwhile
        said_at = time.monotonic()
        await ear.say(call.question.payloads)
        call.voice_ended = said_at + call.question.voice_seconds
        quiet = asyncio.create_task(line_quiet(ear))
        try:
            await until(lambda: call.step not in (BOT_LISTENING, BOT_THINKING) or hung_up(),
                         REPLY_SECONDS, "reply from the bot")
            if call.step == BOT_ANSWER:
                first = await until(lambda: ear.first_after(call.voice_ended) or 0.0, 5,
                                     "audio of the answer")
                call.heard_ms = (first - call.voice_ended) * 1000
        finally:
            quiet.cancel()
            await asyncio.wait([quiet])  # not `await quiet`: that would swallow our own cancel
        if call.step == BOT_ANSWER:
            await ear.press("1")  # that answered it: the bot says goodbye and hangs up
        else:
            await hang_up(ari, call)  # asked again or handed over: the record says which
        result = await call.sipp.finished(30)
        call.finished = True
        if not result.ok:
            call.problem = f"SIPp: {(result.errors or result.output).strip()[-200:]}"
    except Exception as exc:  # one call's failure is a figure of its wave, not the bench's end
        call.problem = f"{type(exc).__name__}: {exc}"


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


@dataclass
class _Wave:
    size: int
    seconds: float  # how long the wave took, from dialling to the last record
    first_audio_ms: list[float] = field(default_factory=list)  # from the call records
    heard_ms: list[float] = field(default_factory=list)  # at the caller
    stages: dict[str, list[float]] = field(default_factory=dict)
    answered: int = 0
    handed_off: int = 0
    unanswered: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)
    lag: str = ""  # why answers lag in this wave, if they do

    def count(self, call: BotCall, record: dict[str, Any] | None) -> None:
        bot = (record or {}).get("bot") or {}
        stage = next((s for s in bot.get("stages") or () if "first_audio_ms" in s), None)
        if stage is not None:
            self.first_audio_ms.append(stage["first_audio_ms"])
            # Where the time goes: recognizing, understanding, rendering the answer, and the
            # rest (the wait for the end of the turn, events, Asterisk starting the playback).
            # Recognition begun at a pause runs during that wait.
            spent = {"recognize_ms": stage.get("recognize_s", 0.0) * 1000,
                     "understand_ms": stage.get("understand_ms", 0.0),
                     "speak_ms": stage.get("speak_ms", 0.0)}
            if not stage.get("started_at_pause"):
                spent["rest_ms"] = stage["first_audio_ms"] - sum(spent.values())
            spent["audio_s"] = stage.get("audio_s", 0.0)
            spent["started_at_pause"] = float(bool(stage.get("started_at_pause")))
            for name, value in spent.items():
                self.stages.setdefault(name, []).append(value)
            if call.heard_ms is not None:
                self.heard_ms.append(call.heard_ms)
        heard = [line for line in bot.get("transcript") or () if line.startswith("caller:")]
        if call.problem or record is None:
            self.failed += 1
            outcome = f" (outcome {record['outcome']})" if record else ""
            self.problems.append(f"{call.caller}: {call.problem or 'no call record'}{outcome}")
        elif stage is not None:
            self.answered += 1
        elif bot.get("handoff"):
            self.handed_off += 1
            self.problems.append(f"{call.caller}: handed off ({bot['handoff']}), {heard}")
        else:
            # Heard or understood otherwise on the line (asked again, or to confirm): not an
            # answer to time, nor a failure of the server.
            self.unanswered += 1
            self.problems.append(f"{call.caller}: not answered ({call.step}), {heard}")

    def judge(self, single_p50: float | None) -> None:
        p50 = _median(self.first_audio_ms)
        if self.failed:
            self.lag = f"{self.failed} of {self.size} calls failed"
        elif p50 is None and self.size > 1:
            self.lag = "no call was answered"
        elif single_p50 is not None and p50 is not None and p50 > LAG_FACTOR * single_p50:
            self.lag = f"median {p50} ms, over {LAG_FACTOR:g}x the single call's {single_p50} ms"

    def summary(self) -> dict[str, Any]:
        return {
            "calls": self.size, "answered": self.answered, "handed_off": self.handed_off,
            "not_answered": self.unanswered, "failed": self.failed,
            "first_audio_ms": percentiles(self.first_audio_ms),
            "heard_by_caller_ms": percentiles(self.heard_ms),
            "stages_p50": {name: _median(values) for name, values in self.stages.items()},
            "lag": self.lag or None,
            "problems": self.problems[:5],
            "seconds": self.seconds,
        }


async def _wave(server: Server, api: httpx.AsyncClient, ari: AriClient, size: int,
                questions: list[SpokenQuestion], numbers: list[str], first: int = 0) -> _Wave:
    """``size`` callers at once, each asking the bot a question; they all stop speaking at the
    same moment, so that the bot recognizes ``size`` utterances at once (the worst case)."""
    calls = []
    for number, caller in enumerate(numbers):
        sipp = SippCall("caller.xml", "120", server.sip_target, server.workdir, caller)
        sipp.rtp = ear = CallerEar()
        calls.append(BotCall(caller, questions[(first + number) % len(questions)], sipp, ear))
    longest = max(call.question.voice_seconds for call in calls)
    for call in calls:
        call.lead = longest - call.question.voice_seconds
    started = time.monotonic()
    since = datetime.now(UTC) - timedelta(seconds=1)
    speak = asyncio.Event()
    follower = asyncio.create_task(follow(server, calls, speak))
    try:
        await asyncio.gather(*(_bot_call(call, speak, ari) for call in calls))
    finally:
        follower.cancel()
        await asyncio.wait([follower])
        for call in calls:
            if not call.finished:
                await hang_up(ari, call)
            await call.sipp.stop()
    records = await call_records(api, set(numbers), since)
    wave = _Wave(size, seconds=round(time.monotonic() - started, 1))
    for call in calls:
        wave.count(call, records.get(call.caller))
    return wave


async def _concurrent_calls(server: Server, asked: list[tuple[str, str]], sizes: tuple[int, ...],
                           folder: Path) -> tuple[dict[str, Any], list[_Wave]]:
    """Waves of simultaneous bot calls, up to the first one whose answers lag."""
    questions = await asyncio.to_thread(
        lambda: [caller_question(kind, text, spoken(text, folder)) for kind, text in asked])
    # Plainly fake caller numbers, one per call, so each call's record is found by it.
    numbers = [f"0109990{n:04d}" for n in random.sample(range(10_000),
                                                        sum(sizes) + SINGLE_TRIES)]
    waves: list[_Wave] = []
    ari = AriClient(server.settings.ari_base_url, server.settings.ari_user,
                    server.settings.ari_secret())
    try:
        async with admin_client(server) as api:
            asked_so_far = 0
            for size in sizes:
                # A single call asked to confirm (its words heard a little otherwise on the
                # line) times nothing: then the next question, up to three.
                for _ in range(SINGLE_TRIES if size == 1 else 1):
                    wave = await _wave(server, api, ari, size, questions, numbers[:size],
                                       first=asked_so_far)
                    numbers, asked_so_far = numbers[size:], asked_so_far + size
                    if wave.first_audio_ms:
                        break
                single = next((w for w in waves if w.size == 1 and w.first_audio_ms), None)
                wave.judge(_median(single.first_audio_ms) if single else None)
                waves.append(wave)
                if wave.lag:
                    break
            figures = (await api.get("/api/bot/figures")).json()
    finally:
        await ari.close()
    steady = [wave.size for wave in waves if not wave.lag]
    return {
        "waves": [wave.summary() for wave in waves],
        # The waves stop at the first that lags: every wave before it kept up.
        "max_concurrent_without_lag": steady[-1] if steady else 0,
        "lagged_within_waves": len(steady) < len(waves),
        "lag_rule": f"a wave lags when its median first_audio_ms is over {LAG_FACTOR:g}x the "
                    f"single call's, or a call fails (the goal, {GOAL_MS:.0f} ms, is a figure "
                    f"to read, not a stop)",
        "questions": [question.text for question in questions],
        "server_figures": {name: round(value, 3) for name, value in figures.items()
                           if name in ("calls", "resolved", "handed_off",
                                       "recognition_per_audio_second",
                                       "answer_latency_ms_p50", "answer_latency_ms_p95")},
    }, waves


async def bench_callbot(server: Server, quick: bool = False) -> dict[str, Any]:
    """The callbot's figures on a running stack: recognition speed per engine, concurrent bot
    calls before answers lag, and the end of speech to the answer's first audio."""
    # Other stacks on the machine slow the bot down: the figures are read with its load.
    load_before = os.getloadavg()[0]
    folder = server.workdir / "callbot"
    recognition = await measure_recognizers(server.settings.path(server.settings.model_cache))
    english = server.settings.bot_recognizer_choices().get("en", "")
    if english in ("", "none", "keypad"):
        return {"recognition": recognition,
                "concurrent_calls": {"skipped": f"English has no recognizer ({english!r})"},
                "answer_start_ms": {"p50": None, "p95": None, "calls": 0}}
    asked = await _answerable_questions(server.settings.path(server.settings.model_cache),
                                        folder)
    calls, waves = await _concurrent_calls(server, asked, QUICK_WAVES if quick else WAVES,
                                          folder)
    steady = [wave for wave in waves if not wave.lag]
    first_audio = [ms for wave in steady for ms in wave.first_audio_ms]
    heard = [ms for wave in steady for ms in wave.heard_ms]
    population = await spoken_population(server, folder / "population", quick)
    front_door = await front_door_calls(server, folder / "front-door", quick)
    return {
        "recognition": recognition,
        "concurrent_calls": calls,
        "spoken_population": population,
        "front_door": front_door,
        "answer_start_ms": {
            **percentiles(first_audio), "calls": len(first_audio), "goal_p50": GOAL_MS,
            "heard_by_caller": {**percentiles(heard), "calls": len(heard)},
            "end_of_speech_silence_ms": VadSettings().end_silence_ms,
            "recognition_begins_after_ms": VadSettings().pause_ms,
        },
        "machine": {"cpus": os.cpu_count(), "load_average_before": round(load_before, 2),
                    "load_average_after": round(os.getloadavg()[0], 2)},
    }


async def _alone(server: Server, quick: bool) -> dict[str, Any]:
    """`python -m bench.callbot [--quick] [--waves]`: --waves, the concurrent calls alone."""
    if "--waves" not in sys.argv:
        return await bench_callbot(server, quick)
    folder = server.workdir / "callbot"
    asked = await _answerable_questions(server.settings.path(server.settings.model_cache),
                                        folder)
    calls, _ = await _concurrent_calls(server, asked, QUICK_WAVES if quick else WAVES, folder)
    return calls


if __name__ == "__main__":
    run_alone("callbot", _alone)
