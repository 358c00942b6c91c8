"""Real calls from SIPp through Asterisk to the controller: 120 and a number not in service."""

from __future__ import annotations

import httpx

from tests.conftest import Server, audio_for, call_record, caller_number, prompt_seconds
from tests.support.sip import SippCall


async def test_call_to_120_is_answered_greeted_and_recorded(
        server: Server, api: httpx.AsyncClient) -> None:
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    greeting = await prompt_seconds(server, "greeting", "ko")
    await audio_for(call, greeting)  # the whole greeting reaches the caller...
    await call.rtp.press("4")  # ...who then chooses welfare (RFC 2833) and is connected
    result = await call.finished()

    # The scenario requires 200 OK, then a BYE from the server that SIPp answers: a clean end.
    assert result.ok, result.errors or result.output
    assert call.rtp.payload_types == {8}  # PCMA, as offered
    record = await call_record(api, caller)
    assert record["did"] == "120"
    assert record["line"] == "main"
    assert record["outcome"] == "no_agents"
    assert record["path"] == ["main:4", "queue:welfare"]
    assert record["answered_at"] and record["ended_at"]
    assert record["started_at"] <= record["answered_at"] <= record["ended_at"]
    assert record["dialplan_version"] >= 1


async def test_unlisted_number_hears_not_in_service(server: Server,
                                                   api: httpx.AsyncClient) -> None:
    caller = caller_number()
    call = await SippCall("not_in_service.xml", "0299999999", server.sip_target,
                          server.workdir, caller).start()
    result = await call.finished()

    # 183 with early media, then 404: never an answer, never silence.
    assert result.ok, result.errors or result.output
    announcement = (await prompt_seconds(server, "not_in_service", "ko")
                    + await prompt_seconds(server, "not_in_service", "en"))
    assert call.rtp.audio_seconds >= announcement * 0.9, (call.rtp.audio_seconds, announcement)

    record = await call_record(api, caller)
    assert record["outcome"] == "not_in_service"
    assert record["line"] is None
    assert record["answered_at"] is None
