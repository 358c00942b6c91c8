"""Speech at the front door, on real calls: at 120's main menu and at the foreign-language
line's (120, 9, then a language), the callbot listens while the menu plays. A question said in
English there is answered at once; "a person, please" goes where 0 goes, with the transcript;
Korean speech that is no question of the city's is not answered, and the menu follows again;
a key pressed over the prompt is a menu choice, as always."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Server, call_record, caller_number, wait_for
from tests.support.botcalls import (
    bot_step,
    hang_up,
    korean,
    live_bot,
    live_call,
    queued_call,
    say,
)
from tests.support.sip import SippCall


async def at_the_menu(server: Server, caller: str, menu: str) -> dict[str, str]:
    """Until the caller hears ``menu`` with the callbot listening; the call's live state."""
    async def listening() -> dict[str, str] | None:
        call = await live_call(server, caller)
        bot = await live_bot(server, caller)
        if call.get("menu") == menu and call.get("step") in ("prompt", "waiting") and (
                bot.get("snoop_channel")):
            return call
        return None

    found: dict[str, str] = await wait_for(listening, 60, what=f"the front door at {menu}")
    return found


async def dial(server: Server, keys: str = "") -> tuple[str, SippCall]:
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    if keys:
        await at_the_menu(server, caller, "main")
        await call.rtp.press(keys)
    return caller, call


async def test_an_english_question_at_the_front_door_is_answered_at_once(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    caller, call = await dial(server, "91")  # other languages, English: its front door
    await at_the_menu(server, caller, "foreign_main")
    await say(call, "how do i get a passport", tmp_path, before=0.0)
    await bot_step(server, caller, ("bot_answer",))  # no menu, no greeting of the bot
    await call.rtp.press("1")  # that answered it
    result = await call.finished()
    assert result.ok, result.errors or result.output

    record = await call_record(api, caller)
    assert record["outcome"] == "resolved_by_bot"
    assert record["bot"]["question_type"] == "passport_issue"
    assert "foreign_main:said" in record["path"] and record["path"][-1].startswith("bot:")


async def test_a_spoken_topic_goes_to_its_queue_with_the_transcript(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    """"Subway, please": the topic is plain (traffic), no question to answer: the caller
    waits in traffic's English queue, and the agent will see what was said."""
    caller, call = await dial(server, "91")
    await at_the_menu(server, caller, "foreign_main")
    await say(call, "Subway, please.", tmp_path, before=0.0)

    waiting = await queued_call(server, caller)
    assert waiting["queue"] == "traffic:en"
    bot = await live_bot(server, caller)
    assert bot["handoff"] == "routed by meaning"
    assert any("subway" in line.lower() for line in bot["transcript"])
    await hang_up(server, caller)
    await call.finished()
    record = await call_record(api, caller)
    assert "foreign_main:said:traffic" in record["path"]


async def test_asking_for_a_person_at_the_front_door_goes_where_0_goes(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    caller, call = await dial(server, "91")
    await at_the_menu(server, caller, "foreign_main")
    await say(call, "i want to talk to a person", tmp_path, before=0.0)

    waiting = await queued_call(server, caller)
    assert waiting["queue"] == "general:en"  # 0 of the foreign-language menu
    bot = await live_bot(server, caller)
    assert any("person" in line.lower() for line in bot["transcript"])
    await hang_up(server, caller)
    await call.finished()


async def test_korean_speech_that_is_no_question_gets_the_menu_again(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    """Natural Korean speech (a news sentence): not a question the city answers, so nothing
    is answered and nobody is routed; the caller hears "say it again or press a key" and the
    menu, and a key still works."""
    caller, call = await dial(server)
    await at_the_menu(server, caller, "main")
    speech, _ = korean("zeroth_104_003_0294.flac", tmp_path)
    await call.rtp.say(speech)
    await call.rtp.silence(1.5)

    async def asked_again() -> dict[str, Any] | None:
        now = await live_call(server, caller)
        bot = await live_bot(server, caller)
        heard = [line for line in bot.get("transcript", []) if line.startswith("caller:")]
        return bot if heard and now.get("menu") == "main" and now.get("step") in (
            "prompt", "waiting") else None

    bot = await wait_for(asked_again, 60, what="the menu again after the speech")
    assert not bot.get("question_type") and not bot.get("topic")
    await call.rtp.press("0")  # a key, as always
    record_path = await wait_for(lambda: queue_of(server, caller), 30, what="the queue")
    assert record_path == "general:ko"
    await hang_up(server, caller)
    await call.finished()
    record = await call_record(api, caller)
    assert "main:0" in record["path"]


async def queue_of(server: Server, caller: str) -> str:
    return (await live_call(server, caller)).get("queue", "")


async def test_a_key_over_the_front_door_prompt_is_a_menu_choice(
        server: Server, api: httpx.AsyncClient) -> None:
    caller, call = await dial(server)
    await at_the_menu(server, caller, "main")
    await call.rtp.press("2")  # water, over "무엇을 도와드릴까요?"

    async def in_water() -> bool:
        now = await live_call(server, caller)
        return now.get("menu") == "water"

    await wait_for(in_water, 30, what="the water menu")
    assert not (await live_bot(server, caller)).get("snoop_channel")  # it stopped listening
    await hang_up(server, caller)
    await call.finished()
