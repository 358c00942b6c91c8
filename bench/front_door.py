"""Front-door and intake calls for `make bench`: callers who say what they need at the
foreign-language line's menu (120, 9, 1: English; espeak-ng through the telephone band) or
at 120's main menu (natural Korean speech that is no question of the city's), callers who
press keys instead, and callers who report an illegally parked car by voice.

Figures:
- spoken topics routed right: the topic the call went to (the callbot's answer or question,
  or a queue) is the held-out question's; wrong routes: another topic, or any answer to a
  question the knowledge base does not cover;
- the time from the call's start to the right place (the bot's answer or a queue), by speech
  and by keys (a keypad caller listens to the menu, then presses the topic's key);
- intake dialogues filed without an agent, and their details against the script (place,
  vehicle number, when).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.botcalls import (
    BotCall,
    CallerEar,
    SpokenQuestion,
    at_once,
    caller_question,
    calling,
    hang_up,
    line_quiet,
    live_bot,
    until,
)
from bench.stacks import run_alone
from bench.understanding import OUT_OF_DOMAIN, held_out
from callbot.knowledge import load_seed
from ivr.ari import AriClient
from ivr.controller.bot import BOT_ANSWER, BOT_PROMPT, BOT_THINKING, FRONT_DOOR_LISTENING
from tests.support.botcalls import live_bot as live_state
from tests.support.sip import SippCall
from tests.support.speech import korean_recordings, spoken, telephone
from tests.support.stack import Server

PROJECT = Path(__file__).resolve().parents[1]
SPOKEN, SPOKEN_OUTSIDE, KOREAN, KEYPAD, INTAKE = 24, 6, 8, 9, 9
QUICK = 3  # of each, with --quick
AT_ONCE = 4
TO_ENGLISH = "91"  # at 120's front door: other languages, English
ENGLISH_KEYS = {"water": "2", "administration": "3", "culture": "4"}  # foreign_main's queues
ARRIVAL_SECONDS = 40.0
# What intake callers say, and what the complaint must then hold.
PLACES = [("in front of Gangnam station exit three", "gangnam"),
          ("next to Seoul city hall", "city hall"),
          ("in front of Seoul station", "seoul station")]
PLATES = [("one two, three four five six", "12?3456"), ("three four, five six seven eight",
                                                        "34?5678"),
          ("one two three, four five six seven", "123?4567")]
TIMES = [("this morning", "morning"), ("it has been there for two hours", "hour"),
         ("since yesterday evening", "yesterday")]


@dataclass
class FrontDoorCall:
    kind: str  # "spoken", "korean", "keypad", "intake"
    topic: str  # the expected topic ("" for a question the base does not cover)
    question: SpokenQuestion
    keys: str = ""  # for a keypad caller
    script: list[tuple[str, str]] = field(default_factory=list)  # intake: (said, expected)
    call: BotCall | None = None
    went_to: str = ""  # the topic the call went to
    answered: bool = False  # the bot read an answer (or asked to confirm one)
    seconds: float | None = None  # from dialling to the right place
    asked_again: bool = False
    filed: bool = False
    details_right: int = 0
    problem: str = ""


def _calls(folder: Path, quick: bool) -> list[FrontDoorCall]:
    topics = {entry.id: entry.topic for entry in load_seed(PROJECT / "knowledge" / "seed")}
    english = [q for q in held_out() if q.language == "en"]
    inside = [q for q in english if q.expected != OUT_OF_DOMAIN]
    outside = [q for q in english if q.expected == OUT_OF_DOMAIN]

    def count(wanted: int) -> int:
        return QUICK if quick else wanted

    calls = [FrontDoorCall("spoken", topics[q.expected],
                           caller_question(q.expected, q.text, spoken(q.text, folder)))
             for q in inside[::2][:count(SPOKEN)]]
    calls += [FrontDoorCall("spoken", "", caller_question(OUT_OF_DOMAIN, q.text,
                                                          spoken(q.text, folder)))
              for q in outside[:count(SPOKEN_OUTSIDE)]]
    for recording, transcript in korean_recordings()[::3][:count(KOREAN)]:
        calls.append(FrontDoorCall("korean", "", caller_question(
            OUT_OF_DOMAIN, transcript, telephone(recording, folder))))
    silence = caller_question("", "", bytes(1600))
    for number in range(count(KEYPAD)):
        topic = list(ENGLISH_KEYS)[number % len(ENGLISH_KEYS)]
        calls.append(FrontDoorCall("keypad", topic, silence, keys=ENGLISH_KEYS[topic]))
    report = "i want to report an illegally parked car"
    for number in range(count(INTAKE)):
        script = [PLACES[number % 3], PLATES[(number // 3) % 3], TIMES[number % 3]]
        calls.append(FrontDoorCall("intake", "traffic", caller_question(
            "illegal_parking_report", report, spoken(report, folder)), script=script))
    return calls


async def _front_door(call: BotCall, menu: str, seconds: float = 30) -> None:
    """Until the caller is at ``menu`` with the callbot listening (or the menu at least)."""
    await until(lambda: (call.menu == menu and call.step in ("prompt", "waiting"))
                or not call.sipp.running, seconds, f"the menu {menu}")


async def _one(server: Server, api: httpx.AsyncClient, ari: AriClient, caller: FrontDoorCall,
               calls: list[BotCall], folder: Path) -> None:
    number = f"0109992{random.randrange(10_000):04d}"  # plainly fake, one per call
    sipp = SippCall("caller.xml", "120", server.sip_target, server.workdir, number)
    sipp.rtp = ear = CallerEar()
    call = caller.call = BotCall(number, caller.question, sipp, ear)
    calls.append(call)
    quiet: asyncio.Task[None] | None = None
    started = time.monotonic()
    try:
        await sipp.start()
        await _front_door(call, "main")
        if caller.kind != "korean":
            await ear.press(TO_ENGLISH)
            await _front_door(call, "foreign_main")
        if caller.kind == "keypad":
            # A keypad caller hears the menu out, then presses the topic's key.
            await until(lambda: call.step == "waiting" or not sipp.running, 60, "the menu's end")
            await ear.press(caller.keys)
            await until(lambda: call.state == "queued" or not sipp.running, ARRIVAL_SECONDS,
                        "the queue")
            caller.went_to = call.queue.partition(":")[0]
            caller.seconds = time.monotonic() - started
            return
        await ear.silence(3.5)  # "What can I help you with?": then the caller speaks
        # Heard (the menu stops for the caller's words: watched while they speak, as a long
        # sentence may be taken in parts), then routed: the callbot answers or asks, a queue,
        # or the menu again.
        heard = asyncio.create_task(until(
            lambda: call.step in (FRONT_DOOR_LISTENING, BOT_THINKING)
            or call.state != "in_menu" or not sipp.running, 60, "the caller heard"))
        await ear.say(caller.question.payloads)
        quiet = asyncio.create_task(line_quiet(ear))
        await heard
        await until(lambda: call.state == "queued" or call.step in (BOT_ANSWER, BOT_PROMPT)
                    or (call.state == "in_menu" and call.step in ("prompt", "waiting"))
                    or not sipp.running, ARRIVAL_SECONDS, "a route")
        bot = await live_bot(api, call)
        if call.state == "queued":
            caller.went_to = call.queue.partition(":")[0]
        elif call.state == "with_bot":
            caller.went_to = str(bot.get("topic") or "")
            caller.answered = True
        else:
            caller.asked_again = True
        caller.seconds = time.monotonic() - started
        if caller.kind == "intake" and bot.get("complaint"):
            quiet.cancel()  # the caller speaks again: one sender of RTP at a time
            quiet = None
            await _intake(server, call, caller, folder)
    except Exception as exc:  # one call's failure is a figure, not the bench's end
        caller.problem = f"{type(exc).__name__}: {exc}"
    finally:
        if quiet is not None:
            quiet.cancel()
        if sipp.running:
            await asyncio.sleep(0.5)
            await hang_up(ari, call)
        with contextlib.suppress(Exception):
            await sipp.finished(30)
        await sipp.stop()


def _words(text: str) -> str:
    """Lower-case words and digits, one space apart ("Next, Seoul, city, hall." -> "next
    seoul city hall"): what a read-back is checked on; the vehicle's "?" is kept."""
    return " ".join(re.sub(r"[^\w?]+", " ", text.lower()).split())


async def _intake(server: Server, call: BotCall, caller: FrontDoorCall,
                  folder: Path) -> None:
    """Answer the bot's questions from the script; 1 to a read-back that is right, else 2."""
    bot: dict[str, Any] = {}
    for said, expected in caller.script:
        await until(lambda: call.step == "bot_listening" or not call.sipp.running, 60,
                    "the bot's question")
        await call.ear.silence(0.3)
        await call.ear.say(caller_question("", said, spoken(said, folder)).payloads)
        quiet = asyncio.create_task(line_quiet(call.ear))
        try:
            await until(lambda: call.step not in ("bot_listening", "bot_thinking")
                        or not call.sipp.running, 30, "the bot's reply")
        finally:
            quiet.cancel()
            await asyncio.wait([quiet])
        bot = await live_state(server, call.caller)
        if bot.get("phase") == "intake_read_back":
            right = _words(expected) in _words(str(bot.get("heard_detail", "")))
            await call.ear.press("1" if right else "2")
            if not right:
                return  # asked again: the caller gives up on the script here
            await until(lambda: call.step in ("bot_listening", "bot_goodbye")
                        or not call.sipp.running, 60, "the next question")
    if not bot.get("resolved"):
        await until(lambda: call.step == "bot_goodbye" or not call.sipp.running, 30,
                    "the receipt")
        bot = await live_state(server, call.caller)
    caller.filed = bot.get("resolved") is True
    if caller.filed:  # the receipt number and goodbye play out, then the server hangs up
        await until(lambda: not call.sipp.running, 60, "the server's goodbye")
    caller.details_right = sum(_words(expected) in _words(str(bot.get("details", {}).get(name, "")))
                               for name, (_, expected)
                               in zip(("place", "vehicle", "when"), caller.script, strict=True))


def _figures(calls: list[FrontDoorCall]) -> dict[str, Any]:
    spoken_calls = [c for c in calls if c.kind == "spoken" and c.topic]
    outside = [c for c in calls if c.kind in ("spoken", "korean") and not c.topic]
    keypad = [c for c in calls if c.kind == "keypad"]
    intake = [c for c in calls if c.kind == "intake"]

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 1) if values else None

    right = [c for c in spoken_calls if c.went_to == c.topic]
    return {
        "spoken_topics": {
            "calls": len(spoken_calls),
            "routed_right": round(len(right) / max(len(spoken_calls), 1), 3),
            "to_the_bot": sum(c.answered for c in spoken_calls),
            "to_a_queue": sum(bool(c.went_to) and not c.answered for c in spoken_calls),
            "asked_again": sum(c.asked_again for c in spoken_calls),
            "wrong_routes": sum(bool(c.went_to) and c.went_to != c.topic
                                for c in spoken_calls),
            "went_to": dict(Counter(f"{c.topic}->{c.went_to or 'menu'}"
                                    for c in spoken_calls if c.went_to != c.topic)),
        },
        "outside_the_base": {
            "calls": len(outside), "english": sum(c.kind == "spoken" for c in outside),
            "korean_natural_speech": sum(c.kind == "korean" for c in outside),
            "answered_wrongly": sum(c.answered for c in outside),
            "asked_again": sum(c.asked_again for c in outside),
            "to_a_queue": sum(bool(c.went_to) and not c.answered for c in outside),
        },
        "seconds_to_the_right_place": {
            "by_speech_p50": median([c.seconds for c in right if c.seconds is not None]),
            "by_keys_p50": median([c.seconds for c in keypad
                                   if c.seconds is not None and c.went_to == c.topic]),
            "keypad_calls": len(keypad),
            "note": "from dialling; both callers go 120, 9, 1 first; the keypad caller hears "
                    "the menu out before pressing",
        },
        "intake": {
            "calls": len(intake),
            "reached_the_intake": sum(c.answered for c in intake),
            "filed_without_an_agent": sum(c.filed for c in intake),
            "details_right": sum(c.details_right for c in intake),
            "details_asked": 3 * len(intake),
        },
        "problems": [f"{c.kind} {c.question.text[:40]!r}: {c.problem}" for c in calls
                     if c.problem][:6],
    }


async def front_door_calls(server: Server, folder: Path, quick: bool = False
                           ) -> dict[str, Any]:
    """Every front-door caller, AT_ONCE at a time, and the figures of their calls."""
    calls = await asyncio.to_thread(_calls, folder, quick)
    started = time.monotonic()
    async with calling(server) as (api, ari, followed):
        await at_once(AT_ONCE, [_one(server, api, ari, caller, followed, folder)
                                for caller in calls])
    return {**_figures(calls), "at_once": AT_ONCE,
            "minutes": round((time.monotonic() - started) / 60, 1)}


async def _alone(server: Server, quick: bool) -> dict[str, Any]:
    return await front_door_calls(server, server.workdir / "front-door", quick)


if __name__ == "__main__":
    run_alone("front-door", _alone)

