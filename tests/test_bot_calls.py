"""The callbot on real calls: SIPp dials 120, the test speaks into the call's RTP (a question
rendered by espeak-ng, as G.711 A-law), and the bot answers, hands over or gives way.

English is heard by PocketSphinx (its model ships in the wheel); Korean has no recognizer on a
machine without a Vosk model, so the Korean line gets the keypad version of the bot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import httpx

from ivr.ari import AriClient
from ivr.redis_client import connect_redis
from tests.conftest import Server, audio_for, call_record, caller_number, wait_for
from tests.support.sip import SippCall
from tests.support.speech import alaw, frames, spoken, write_pcap
from tests.support.team import team_of


async def live_step(server: Server, caller: str) -> str:
    redis = connect_redis(server.settings)
    try:
        async for key in redis.scan_iter(match="ivr:call:*"):
            values = cast(dict[str, str], await redis.hgetall(key))
            if values.get("caller") == caller:
                return values.get("step", "")
        return ""
    finally:
        await redis.aclose()


async def bot_step(server: Server, caller: str, steps: tuple[str, ...]) -> None:
    async def reached() -> bool:
        return await live_step(server, caller) in steps

    await wait_for(reached, 60, what=f"the bot in {steps}")


def question(text: str, folder: Path) -> list[bytes]:
    """The caller's words as 20 ms A-law payloads, also kept as a pcap for inspection."""
    payloads = frames(alaw(spoken(text, folder)))
    write_pcap(payloads, folder / f"{'-'.join(text.split())}.pcap")
    return payloads


async def english_bot(server: Server) -> tuple[str, SippCall]:
    """A caller on 120, then 9 (other languages), 1 (English), 1 (traffic: the callbot)."""
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    await audio_for(call, 0.5)
    await call.rtp.press("911")
    return caller, call


async def timeline(api: httpx.AsyncClient, record: dict[str, Any]) -> list[str]:
    events = (await api.get(f"/api/calls/{record['id']}")).json()["events"]
    return [event["kind"] for event in events]


async def test_english_question_answered_by_the_bot(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    caller, call = await english_bot(server)
    await bot_step(server, caller, ("bot_listening",))
    await call.rtp.silence(0.5)
    await call.rtp.say(question("where is the tow yard", tmp_path))
    await call.rtp.silence(1.5)  # a phone goes on sending the line's quiet

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
    assert (bot["question_type"], bot["resolved"], bot["mode"]) == ("towed_car", True,
                                                                    "speech")
    assert bot["confidence"] >= 0.4
    assert any(line.startswith("caller: where is the tow yard") for line in bot["transcript"])
    stages = bot["stages"][0]
    assert bot["latencies_ms"] and set(stages) == {"audio_s", "recognize_s", "understand_ms",
                                                   "speak_ms", "first_audio_ms"}
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
        await call.rtp.say(question("i want to talk to a person", tmp_path))
        await call.rtp.silence(1.5)

        async def with_agent() -> dict[str, Any] | None:
            calls = (await api.get("/api/calls", params={"limit": 20})).json()
            mine = next((c for c in calls if c["caller"] == caller), None)
            if mine is None:
                return None
            live = await api.get(f"/api/calls/live/{mine['channel_id']}")
            now = live.json() if live.status_code == 200 else {}
            return now if now.get("state") == "talking" else None

        # What the agent sees the moment they answer: the bot's transcript and why it handed
        # over.
        seen = await wait_for(with_agent, 60, what="the agent talking with the caller")
        assert seen["agent"] == agent and seen["queue"] == "traffic:en"
        assert seen["bot"]["handoff"] == "asked for an agent"
        assert any("talk to a person" in line for line in seen["bot"]["transcript"])
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
    await call.rtp.say(question("frozen pipes no water in winter", tmp_path))
    await call.rtp.silence(1.5)
    await bot_step(server, caller, ("bot_answer",))  # the greeting was cut: the answer plays
    await call.rtp.press("0")  # and digits work alongside speech: an agent, please
    await bot_step(server, caller, ("bot_handoff", "no_agents", "callback_offer",
                                    "callback_choice", "connecting", "holding"))
    await call.rtp.press("2")  # no callback, thanks: nobody can answer now, and goodbye
    assert (await call.finished()).ok
    kinds = await timeline(api, await call_record(api, caller))
    assert kinds.index("bot") < kinds.index("barge_in") < kinds.index("bot_answer")
    assert "bot_handoff" in kinds


async def test_korean_line_without_a_recognizer_gets_the_keypad_bot(
        server: Server, api: httpx.AsyncClient) -> None:
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    await audio_for(call, 0.5)
    await call.rtp.press("11")  # traffic, then the callbot
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
