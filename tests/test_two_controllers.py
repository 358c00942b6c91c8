"""Two controllers on one Asterisk and one Redis, under a crowd: 40 callers and 8 agents.

A stack of its own (``IVR_CONTROLLERS=2``, other ports): Asterisk hands each call to one of
the two Stasis apps at random; both controllers match callers with agents in the same Redis,
and a match for a caller the other controller runs is handed over to it. Callers give up after
a random time, so some are answered and some abandon.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ivr.redis_client import connect_redis
from tests.conftest import Server, admin_client, another_stack, wait_for
from tests.support.scenario import Press, info_caller
from tests.support.sip import free_udp_port
from tests.support.team import Team, team_of

CALLERS = 40
AGENTS = 8
SHIFT = 400  # this stack's ports: the session stack's plus this


@pytest.fixture(scope="module")
def crowd_stack(tmp_path_factory: pytest.TempPathFactory,
                request: pytest.FixtureRequest) -> Iterator[Server]:
    settings = {"IVR_CONTROLLERS": "2",
                "IVR_TRUNK_CONTACT": "",  # no calls out: callers are answered or give up
                "IVR_QUEUE_ANNOUNCE_SECONDS": "20"}
    with another_stack(tmp_path_factory.mktemp("two-controllers"), SHIFT, settings,
                       lambda: bool(request.session.testsfailed)) as server:
        yield server


@pytest.fixture
async def crowd_team(crowd_stack: Server) -> AsyncIterator[Team]:
    async with team_of(crowd_stack) as team:
        yield team


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def busy_intervals(record: dict[str, Any], events: list[dict[str, Any]]
                   ) -> list[tuple[str, datetime, datetime]]:
    """When each agent was held by this call: from the offer to its miss or the call's end."""
    intervals = []
    for index, event in enumerate(events):
        if event["kind"] != "offered":
            continue
        agent, start = event["agent"], _at(event["at"])
        end = _at(record["ended_at"])
        for later in events[index + 1:]:
            if later["kind"] in ("no_answer", "abandoned", "transfer") and (
                    later["agent"] in (agent, None, "")):
                end = _at(later["at"])
                break
        intervals.append((agent, start, end))
    return intervals


def crowd_scenario(workdir: Path) -> str:
    """Callers who dial 120 and press 0 (an agent) during the greeting, then hang up after a
    random 20-50 s, answered or not; each with a number of their own."""
    path = Path(info_caller(workdir, "crowd", [Press("0", 2.0)], patience=(20, 50)))
    path.write_text(path.read_text().replace("[caller]", "0107000[call_number]").replace(
        "[rtp_port]", "[media_port]"))
    return str(path)


async def test_forty_callers_eight_agents_two_controllers(
        crowd_stack: Server, crowd_team: Team) -> None:
    server = crowd_stack
    agents = [await crowd_team.agent(f"crowd{number}", "general=3")
              for number in range(AGENTS)]

    scenario = crowd_scenario(server.workdir)
    sipp = await asyncio.create_subprocess_exec(
        "sipp", "-sf", scenario, "-m", str(CALLERS), "-l", str(CALLERS), "-r", "10",
        "-s", "120", "-i", "127.0.0.1", "-p", str(free_udp_port()),
        "-mp", str(free_udp_port()), "-timeout", "240s", "-nostdin", server.sip_target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=server.workdir)
    output, _ = await asyncio.wait_for(sipp.communicate(), 300)
    assert sipp.returncode == 0, output.decode(errors="replace")[-3000:]

    async with admin_client(server) as api:
        async def all_ended() -> list[dict[str, Any]] | None:
            response = await api.get("/api/calls", params={"limit": 200})
            ours = [r for r in response.json() if r["caller"].startswith("0107000")]
            return ours if len(ours) == CALLERS and all(r["ended_at"] for r in ours) else None

        records: list[dict[str, Any]] = await wait_for(all_ended, 60, what="every record")
        timelines = {}
        for record in records:
            response = await api.get(f"/api/calls/{record['id']}")
            timelines[record["id"]] = response.json()["events"]

    # Every caller was answered or is recorded as abandoned, with the wait.
    outcomes = Counter(record["outcome"] for record in records)
    assert set(outcomes) <= {"answered", "abandoned"}, outcomes
    assert outcomes["answered"] >= AGENTS  # every agent had work
    for record in records:
        assert record["queue"] == "general:ko" and record["wait_seconds"] is not None
        if record["outcome"] == "answered":
            assert record["agent"] in agents

    # No agent was ever held by two calls at once.
    held: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for record in records:
        for agent, start, end in busy_intervals(record, timelines[record["id"]]):
            held[agent].append((start, end))
    assert set(held) <= set(agents)
    for agent, spans in held.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"{agent} was offered a call while busy with another"

    # Nothing was left behind: no caller in a queue, no call in Redis, no agent held.
    redis = connect_redis(server.settings)
    try:
        async for key in redis.scan_iter(match="ivr:acd:queue:*"):
            assert await redis.zcard(key) == 0, key
        assert [key async for key in redis.scan_iter(match="ivr:acd:call:*")] == []
        assert [key async for key in redis.scan_iter(match="ivr:call:*")] == []
        for agent in agents:
            assert (await redis.hget(f"ivr:acd:agent:{agent}", "state")) in (
                "available", "wrap_up")
    finally:
        await redis.aclose()

    # Both controllers ran calls; matches crossed between them.
    log = server.log_path.read_text(errors="replace").splitlines()
    started = Counter(line.split("|")[0].strip() for line in log
                      if ": line main" in line and line.startswith("controller-"))
    handed = sum("handed to controller" in line for line in log)
    assert started["controller-1"] > 0 and started["controller-2"] > 0, started
    waits = sorted(record["wait_seconds"] for record in records)
    print(f"\n{CALLERS} callers, {AGENTS} agents, 2 controllers: {dict(outcomes)}; calls per "
          f"controller {dict(started)}; {handed} matches handed over; median wait "
          f"{waits[len(waits) // 2]:.1f} s, longest {waits[-1]:.1f} s")
