"""The routing core on a real Redis: the best agent for each caller, in one atomic step; and
the live state of calls it works with."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from ivr.acd.core import Acd, AgentProfile, AgentState, Widening, now_ms
from ivr.controller.store import CallData, CallStore
from tests.support.sip import free_udp_port


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of its own, so these tests never touch the server's data."""
    folder = tmp_path_factory.mktemp("acd-redis")
    port = free_udp_port()
    server = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port),
                               "--bind", "127.0.0.1", "--dir", str(folder), "--save", ""],
                              stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True
                         ).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait()


@pytest.fixture
async def acd(redis_url: str) -> AsyncIterator[Acd]:
    redis = Redis.from_url(redis_url, decode_responses=True)
    await redis.flushdb()
    yield Acd(redis, Widening(any_proficiency_after=30, any_agent_after=60, min_proficiency=3))
    await redis.aclose()


async def ready_agent(acd: Acd, agent_id: str, skills: dict[str, int], languages: list[str],
                      registered: bool = True) -> None:
    await acd.save_agent(AgentProfile(agent_id, agent_id, skills, languages))
    await acd.set_registered(agent_id, registered)
    assert await acd.log_in(agent_id)
    await asyncio.sleep(0.005)  # distinct idle times: the first is idle longest


async def test_english_caller_gets_the_english_speaker(acd: Acd) -> None:
    await ready_agent(acd, "kim", {"water": 5}, ["ko"])  # idle longer, Korean only
    await ready_agent(acd, "smith", {"water": 3}, ["ko", "en"])
    await acd.enqueue("call-en", "water", "en")
    match = await acd.match()
    assert match is not None and (match.call_id, match.agent_id) == ("call-en", "smith")
    assert (await acd.agent("smith"))["state"] == AgentState.RESERVED


async def test_most_proficient_then_longest_idle(acd: Acd) -> None:
    await ready_agent(acd, "lee", {"water": 3}, ["ko"])  # idle longest, less proficient
    await ready_agent(acd, "park", {"water": 5}, ["ko"])
    await ready_agent(acd, "choi", {"water": 5}, ["ko"])
    await acd.enqueue("c1", "water", "ko")
    await acd.enqueue("c2", "water", "ko")
    await acd.enqueue("c3", "water", "ko")
    matches = [await acd.match() for _ in range(3)]
    assert [(m.call_id, m.agent_id) for m in matches if m] == [
        ("c1", "park"), ("c2", "choi"), ("c3", "lee")]


async def test_only_available_registered_agents_get_calls(acd: Acd) -> None:
    await ready_agent(acd, "unregistered", {"traffic": 5}, ["ko"], registered=False)
    await ready_agent(acd, "paused", {"traffic": 5}, ["ko"])
    assert await acd.pause("paused", "lunch")
    await ready_agent(acd, "wrapping", {"traffic": 5}, ["ko"])
    await acd.enqueue("first", "traffic", "ko")
    first = await acd.match()
    assert first is not None and first.agent_id == "wrapping"
    assert await acd.answered("wrapping", "first")
    assert await acd.wrap_up("wrapping", "first")
    await acd.save_agent(AgentProfile("loggedout", "x", {"traffic": 5}, ["ko"]))
    await acd.set_registered("loggedout", True)

    await acd.enqueue("second", "traffic", "ko")
    assert await acd.match() is None  # nobody may take it
    assert await acd.position("second") == 1

    await acd.set_registered("unregistered", True)  # the softphone comes up
    second = await acd.match()
    assert second is not None and second.agent_id == "unregistered"
    assert (await acd.agent("paused"))["pause_reason"] == "lunch"


async def test_search_widens_with_the_wait(acd: Acd) -> None:
    await ready_agent(acd, "novice", {"welfare": 1}, ["ko"])
    await ready_agent(acd, "generalist", {"culture": 4}, ["ko"])
    await acd.enqueue("fresh", "welfare", "ko")
    assert await acd.match() is None  # proficiency 1 is below the first level
    await acd.leave("fresh")

    await acd.enqueue("waited-40s", "welfare", "ko", entered_ms=now_ms() - 40_000)
    match = await acd.match()
    assert match is not None and (match.agent_id, match.level) == ("novice", 1)

    await acd.enqueue("waited-70s", "welfare", "ko", entered_ms=now_ms() - 70_000)
    match = await acd.match()
    assert match is not None and (match.agent_id, match.level) == ("generalist", 2)


async def test_priority_jumps_the_line_and_requeue_keeps_the_place(acd: Acd) -> None:
    await acd.enqueue("early", "water", "ko")
    await acd.enqueue("later", "water", "ko")
    await acd.enqueue("callback-turn", "water", "ko", priority=5)
    assert await acd.position("callback-turn") == 1
    await ready_agent(acd, "yoon", {"water": 4}, ["ko"])
    match = await acd.match()
    assert match is not None and match.call_id == "callback-turn"

    # Ring, no answer: the caller goes back to the place they had, the agent is free again.
    await acd.requeue("callback-turn")
    assert not await acd.missed("yoon", "callback-turn", pause_after=2)
    assert await acd.position("callback-turn") == 1
    match = await acd.match()
    assert match is not None and (match.call_id, match.agent_id) == ("callback-turn", "yoon")
    await acd.requeue("callback-turn")
    assert await acd.missed("yoon", "callback-turn", pause_after=2)  # second miss: paused
    agent = await acd.agent("yoon")
    assert (agent["state"], agent["pause_reason"]) == ("paused", "missed calls")
    assert await acd.match() is None


async def test_two_controllers_never_give_an_agent_two_calls(acd: Acd, redis_url: str) -> None:
    agents = [f"agent{n}" for n in range(8)]
    for n, agent in enumerate(agents):
        await ready_agent(acd, agent, {"traffic": 3 + n % 3}, ["ko"])
    for n in range(40):
        await acd.enqueue(f"caller{n}", "traffic", "ko")

    busy: dict[str, str] = {}
    served: list[str] = []
    conflicts: list[str] = []

    async def controller(name: str) -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        mine = Acd(redis)
        try:
            while len(served) < 40:
                match = await mine.match(["traffic:ko"])
                if match is None:
                    await asyncio.sleep(0.001)
                    continue
                if match.agent_id in busy:
                    conflicts.append(f"{name}: {match.agent_id} given {match.call_id} "
                                     f"while on {busy[match.agent_id]}")
                busy[match.agent_id] = match.call_id
                served.append(match.call_id)
                assert await mine.answered(match.agent_id, match.call_id)
                await asyncio.sleep(0.002)  # talking
                assert await mine.wrap_up(match.agent_id, match.call_id)
                del busy[match.agent_id]
                assert await mine.ready(match.agent_id)
        finally:
            await redis.aclose()

    await asyncio.wait_for(asyncio.gather(controller("one"), controller("two")), 60)
    assert conflicts == []
    assert sorted(served) == sorted(f"caller{n}" for n in range(40))  # each exactly once
    assert await acd.waiting("traffic:ko") == 0


async def test_a_calls_live_state_sends_changes_and_survives_a_lost_hash(redis_url: str) -> None:
    """The live state of a call: after the first save only changed fields go to Redis, and if
    Redis lost the call meanwhile (flushed, restarted empty) the next save writes it whole."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    await redis.flushdb()
    store = CallStore(redis, "node/ivr")
    call = CallData(channel_id="chan-1", record_id="rec-1", did="120", caller="0299990000")
    await store.save(call)
    await redis.hset(store.call_key("chan-1"), "caller", "changed elsewhere")
    call.menu = "main"
    await store.save(call)  # only the menu is sent: the other field stays as it was changed
    assert await redis.hmget(store.call_key("chan-1"), ["menu", "caller"]) == [
        "main", "changed elsewhere"]
    await redis.flushdb()
    call.retries = 1
    await store.save(call)
    again = await store.load("chan-1")
    assert again == call and await store.channel_ids() == {"chan-1"}
    await store.remove("chan-1")
    assert await store.load("chan-1") is None
    await redis.aclose()
