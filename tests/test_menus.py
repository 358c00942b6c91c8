"""The lines and menus, as callers use them: SIPp calls pressing keys by SIP INFO and by
RFC 2833, through the shipped dialplan (a copy the tests may edit and publish)."""

from __future__ import annotations

import httpx

from tests.conftest import (
    Server,
    audio_for,
    call_record,
    caller_number,
    live_dialplan,
    prompt_ends,
    prompt_seconds,
)
from tests.support.scenario import Press, info_caller
from tests.support.sip import SippCall


async def place(server: Server, number: str, scenario: str = "caller.xml") -> tuple[str, SippCall]:
    caller = caller_number()
    call = await SippCall(scenario, number, server.sip_target, server.workdir, caller).start()
    return caller, call


async def test_120_water_by_sip_info(server: Server, api: httpx.AsyncClient) -> None:
    # Keys pressed while prompts play interrupt them (type-ahead).
    scenario = info_caller(server.workdir, "water-info", [Press("2", 2.0), Press("1", 1.5)])
    caller, call = await place(server, "120", scenario)
    result = await call.finished()
    assert result.ok, result.errors or result.output
    record = await call_record(api, caller)
    assert record["path"] == ["main:2", "water:1", "queue:water"]
    assert (record["queue"], record["language"]) == ("water:ko", "ko")
    assert record["outcome"] == "no_agents"  # nobody is logged in for the skill


async def test_120_then_9_english_line(server: Server, api: httpx.AsyncClient) -> None:
    caller, call = await place(server, "120")
    await audio_for(call, 1.0)
    await call.rtp.press("9")
    await audio_for(call, call.rtp.audio_seconds + 1.0)  # the language choice starts
    await call.rtp.press("1")
    before = call.rtp.audio_seconds
    heard = await prompt_ends(call) - before
    # The foreign-language line's front door: "What can I help you with?...", then its menu,
    # in English.
    english_menu = (await prompt_seconds(server, "front_door", "en")
                    + await prompt_seconds(server, "foreign_menu", "en"))
    korean_menu = await prompt_seconds(server, "foreign_menu", "ko")
    assert abs(heard - english_menu) < 1.0, (heard, english_menu, korean_menu)
    await call.rtp.press("2")
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert record["language"] == "en"
    assert record["path"] == ["main:9", "foreign:1", "foreign_main:2", "queue:water"]
    assert record["queue"] == "water:en"


async def test_district_office_and_health_center(server: Server, api: httpx.AsyncClient) -> None:
    plan = await live_dialplan(server)
    office = next(d for d in plan.dids if d.line == "district_office" and d.district == "mapo")
    center = next(d for d in plan.dids if d.line == "health_center" and d.district == "mapo")
    for did, prompt in ((office, "office_greeting"), (center, "health_center_greeting")):
        # Each office's greeting names it: rendered for that very number.
        assert f"{prompt}/ko/{did.number}" in plan.prompt_files
        caller, call = await place(server, did.number)
        greeting = await prompt_seconds(server, prompt, "ko", did.number)
        await audio_for(call, greeting * 0.9)
        await call.rtp.press("5")
        assert (await call.finished()).ok
        record = await call_record(api, caller)
        assert (record["line"], record["district"]) == (did.line, "mapo")
        assert record["path"][-1] == "queue:culture"


async def test_121_goes_straight_to_water(server: Server, api: httpx.AsyncClient) -> None:
    caller, call = await place(server, "121")
    await audio_for(call, 1.0)
    await call.rtp.press("3")
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert record["line"] == "waterworks"
    assert record["path"] == ["water:3", "queue:water"]


async def test_invalid_digits_then_an_agent(server: Server, api: httpx.AsyncClient) -> None:
    caller, call = await place(server, "120")
    await audio_for(call, 1.0)
    for _ in range(3):
        await call.rtp.press("7")
        await audio_for(call, call.rtp.audio_seconds + 1.0)  # "not a valid choice", again
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert record["path"] == ["main:7", "main:7", "main:7", "main:failure", "queue:general"]
    assert record["outcome"] == "no_agents"


async def test_silence_then_an_agent(server: Server, api: httpx.AsyncClient) -> None:
    caller, call = await place(server, "121")  # the shorter greeting: the menu repeats 3 times
    result = await call.finished()
    assert result.ok, result.errors or result.output
    record = await call_record(api, caller)
    assert record["path"] == ["water:timeout", "water:timeout", "water:timeout",
                              "water:failure", "queue:water"]


async def test_star_goes_back_and_info_returns_to_its_menu(
        server: Server, api: httpx.AsyncClient) -> None:
    caller, call = await place(server, "120")
    await audio_for(call, 1.0)
    await call.rtp.press("1*3")  # traffic, back, administration: typed ahead in one go
    await audio_for(call, call.rtp.audio_seconds + 1.0)
    await call.rtp.press("2")  # the passport information...
    info = await prompt_seconds(server, "passport_info", "ko")
    await audio_for(call, call.rtp.audio_seconds + info + 1.0)  # ...then this menu again
    await call.rtp.press("1")
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert record["path"] == ["main:1", "traffic:*", "main:3", "administration:2",
                              "administration:1", "queue:administration"]
