"""Faults while calls are up: the controller killed, the events socket cut, Redis stopped."""

from __future__ import annotations

import os
import signal

import httpx

from ivr.ari import AriClient
from ivr.pbx.asterisk import cli
from tests.conftest import Server, audio_for, call_record, caller_number, prompt_ends, wait_for
from tests.support.sip import SippCall


async def greeting_playing(server: Server, caller: str) -> SippCall:
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    await audio_for(call, 0.5)
    return call


async def choose_welfare(server: Server, api: httpx.AsyncClient, call: SippCall,
                         caller: str) -> None:
    """The caller presses 4: only a controller in charge of the call can act on it."""
    await call.rtp.press("4")
    result = await call.finished()
    assert result.ok, result.errors or result.output
    record = await call_record(api, caller)
    assert record["path"] == ["main:4", "queue:welfare"]
    assert record["outcome"] == "no_agents"


async def new_controller(server: Server, old_pid: int) -> None:
    async def connected() -> bool:
        try:
            return server.pid("controller") != old_pid and bool(ari_sessions(server))
        except (FileNotFoundError, ValueError):  # the pid file is being written
            return False

    await wait_for(connected, 30, what="a new controller connected to ARI")


async def test_call_carries_on_when_the_controller_is_killed(
        server: Server, api: httpx.AsyncClient) -> None:
    caller = caller_number()
    call = await greeting_playing(server, caller)
    killed = server.pid("controller")
    os.kill(killed, signal.SIGKILL)  # `ivr run` starts a new controller
    await new_controller(server, killed)
    await choose_welfare(server, api, call, caller)


async def test_prompt_that_ended_while_no_controller_listened(
        server: Server, api: httpx.AsyncClient) -> None:
    caller = caller_number()
    call = await greeting_playing(server, caller)
    os.kill(server.process.pid, signal.SIGSTOP)  # hold `ivr run`: no new controller yet
    killed = server.pid("controller")
    try:
        os.kill(killed, signal.SIGKILL)
        await prompt_ends(call, quiet=1.0)  # greeting and menu played out with no controller
    finally:
        os.kill(server.process.pid, signal.SIGCONT)

    # The new controller finds the call in Stasis, its prompt gone: it waits for the digit.
    await new_controller(server, killed)
    await choose_welfare(server, api, call, caller)


def ari_sessions(server: Server) -> set[str]:
    """Ids of the ARI WebSocket sessions subscribed to the app, from Asterisk's CLI."""
    lines = cli(server.settings, "ari show websocket sessions").splitlines()
    return {line.split()[0] for line in lines
            if line.strip().endswith(f" {server.settings.ari_app}")}


async def test_controller_reconnects_when_the_events_socket_is_cut(
        server: Server, api: httpx.AsyncClient) -> None:
    before = ari_sessions(server)
    assert before, "the controller should hold an events socket"
    controller = server.pid("controller")
    caller = caller_number()
    call = await greeting_playing(server, caller)

    settings = server.settings
    ari = AriClient(settings.ari_base_url, settings.ari_user, settings.ari_secret())
    orphan = await ari.create_bridge(f"ivr:{settings.stasis_app}:orphan-of-a-crash")
    assert "Shutting down" in cli(server.settings, "ari shutdown websocket sessions")

    async def reconnected() -> bool:
        now = ari_sessions(server)
        return bool(now) and not (now & before)

    await wait_for(reconnected, 20, what="a new events socket")
    assert server.pid("controller") == controller  # the same process reconnected by itself

    # Rebuilt from /bridges too: an empty bridge of the controller's is an orphan, removed.
    async def orphan_removed() -> bool:
        return not any(b["id"] == orphan["id"] for b in await ari.bridges())

    await wait_for(orphan_removed, 10, what="the orphan bridge to be removed")
    foreign = await ari.create_bridge("someone-else")
    assert any(b["id"] == foreign["id"] for b in await ari.bridges())  # not ours: kept
    await ari.destroy_bridge(foreign["id"])

    await ari.close()
    # The call that was up goes on, and the next call works.
    await choose_welfare(server, api, call, caller)
    next_caller = caller_number()
    await choose_welfare(server, api, await greeting_playing(server, next_caller), next_caller)


async def health(server: Server) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"{server.settings.api_base_url}/health")


async def test_health_names_redis_while_it_is_stopped(server: Server) -> None:
    assert (await health(server)).status_code == 200
    redis_pid = server.pid("redis")
    os.kill(redis_pid, signal.SIGSTOP)  # Redis stops answering
    try:
        response = await health(server)
        assert response.status_code == 503
        body = response.json()
        assert body["down"] == ["redis"]
        assert body["redis"]["state"] == "down"
        assert body["database"]["state"] == "up"
    finally:
        os.kill(redis_pid, signal.SIGCONT)

    async def healthy() -> bool:
        return (await health(server)).status_code == 200

    await wait_for(healthy, 20, what="/health to be 200 again")


async def test_server_recovers_when_redis_is_killed(server: Server,
                                                     api: httpx.AsyncClient) -> None:
    killed = server.pid("redis")
    os.kill(killed, signal.SIGKILL)  # `ivr run` starts Redis again, from its append-only file

    async def back() -> bool:
        return server.pid("redis") != killed and (await health(server)).status_code == 200

    await wait_for(back, 30, what="Redis to be started again")
    caller = caller_number()
    await choose_welfare(server, api, await greeting_playing(server, caller), caller)
