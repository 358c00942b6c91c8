"""Complaint intake on real calls: a caller on the English line (120, 9, 1, 1) reports an
illegally parked car by voice (espeak-ng through the call's RTP, heard by Whisper), confirms
what the bot read back with 1, and hears a receipt number; the complaint is on record with
the place, the vehicle and the time. A caller who hangs up halfway leaves an incomplete
complaint; one who cannot give a detail goes to an agent with what was collected.

(Short English words said by espeak-ng are hard for Whisper base over the telephone: "yes" is
pressed, and the answers are ones it hears.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ivr.models import Role
from tests.conftest import Server, call_record, wait_for
from tests.support.botcalls import bot_step, english_bot, hang_up, live_bot, say
from tests.support.sip import SippCall
from tests.support.users import signed_in


async def asked(server: Server, caller: str, phase: str, detail: str = "") -> dict[str, Any]:
    """Until the bot waits for the caller in ``phase`` (about ``detail``); the bot's state."""
    async def waiting() -> dict[str, Any] | None:
        bot = await live_bot(server, caller)
        if bot.get("phase") == phase and (not detail or bot.get("asking") == detail):
            return bot
        return None

    return await wait_for(waiting, 60, what=f"the bot in {phase} {detail}")


async def report_parking_up_to_the_vehicle(server: Server, folder: Path) -> tuple[str, SippCall]:
    """A caller who reports a car parked in front of Gangnam station and confirms the place."""
    caller, call = await english_bot(server)
    await bot_step(server, caller, ("bot_listening",))
    await say(call, "i want to report an illegally parked car", folder)
    bot = await asked(server, caller, "intake_detail", "place")
    assert bot["intake"] == "illegal_parking" and bot["receipt"]
    await bot_step(server, caller, ("bot_listening",))
    await say(call, "in front of Gangnam station exit three", folder)
    bot = await asked(server, caller, "intake_read_back", "place")
    assert "gangnam" in bot["heard_detail"].lower()
    await call.rtp.press("1")  # that is right
    await asked(server, caller, "intake_detail", "vehicle")
    return caller, call


async def test_an_illegal_parking_report_is_taken_by_voice(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    caller, call = await report_parking_up_to_the_vehicle(server, tmp_path)
    await bot_step(server, caller, ("bot_listening",))
    # A foreign caller says the plate's digits (the Korean letter is kept unknown).
    await say(call, "one two, three four five six", tmp_path)
    bot = await asked(server, caller, "intake_read_back", "vehicle")
    assert bot["heard_detail"] == "12?3456"
    await call.rtp.press("1")
    await asked(server, caller, "intake_detail", "when")
    await bot_step(server, caller, ("bot_listening",))
    await say(call, "this morning", tmp_path)
    result = await call.finished()  # the receipt number, goodbye, and the server hangs up
    assert result.ok, result.errors or result.output

    record = await call_record(api, caller)
    assert record["outcome"] == "resolved_by_bot"
    complaint = record["bot"]["complaint"]
    assert complaint["kind"] == "illegal_parking"
    filed = (await api.get(f"/api/complaints/{complaint['receipt']}")).json()
    assert filed["status"] == "filed" and filed["call_record_id"] == record["id"]
    assert "gangnam" in filed["details"]["place"].lower()
    assert filed["details"]["vehicle"] == "12?3456"
    assert "morning" in filed["details"]["when"].lower()
    assert filed["district"] == "gangnam"  # from the place: 120 has no district of its own
    assert any("intake_filed" in line for line in await events(api, record))

    # Agents read it and follow it up; the API refuses a detail the kind does not have.
    async with signed_in(server, Role.AGENT) as agent:
        listed = (await agent.get("/api/complaints", params={"kind": "illegal_parking"})).json()
        assert complaint["receipt"] in {c["receipt"] for c in listed}
        wrong = await agent.patch(f"/api/complaints/{complaint['receipt']}",
                                  json={"details": {"colour": "red"}})
        assert wrong.status_code == 422 and "colour" in wrong.text
        closed = await agent.patch(f"/api/complaints/{complaint['receipt']}",
                                   json={"details": {"vehicle": "12가3456"}, "status": "closed",
                                         "note": "towed"})
        assert closed.status_code == 200, closed.text
        assert closed.json()["details"]["vehicle"] == "12가3456"
    async with httpx.AsyncClient(base_url=server.settings.api_base_url) as anonymous:
        assert (await anonymous.get("/api/complaints")).status_code == 401


async def events(api: httpx.AsyncClient, record: dict[str, Any]) -> list[str]:
    detail = (await api.get(f"/api/calls/{record['id']}")).json()
    return [f"{event['kind']} {event['detail']}" for event in detail["events"]]


async def test_a_hang_up_mid_intake_leaves_an_incomplete_complaint(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    caller, call = await report_parking_up_to_the_vehicle(server, tmp_path)
    await hang_up(server, caller)  # the line drops when the caller is asked for the vehicle
    await call.finished()
    record = await call_record(api, caller)
    receipt = record["bot"]["complaint"]["receipt"]
    kept = (await api.get(f"/api/complaints/{receipt}")).json()
    assert kept["status"] == "incomplete"
    assert "gangnam" in kept["details"]["place"].lower() and "vehicle" not in kept["details"]
    incomplete = (await api.get("/api/complaints", params={"status": "incomplete"})).json()
    assert receipt in {c["receipt"] for c in incomplete}


async def test_a_detail_not_given_twice_goes_to_an_agent_with_what_was_collected(
        server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    caller, call = await report_parking_up_to_the_vehicle(server, tmp_path)
    receipt = (await live_bot(server, caller))["receipt"]
    for _ in range(2):
        await bot_step(server, caller, ("bot_listening",))
        await say(call, "I can not see it", tmp_path)
    await wait_for(lambda: bot_handed_over(server, caller), 30, what="the hand-over")
    await hang_up(server, caller)
    await call.finished()
    record = await call_record(api, caller)
    assert record["bot"]["handoff"] == "no vehicle for the complaint"
    kept = (await api.get(f"/api/complaints/{receipt}")).json()
    assert kept["status"] == "handed_over" and "gangnam" in kept["details"]["place"].lower()


async def bot_handed_over(server: Server, caller: str) -> bool:
    return bool((await live_bot(server, caller)).get("handoff"))

