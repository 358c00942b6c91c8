"""Real calls from SIPp through Asterisk to the controller: 120 and a number not in service."""

from __future__ import annotations

import httpx

from ivr.prompts import audio_path, duration_seconds
from tests.conftest import Server, call_record, caller_number
from tests.support.sip import SippCall


def prompt_seconds(server: Server, prompt_id: str, language: str) -> float:
    return duration_seconds(audio_path(server.settings.rendered_prompts_path, prompt_id, language))


async def test_call_to_120_is_answered_greeted_and_recorded(
        server: Server, api: httpx.AsyncClient) -> None:
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    result = await call.finished()

    # The scenario requires 200 OK, then a BYE from the server that SIPp answers: a clean end.
    assert result.ok, result.errors or result.output
    greeting = prompt_seconds(server, "greeting", "ko")
    assert call.rtp.payload_types == {8}  # PCMA, as offered
    assert call.rtp.audio_seconds >= greeting * 0.9, (call.rtp.audio_seconds, greeting)

    record = await call_record(api, caller)
    assert record["did"] == "120"
    assert record["line"] == "main"
    assert record["outcome"] == "completed"
    assert record["answered_at"] and record["ended_at"]
    assert record["started_at"] <= record["answered_at"] <= record["ended_at"]


async def test_district_number_keeps_its_district(server: Server, api: httpx.AsyncClient) -> None:
    caller = caller_number()
    # An example DID of dialplans/dids.yaml: the Mapo-gu health center.
    call = await SippCall("caller.xml", "0201201402", server.sip_target, server.workdir,
                          caller).start()
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert (record["line"], record["district"]) == ("health_center", "mapo")


async def test_unlisted_number_hears_not_in_service(server: Server,
                                                   api: httpx.AsyncClient) -> None:
    caller = caller_number()
    call = await SippCall("not_in_service.xml", "0299999999", server.sip_target,
                          server.workdir, caller).start()
    result = await call.finished()

    # 183 with early media, then 404: never an answer, never silence.
    assert result.ok, result.errors or result.output
    announcement = (prompt_seconds(server, "not_in_service", "ko")
                    + prompt_seconds(server, "not_in_service", "en"))
    assert call.rtp.audio_seconds >= announcement * 0.9, (call.rtp.audio_seconds, announcement)

    record = await call_record(api, caller)
    assert record["outcome"] == "not_in_service"
    assert record["line"] is None
    assert record["answered_at"] is None
