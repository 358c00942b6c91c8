"""The callbot on real calls: SIPp dials 120, the test speaks into the call's RTP (natural
Korean speech from ../shared/speech/ko through the telephone band, or English rendered by
espeak-ng, as G.711 A-law), and the bot answers, asks, hands over or gives way.

Both are heard by Whisper base in the controller's recognizer workers; Mongolian has no
recognizer, so the Mongolian line gets the keypad version of the bot.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx

from callbot.understand import ANSWER
from ivr.ari import AriClient
from tests.conftest import Server, audio_for, call_record, caller_number, wait_for
from tests.support.botcalls import (
    bot_step,
    english_bot,
    korean,
    korean_bot,
    live_bot,
    live_step,
    question,
    say,
)
from tests.support.sip import SippCall
from tests.support.speech import (
    character_errors,
)
from tests.support.team import team_of


def controller_workers(server: Server) -> list[int]:
    """The recognizer worker processes of the stack's controller."""
    controller = server.pid("controller")
    workers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == controller and fields[0] != "Z":  # not one killed, unreaped
            workers.append(int(stat.parent.name))
    return workers


async def talking_with_agent(api: httpx.AsyncClient, caller: str) -> dict[str, Any] | None:
    """The caller's call as the agent's screen shows it, once they talk (else None)."""
    calls = (await api.get("/api/calls", params={"limit": 20})).json()
    mine = next((c for c in calls if c["caller"] == caller), None)
    if mine is None:
        return None
    live = await api.get(f"/api/calls/live/{mine['channel_id']}")
    now = live.json() if live.status_code == 200 else {}
    return now if now.get("state") == "talking" else None


async def timeline(api: httpx.AsyncClient, record: dict[str, Any]) -> list[str]:
    events = (await api.get(f"/api/calls/{record['id']}")).json()["events"]
    return [event["kind"] for event in events]


async def test_english_question_answered_by_the_bot(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    caller, call = await english_bot(server)
    await bot_step(server, caller, ("bot_listening",))
    await say(call, "how do i get a passport", tmp_path, before=0.5)

    await bot_step(server, caller, ("bot_answer",))
    before = call.rtp.packets
    await bot_step(server, caller, ("bot_prompt", "bot_listening"))  # "did that answer...?"
    assert call.rtp.packets - before > 50  # the answer's audio reached the caller (> 1 s)
    await call.rtp.press("1")
    result = await call.finished()  # goodbye, and the server hangs up
    assert result.ok, result.errors or result.output

    record = await call_record(api, caller)
    assert record["outcome"] == "resolved_by_bot"
    bot = record["bot"]
    assert (bot["question_type"], bot["resolved"], bot["mode"]) == ("passport_issue", True,
                                                                    "speech")
    assert bot["confidence"] >= ANSWER
    assert any("passport" in line.lower() for line in bot["transcript"])
    stages = bot["stages"][0]
    assert bot["latencies_ms"] and set(stages) == {
        "audio_s", "end_of_turn_ms", "recognize_s", "words_sure", "no_speech", "understand_ms",
        "started_at_pause", "speak_ms", "first_audio_ms"}
    # Nothing was said after the question: the recognition begun at its first pause was the
    # utterance's.
    assert stages["started_at_pause"] is True
    assert record["path"][-1] == "bot:traffic"
    figures = (await api.get("/api/bot/figures")).json()
    assert figures["resolved"] >= 1 and figures["answer_latency_ms_p50"] > 0
    print(f"\nthe bot's stages for {stages['audio_s']:.1f} s of speech: recognition "
          f"{stages['recognize_s']:.2f} s, understanding {stages['understand_ms']:.1f} ms, "
          f"answer rendered in {stages['speak_ms']:.0f} ms; end of speech to the answer's "
          f"first audio {stages['first_audio_ms']:.0f} ms")


async def test_caller_asking_for_an_agent_is_handed_over_with_the_transcript(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    async with team_of(server) as team:
        agent = await team.agent("roads", "traffic=4", "ko,en")
        caller, call = await english_bot(server)
        await bot_step(server, caller, ("bot_listening",))
        await call.rtp.silence(0.5)
        # With a pause in the middle (espeak-ng's quiet after "talk", about 0.4 s): the bot
        # starts on "I want to talk" as the caller pauses, drops it when they go on, and
        # hears the whole request.
        await call.rtp.say(question("i want to talk", tmp_path))
        await call.rtp.say(question("to a person", tmp_path))
        await call.rtp.silence(1.5)

        # What the agent sees the moment they answer: the bot's transcript and why it handed
        # over.
        seen = await wait_for(lambda: talking_with_agent(api, caller), 60,
                              what="the agent talking with the caller")
        assert seen["agent"] == agent and seen["queue"] == "traffic:en"
        assert seen["bot"]["handoff"] == "asked for an agent"
        said = [line for line in seen["bot"]["transcript"] if line.startswith("caller:")]
        assert len(said) == 1 and "talk" in said[0] and "person" in said[0].lower(), said
        ari = AriClient(server.settings.ari_base_url, server.settings.ari_user,
                        server.settings.ari_secret())
        try:
            await ari.hangup(seen["channel_id"])  # the consultation is over
        finally:
            await ari.close()
    result = await call.finished()
    assert result.ok, result.errors or result.output
    record = await call_record(api, caller)
    assert record["bot"]["handoff"] == "asked for an agent"
    assert record["bot"]["resolved"] is False
    assert record["queue"] == "traffic:en" and record["agent"] == agent


async def test_speaking_over_the_bot_stops_it(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    caller, call = await english_bot(server)
    await bot_step(server, caller, ("bot_prompt",))  # the greeting plays
    await say(call, "how do i get a passport", tmp_path, before=0.0)
    await bot_step(server, caller, ("bot_answer",))  # the greeting was cut: the answer plays
    await call.rtp.press("0")  # and digits work alongside speech: an agent, please
    await bot_step(server, caller, ("bot_handoff", "no_agents", "callback_offer",
                                    "callback_choice", "connecting", "holding"))
    await call.rtp.press("2")  # no callback, thanks: nobody can answer now, and goodbye
    assert (await call.finished()).ok
    kinds = await timeline(api, await call_record(api, caller))
    assert kinds.index("bot") < kinds.index("barge_in") < kinds.index("bot_answer")
    assert "bot_handoff" in kinds


async def test_a_line_without_a_recognizer_gets_the_keypad_bot(
        server: Server, api: httpx.AsyncClient) -> None:
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    await audio_for(call, 0.5)
    await call.rtp.press("951")  # other languages, Mongolian (no recognizer), the callbot
    await bot_step(server, caller, ("bot_prompt",))
    await audio_for(call, call.rtp.audio_seconds + 2.0)  # "the keypad version...", never silence
    await call.rtp.press("1")  # the first question read out
    await bot_step(server, caller, ("bot_answer",))
    await call.rtp.press("1")  # that answered it (typed ahead of the confirmation)
    result = await call.finished()
    assert result.ok, result.errors or result.output
    record = await call_record(api, caller)
    assert record["outcome"] == "resolved_by_bot"
    assert record["bot"]["mode"] == "keypad" and record["bot"]["question_type"]


async def test_a_low_confidence_question_gets_the_confirming_question(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    """"I left my phone in a taxi": lost in a taxi, or calling one? The bot names the closest
    question type and asks; the caller says yes by pressing 1, and hears that answer."""
    caller, call = await english_bot(server)
    await bot_step(server, caller, ("bot_listening",))
    await say(call, "i left my phone in a taxi", tmp_path, before=0.5)

    async def asking() -> dict[str, Any] | None:
        bot = await live_bot(server, caller)
        return bot if bot.get("phase") == "confirm_type" else None

    bot = await wait_for(asking, 60, what="the confirming question")
    assert bot["pending"].startswith("taxi") and not bot["question_type"]
    await bot_step(server, caller, ("bot_prompt",))
    await audio_for(call, call.rtp.audio_seconds + 1.0)  # "Is your question about ...?"
    await call.rtp.press("1")
    await bot_step(server, caller, ("bot_answer",))
    await call.rtp.press("1")  # that answered it
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert record["outcome"] == "resolved_by_bot"
    assert record["bot"]["question_type"] == bot["pending"]
    kinds = await timeline(api, record)
    assert kinds.index("bot_confirm") < kinds.index("bot_answer")


async def test_korean_speech_outside_the_knowledge_base_is_handed_over_with_its_words(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    """A Korean caller says something no question type answers (natural speech: a sentence
    about coffee): the bot hears it, says it cannot answer that, and an agent gets the call
    with the transcript, never an answer read for another question."""
    async with team_of(server) as team:
        agent = await team.agent("coffee", "traffic=4", "ko")
        caller, call = await korean_bot(server)
        await bot_step(server, caller, ("bot_listening",))
        await call.rtp.silence(0.5)
        speech, transcript = korean("zeroth_104_003_0294.flac", tmp_path)
        await call.rtp.say(speech)
        await call.rtp.silence(1.5)

        async def asked_again_or_handed_over() -> str:
            bot = await live_bot(server, caller)
            if bot.get("handoff"):
                return "handed over"
            return "asked again" if bot.get("misses") else ""

        if await wait_for(asked_again_or_handed_over, 60, what="the bot's reply") == \
                "asked again":  # nothing near, but not nothing: once more, in other words
            await bot_step(server, caller, ("bot_listening",))
            again, _ = korean("zeroth_104_003_0437.flac", tmp_path)
            await call.rtp.say(again)
            await call.rtp.silence(1.5)

        seen = await wait_for(lambda: talking_with_agent(api, caller), 90,
                              what="the agent talking with the caller")
        assert seen["agent"] == agent and seen["queue"] == "traffic:ko"
        assert seen["bot"]["handoff"] in ("not in the knowledge base", "not understood")
        heard = next(line for line in seen["bot"]["transcript"] if line.startswith("caller:"))
        wrong, size = character_errors(heard.removeprefix("caller:"), transcript)
        assert wrong / size < 0.3, heard  # heard over the telephone band, nearly word for word
        ari = AriClient(server.settings.ari_base_url, server.settings.ari_user,
                        server.settings.ari_secret())
        try:
            await ari.hangup(seen["channel_id"])
        finally:
            await ari.close()
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert "bot_answer" not in await timeline(api, record)
    assert record["bot"]["resolved"] is False and not record["bot"]["question_type"]


async def test_garbled_speech_is_never_answered(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    """espeak-ng's Korean is not speech a recognizer trained on people can make out: whatever
    it hears, the bot asks again, then hands over; it never reads an answer."""
    caller, call = await korean_bot(server)
    handed_over = ("bot_handoff", "no_agents", "callback_offer", "callback_choice",
                   "connecting", "holding")
    for _ in range(2):
        await bot_step(server, caller, ("bot_listening",))
        await call.rtp.silence(0.5)
        await call.rtp.say(question("수도 요금 이사 정산 어떻게 하나요", tmp_path, voice="ko"))
        await call.rtp.silence(1.5)
        await bot_step(server, caller, ("bot_prompt", "bot_answer", *handed_over))
        if await live_step(server, caller) in handed_over:
            break
    await bot_step(server, caller, handed_over)
    await call.rtp.press("2")
    await call.finished()
    record = await call_record(api, caller)
    kinds = await timeline(api, record)
    assert "bot_answer" not in kinds and "bot_handoff" in kinds
    assert not record["bot"]["question_type"]


async def test_a_recognizer_worker_that_dies_mid_call_hands_that_call_over(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    """The worker recognizing a caller's speech is killed: that caller goes to an agent's
    queue with what was heard so far; the controller starts a new worker, and the next bot
    call is heard as usual."""
    before = controller_workers(server)
    assert before, "the controller has recognizer workers"
    caller, call = await korean_bot(server)
    await bot_step(server, caller, ("bot_listening",))
    await call.rtp.silence(0.5)
    speech, _ = korean("zeroth_104_003_0360.flac", tmp_path)  # about 10 s of speech
    talking = asyncio.create_task(call.rtp.say(speech + speech))  # cut at 15 s: recognized

    async def thinking() -> bool:
        return await live_step(server, caller) == "bot_thinking"

    await wait_for(thinking, 60, 0.01, what="the bot recognizing")  # the caller goes on
    for pid in controller_workers(server):
        os.kill(pid, signal.SIGKILL)
    await talking
    await call.rtp.silence(1.0)
    await bot_step(server, caller, ("bot_handoff", "no_agents", "callback_offer",
                                    "callback_choice", "connecting", "holding"))
    assert (await live_bot(server, caller))["handoff"] == "recognizer failed"
    await call.rtp.press("2")
    await call.finished()

    # The next bot call is heard as usual (the worker that died idle is replaced when it is
    # next needed, without losing the utterance), and every worker is a new one.
    await test_english_question_answered_by_the_bot(server, api, tmp_path)

    async def replaced() -> bool:
        now = controller_workers(server)
        return len(now) >= len(before) and not set(now) & set(before)

    await wait_for(replaced, 60, what="new recognizer workers")
