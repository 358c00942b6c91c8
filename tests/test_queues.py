"""Skill queues with real agents: baresip softphones registered to agents' SIP accounts, SIPp
callers choosing topics by SIP INFO. Each test makes its own agents and removes them."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, cast

import httpx
import pytest

from ivr.ari import AriClient, AriError
from tests.conftest import Server, call_record, caller_number, run_ivr, wait_for
from tests.support.scenario import Press, info_caller
from tests.support.sip import SCENARIOS, SippCall, free_udp_port
from tests.support.team import Team, team_of


@pytest.fixture
async def team(server: Server) -> AsyncIterator[Team]:
    async with team_of(server) as team:
        yield team


async def call_in(server: Server, number: str, presses: list[Press],
                  talk: float) -> tuple[str, SippCall]:
    """A caller who presses keys, then stays ``talk`` seconds and hangs up."""
    caller = caller_number()
    scenario = info_caller(server.workdir, f"queue-{caller}", presses, hang_up_after=talk)
    call = await SippCall(scenario, number, server.sip_target, server.workdir, caller).start()
    return caller, call


async def timeline(api: httpx.AsyncClient, record: dict[str, Any]) -> list[tuple[str, str]]:
    response = await api.get(f"/api/calls/{record['id']}")
    response.raise_for_status()
    return [(event["kind"], event["agent"] or "") for event in response.json()["events"]]


async def test_english_caller_reaches_the_english_speaker(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    korean = await team.agent("kim", "water=5", "ko")  # idle longest, most proficient
    english = await team.agent("smith", "water=3", "ko,en")
    caller, call = await call_in(server, "120", [Press("9", 2.0), Press("1", 1.5),
                                                 Press("2", 1.5)], talk=8)
    result = await call.finished()
    assert result.ok, result.errors or result.output
    record = await call_record(api, caller)
    assert (record["queue"], record["agent"], record["outcome"]) == ("water:en", english,
                                                                      "answered")
    assert record["wait_seconds"] is not None and record["wait_seconds"] >= 0
    assert ("answered", english) in await timeline(api, record)
    assert korean not in {agent for _, agent in await timeline(api, record)}


async def test_water_caller_reaches_the_more_proficient_agent(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    await team.agent("lee", "water=3")  # idle longer
    best = await team.agent("park", "water=5")
    caller, call = await call_in(server, "121", [Press("1", 2.0)], talk=6)
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert (record["agent"], record["outcome"]) == (best, "answered")
    # After the call, the agent has their wrap-up time, then is available again.
    assert (await team.state(best))["state"] in ("wrap_up", "available")

    async def available_again() -> bool:
        return (await team.state(best))["state"] == "available"

    await wait_for(available_again, 15, what="the end of wrap-up")


async def test_ring_no_answer_goes_to_the_next_agent(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    slow = await team.agent("slow", "traffic=5", answer=False)  # rings, never answers
    quick = await team.agent("quick", "traffic=4")
    caller, call = await call_in(server, "120", [Press("1", 2.0), Press("2", 1.5)], talk=14)
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert (record["agent"], record["outcome"]) == (quick, "answered")
    steps = await timeline(api, record)
    assert steps[:5] == [("queued", ""), ("offered", slow), ("no_answer", slow),
                         ("offered", quick), ("answered", quick)]
    missed = await team.state(slow)
    assert (missed["state"], missed["pause_reason"]) == ("paused", "missed calls")


async def test_paused_and_unregistered_agents_are_never_offered(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    paused = await team.agent("paused", "welfare=5")
    assert run_ivr("agent", "state", paused, "paused", "--reason", "training").returncode == 0
    offline = await team.agent("offline", "welfare=5", softphone=False)  # no phone registered
    assert (await team.state(offline))["state"] == "available"
    caller, call = await call_in(server, "120", [Press("4", 2.0)], talk=6)
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert record["outcome"] == "abandoned"
    assert record["agent"] is None
    steps = await timeline(api, record)
    assert steps[0] == ("queued", "") and steps[-1] == ("abandoned", "")
    assert not [step for step in steps if step[0] == "offered"]


async def test_wrap_up_is_respected(server: Server, api: httpx.AsyncClient, team: Team) -> None:
    agent = await team.agent("solo", "culture=4")
    first_caller, first = await call_in(server, "120", [Press("5", 2.0)], talk=5)
    assert (await first.finished()).ok
    ended = datetime.fromisoformat((await call_record(api, first_caller))["ended_at"])
    second_caller, second = await call_in(server, "120", [Press("5", 0.5)], talk=10)
    assert (await second.finished()).ok
    record = await call_record(api, second_caller)
    assert record["agent"] == agent
    events = (await api.get(f"/api/calls/{record['id']}")).json()["events"]
    offered = next(datetime.fromisoformat(e["at"]) for e in events if e["kind"] == "offered")
    wrap_up = server.settings.wrap_up_seconds
    assert (offered - ended).total_seconds() >= wrap_up * 0.9, (offered, ended)


async def test_waiting_caller_hears_position_and_estimated_wait(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    busy = await team.agent("busy", "culture=4")  # logged in, so the caller waits...
    assert run_ivr("agent", "state", busy, "paused", "--reason", "meeting").returncode == 0
    # ...is offered a callback (the wait is long), declines by waiting, and is told the place.
    caller, call = await call_in(server, "120", [Press("5", 2.0)], talk=35)
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert record["outcome"] == "abandoned"
    events = (await api.get(f"/api/calls/{record['id']}")).json()["events"]
    positions = [e["detail"] for e in events if e["kind"] == "position"]
    assert positions and positions[0].startswith("1, about "), events


async def live_call(team: Team, caller: str) -> dict[str, str]:
    """The live state (Redis) of the call from ``caller``, once it exists."""

    async def find() -> dict[str, str] | None:
        async for key in team.acd.redis.scan_iter(match="ivr:call:*"):
            values = cast(dict[str, str], await team.acd.redis.hgetall(key))
            if values.get("caller") == caller:
                return values
        return None

    found: dict[str, str] = await wait_for(find, 30, what=f"the call from {caller}")
    return found


async def carrier_answers(server: Server) -> asyncio.subprocess.Process:
    """A SIPp carrier on the trunk's contact that answers one call out (and hangs up when
    the other side does)."""
    return await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SCENARIOS / "carrier_answers.xml"), "-m", "1", "-i", "127.0.0.1",
        "-p", server.settings.trunk_contact.rsplit(":", 1)[1], "-mp", str(free_udp_port()),
        "-nostdin", "-timeout", "120s", cwd=server.workdir,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def test_callback_keeps_the_place_and_connects_caller_and_agent(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    # Administration: a queue no other test answers, so no handle time makes the wait look short.
    agent = await team.agent("later", "administration=4")
    assert run_ivr("agent", "state", agent, "paused", "--reason", "meeting").returncode == 0

    # A waits, is offered a callback (the wait is long) and takes it: 1.
    first_caller = caller_number()
    first = await SippCall("caller.xml", "120", server.sip_target, server.workdir,
                           first_caller).start()
    await wait_for(lambda: _audio(first), 10, what="audio")
    await first.rtp.press("31")  # administration, local tax

    async def offered() -> bool:
        return (await live_call(team, first_caller)).get("step") in ("callback_offer",
                                                                       "callback_choice")

    await wait_for(offered, 30, what="the callback offer")
    await first.rtp.press("1")
    assert (await first.finished()).ok  # "we will call you back", then the server hangs up
    asked = await call_record(api, first_caller)
    assert asked["outcome"] == "callback" and asked["path"][-1] == "callback"

    # B comes later and waits: behind A's callback, which kept A's place.
    second_caller, second = await call_in(server, "120", [Press("3", 2.0), Press("1", 1.0)],
                                          talk=25)
    second_channel = (await live_call(team, second_caller))["channel_id"]

    async def queued_second() -> bool:
        return await team.acd.position(second_channel) == 2

    await wait_for(queued_second, 30, what="B second in line, behind the callback")

    # The carrier answers the call to A's number; the agent comes back from the meeting.
    carrier = await carrier_answers(server)
    assert run_ivr("agent", "state", agent, "available").returncode == 0

    ari = AriClient(server.settings.ari_base_url, server.settings.ari_user,
                    server.settings.ari_secret())

    async def connected() -> str | None:
        for bridge in await ari.bridges():
            citizens = [c for c in bridge["channels"] if c.startswith("citizen-")]
            if citizens and any(c.startswith("agent-") for c in bridge["channels"]):
                return str(citizens[0])
        return None

    citizen = await wait_for(connected, 40, what="the agent and A connected")
    await ari.hangup(citizen)  # A hangs up after the consultation
    await ari.close()
    assert await asyncio.wait_for(carrier.wait(), 30) == 0

    # Then B's turn: the same agent, after wrap-up.
    result = await second.finished()
    assert result.ok, result.errors or result.output
    record = await call_record(api, second_caller)
    assert (record["agent"], record["outcome"]) == (agent, "answered")
    calls = (await api.get("/api/calls", params={"limit": 50})).json()
    callback = next(c for c in calls if c["callback_of"] == asked["id"])
    assert (callback["agent"], callback["outcome"], callback["caller"]) == (
        agent, "answered", first_caller)
    events = (await api.get(f"/api/calls/{record['id']}")).json()["events"]
    agent_answered_b = next(e["at"] for e in events if e["kind"] == "answered")
    # A's place came first.
    assert datetime.fromisoformat(callback["answered_at"]) < datetime.fromisoformat(
        agent_answered_b)


async def _audio(call: SippCall) -> bool:
    return call.rtp.packets > 10


async def test_agent_account_is_made_and_removed_without_a_restart(
        server: Server, team: Team) -> None:
    username = await team.agent("temp", "welfare=2", softphone=False, log_in=False)
    ari = AriClient(server.settings.ari_base_url, server.settings.ari_user,
                    server.settings.ari_secret())
    try:
        endpoint = await ari.request("GET", f"/endpoints/PJSIP/{username}")
        assert endpoint["resource"] == username  # live in Asterisk at once
        asterisk_pid = server.pid("asterisk")
        removed = run_ivr("agent", "remove", username)
        assert removed.returncode == 0, removed.stdout
        team.names.remove(username)
        with pytest.raises(AriError) as gone:
            await ari.request("GET", f"/endpoints/PJSIP/{username}")
        assert gone.value.not_found
        assert server.pid("asterisk") == asterisk_pid  # no restart
    finally:
        await ari.close()
    assert await team.state(username) == {}


async def talking(team: Team, caller: str) -> str:
    """The channel of the caller's call, once an agent talks with them."""

    async def with_agent() -> str | None:
        call = await live_call(team, caller)
        return call["channel_id"] if call.get("state") == "talking" else None

    channel: str = await wait_for(with_agent, 40, what=f"{caller} talking with an agent")
    return channel


async def test_blind_transfer_to_another_queue(server: Server, api: httpx.AsyncClient,
                                               team: Team) -> None:
    first = await team.agent("water", "water=5")
    second = await team.agent("tax", "administration=4")
    caller, call = await call_in(server, "121", [Press("1", 2.0)], talk=25)
    channel = await talking(team, caller)
    response = await api.post(f"/api/calls/live/{channel}/transfer",
                              json={"to": "queue", "queue": "administration:ko"})
    assert response.status_code == 202, response.text
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert (record["agent"], record["outcome"]) == (second, "answered")
    assert "transfer:queue:administration:ko" in record["path"]
    steps = await timeline(api, record)
    assert steps.index(("answered", first)) < steps.index(("transfer", first)) < steps.index(
        ("answered", second))


async def test_transfer_outside_only_to_allowed_numbers(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    await team.agent("dept", "water=5")
    caller, call = await call_in(server, "121", [Press("1", 2.0)], talk=20)
    channel = await talking(team, caller)

    refused = await api.post(f"/api/calls/live/{channel}/transfer",
                             json={"to": "number", "number": "0299999999"})
    assert refused.status_code == 403 and "not allowed" in refused.json()["detail"]
    assert (await live_call(team, caller))["state"] == "talking"  # nothing changed

    carrier = await carrier_answers(server)
    allowed = await api.post(f"/api/calls/live/{channel}/transfer",
                             json={"to": "number", "number": "0201201234"})
    assert allowed.status_code == 202, allowed.text
    assert (await call.finished()).ok  # the caller talks with the department, then hangs up
    assert await asyncio.wait_for(carrier.wait(), 30) == 0
    record = await call_record(api, caller)
    assert record["outcome"] == "transferred"
    assert record["path"][-1] == "transfer:number:0201201234"


async def live(api: httpx.AsyncClient, channel: str) -> dict[str, Any]:
    response = await api.get(f"/api/calls/live/{channel}")
    response.raise_for_status()
    return dict(response.json())


async def consultation_answered(api: httpx.AsyncClient, channel: str) -> None:
    async def answered() -> bool:
        return bool((await live(api, channel))["consultation_answered"])

    await wait_for(answered, 30, what="the consulted party on the line")


async def with_agent(api: httpx.AsyncClient, channel: str, agent: str) -> None:
    """Wait until the caller talks with ``agent``, no consultation going on."""

    async def talking_with() -> bool:
        now = await live(api, channel)
        return now["agent"] == agent and not now["consultation"]

    await wait_for(talking_with, 20, what=f"the caller with {agent}")


async def test_consultative_transfer_to_a_named_agent(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    first = await team.agent("desk", "water=5")
    second = await team.agent("expert", "culture=3")  # not a water agent: reached by name
    caller, call = await call_in(server, "121", [Press("1", 2.0)], talk=40)
    channel = await talking(team, caller)

    itself = await api.post(f"/api/calls/live/{channel}/transfer",
                            json={"to": "agent", "agent": first, "mode": "consult"})
    assert itself.status_code == 422, itself.text
    early = await api.post(f"/api/calls/live/{channel}/transfer/complete")
    assert early.status_code == 409  # no consultation yet
    response = await api.post(f"/api/calls/live/{channel}/transfer",
                              json={"to": "agent", "agent": second, "mode": "consult"})
    assert response.status_code == 202, response.text
    await consultation_answered(api, channel)

    # The caller waits alone (with music) while the two agents talk in a bridge of their own.
    ari = AriClient(server.settings.ari_base_url, server.settings.ari_user,
                    server.settings.ari_secret())
    try:
        bridges = {bridge["name"]: set(bridge["channels"]) for bridge in await ari.bridges()}
    finally:
        await ari.close()
    app = server.settings.stasis_app
    assert bridges[f"ivr:{app}:{channel}"] & {channel} == {channel}
    assert not any(c.startswith(("agent-", "consult-")) for c in bridges[f"ivr:{app}:{channel}"])
    assert len(bridges[f"ivr:{app}:consult:{channel}"]) == 2
    assert (await team.state(second))["state"] == "on_call"

    completed = await api.post(f"/api/calls/live/{channel}/transfer/complete")
    assert completed.status_code == 202, completed.text

    await with_agent(api, channel, second)
    assert (await team.state(first))["state"] in ("wrap_up", "available")

    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert (record["agent"], record["outcome"]) == (second, "answered")
    assert f"consult:agent:{second}" in record["path"]
    assert f"transfer:agent:{second}" in record["path"]
    steps = await timeline(api, record)
    assert steps.index(("consult", first)) < steps.index(("consult_answered", second)) < (
        steps.index(("transfer", first))) < steps.index(("answered", second))


async def test_consultation_cancelled_and_refused(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    first = await team.agent("front", "water=5")
    second = await team.agent("taxes", "administration=4")
    caller, call = await call_in(server, "121", [Press("1", 2.0)], talk=40)
    channel = await talking(team, caller)

    refused = await api.post(f"/api/calls/live/{channel}/transfer",
                             json={"to": "number", "number": "0299999999", "mode": "consult"})
    assert refused.status_code == 403 and "not allowed" in refused.json()["detail"]
    assert run_ivr("agent", "state", second, "paused", "--reason", "training").returncode == 0
    busy = await api.post(f"/api/calls/live/{channel}/transfer",
                          json={"to": "agent", "agent": second, "mode": "consult"})
    assert busy.status_code == 409 and "not available" in busy.json()["detail"]
    assert (await live(api, channel))["consultation"] == ""  # nothing changed

    # Consulting a queue: its best free agent is rung.
    assert run_ivr("agent", "state", second, "available").returncode == 0
    response = await api.post(f"/api/calls/live/{channel}/transfer",
                              json={"to": "queue", "queue": "administration:ko",
                                    "mode": "consult"})
    assert response.status_code == 202, response.text
    await consultation_answered(api, channel)
    assert (await live(api, channel))["consultation"] == "queue:administration:ko"

    cancelled = await api.post(f"/api/calls/live/{channel}/transfer/cancel")
    assert cancelled.status_code == 202, cancelled.text

    await with_agent(api, channel, first)
    assert (await team.state(second))["state"] in ("wrap_up", "available")
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert (record["agent"], record["outcome"]) == (first, "answered")
    steps = await timeline(api, record)
    assert ("consult_ended", second) in steps and ("transfer", first) not in steps


async def test_blind_transfer_to_a_named_agent(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    first = await team.agent("one", "water=5")
    second = await team.agent("two", "welfare=2")
    caller, call = await call_in(server, "121", [Press("1", 2.0)], talk=25)
    channel = await talking(team, caller)
    response = await api.post(f"/api/calls/live/{channel}/transfer",
                              json={"to": "agent", "agent": second})
    assert response.status_code == 202, response.text
    assert (await call.finished()).ok
    record = await call_record(api, caller)
    assert (record["agent"], record["outcome"]) == (second, "answered")
    steps = await timeline(api, record)
    assert steps.index(("transfer", first)) < steps.index(("offered", second)) < steps.index(
        ("answered", second))


async def test_waiting_callers_are_told_when_the_last_agent_logs_out(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    agent = await team.agent("last", "culture=3")
    assert run_ivr("agent", "state", agent, "paused", "--reason", "meeting").returncode == 0
    caller = caller_number()
    scenario = info_caller(server.workdir, f"left-{caller}", [Press("5", 2.0)],
                           wait_for_bye=120)
    call = await SippCall(scenario, "120", server.sip_target, server.workdir, caller).start()

    async def holding() -> bool:
        return (await live_call(team, caller)).get("step") == "holding"

    await wait_for(holding, 60, what="the caller waiting with music")
    assert run_ivr("agent", "state", agent, "logged_out").returncode == 0
    # Offered a callback (no key pressed), then told nobody can answer; the server hangs up.
    result = await call.finished()
    assert result.ok, result.errors or result.output
    record = await call_record(api, caller)
    assert record["outcome"] == "no_agents"
    steps = [kind for kind, _ in await timeline(api, record)]
    assert steps.index("queued") < steps.index("no_agents")


async def test_connected_callback_survives_a_controller_restart(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    # Nobody is logged in for culture: the caller is offered a callback at once and takes it.
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    await wait_for(lambda: _audio(call), 10, what="audio")
    await call.rtp.press("5")

    async def offered() -> bool:
        return (await live_call(team, caller)).get("step") in ("callback_offer",
                                                                 "callback_choice")

    await wait_for(offered, 30, what="the callback offer")
    await call.rtp.press("1")
    assert (await call.finished()).ok
    asked = await call_record(api, caller)
    assert asked["outcome"] == "callback"

    carrier = await carrier_answers(server)
    agent = await team.agent("evening", "culture=3")
    ari = AriClient(server.settings.ari_base_url, server.settings.ari_user,
                    server.settings.ari_secret())
    try:
        async def connected() -> str | None:
            for bridge in await ari.bridges():
                citizens = [c for c in bridge["channels"] if c.startswith("citizen-")]
                if citizens and any(c.startswith("agent-") for c in bridge["channels"]):
                    return str(citizens[0])
            return None

        citizen = await wait_for(connected, 40, what="the agent and the citizen connected")

        # The controller dies while they talk; the next one takes the callback over.
        killed = server.pid("controller")
        os.kill(killed, signal.SIGKILL)

        async def new_controller() -> bool:
            try:
                return server.pid("controller") != killed and bool(
                    await ari.request("GET", f"/applications/{server.settings.stasis_app}"))
            except (AriError, FileNotFoundError, ValueError):
                return False

        await wait_for(new_controller, 30, what="a new controller")
        await asyncio.sleep(1.0)  # its recovery runs on connection
        await ari.hangup(citizen)  # the citizen hangs up: the agent's leg follows
    finally:
        await ari.close()
    assert await asyncio.wait_for(carrier.wait(), 30) == 0

    async def closed() -> dict[str, Any] | None:
        calls = (await api.get("/api/calls", params={"limit": 50})).json()
        done = [c for c in calls if c["callback_of"] == asked["id"] and c["ended_at"]]
        return done[0] if done else None

    callback = await wait_for(closed, 20, what="the callback's record closed")
    assert (callback["agent"], callback["outcome"]) == (agent, "answered")

    async def agent_free() -> bool:
        return (await team.state(agent))["state"] in ("wrap_up", "available")

    await wait_for(agent_free, 20, what="the agent free again")


async def test_supervisor_listens_in_from_a_softphone(
        server: Server, api: httpx.AsyncClient, team: Team) -> None:
    agent = await team.agent("heard", "water=5")
    supervisor = await team.agent("boss", "general=1", log_in=False)  # never offered calls
    caller, call = await call_in(server, "121", [Press("1", 2.0)], talk=20)
    channel = await talking(team, caller)
    refused = await api.post(f"/api/calls/live/{channel}/listen", json={"endpoint": "nobody"})
    assert refused.status_code == 404
    response = await api.post(f"/api/calls/live/{channel}/listen",
                              json={"endpoint": supervisor})
    assert response.status_code == 202, response.text

    ari = AriClient(server.settings.ari_base_url, server.settings.ari_user,
                    server.settings.ari_secret())
    try:
        async def listening() -> bool:
            for bridge in await ari.bridges():
                if ":listen:" in bridge["name"] and len(bridge["channels"]) == 2:
                    phone = next(c for c in bridge["channels"] if c.startswith("supervisor-"))
                    return bool((await ari.request("GET", f"/channels/{phone}"))["state"]
                                == "Up")
            return False

        await wait_for(listening, 20, what="the supervisor's phone listening in")
        assert (await live_call(team, caller))["agent"] == agent  # nothing changed for them
        assert (await call.finished()).ok

        async def hung_up() -> bool:
            return not any(c["id"].startswith(("supervisor-", "listen-"))
                           for c in await ari.channels())

        await wait_for(hung_up, 20, what="the supervisor's leg gone with the call")
    finally:
        await ari.close()
    record = await call_record(api, caller)
    assert ("listen", "") in await timeline(api, record)
