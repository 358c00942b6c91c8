"""The routing core alone: routing decisions per second and the 99th-percentile decision time,
with 1,000 agents and 100 skill queues in a Redis of our own.

A *decision* is one ``Acd.match()``: the most urgent waiting caller gets the best free agent.
The clock runs around that call only. Work comes in rounds: back-to-back matches (by one
client, or by four at once), then, off the clock, every matched agent is released and each
matched caller replaced by a new one. So the pool stays between 900 and 1,000 free agents and
every queue always has 5 callers waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from ivr.acd.core import Acd, AgentProfile, Assignment, acd_for, queue_name
from ivr.settings import Settings

SEED = 120
AGENTS = 1000
TOPICS = [f"t{n:02d}" for n in range(50)]
LANGUAGES = ["ko", "en"]
WAITING_PER_QUEUE = 5
ROUND = 100  # matches per round, all tasks together: at least 900 agents stay free
CONCURRENT_TASKS = 4
# Per client count (one, then four). A match costs ~2 ms here: 12,000 in all take ~35 s.
QUICK_DECISIONS = 1_000
FULL_DECISIONS = 6_000
FORBIDDEN_PORTS = (range(15000, 20000), range(25000, 30000))  # other benches' servers
REDIS_START_SECONDS = 10.0
REDIS_STOP_SECONDS = 5.0


class DoubleAssignment(RuntimeError):
    """The match gave an agent (or a caller) twice: a bug in the routing core."""


# --- Our own Redis ------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on, outside the ranges other benches use."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if not any(port in busy for busy in FORBIDDEN_PORTS):
            return port


@contextlib.asynccontextmanager
async def redis_server(workdir: Path) -> AsyncIterator[Redis]:
    """A throwaway redis-server on loopback and a client for it; the server always stops."""
    os.makedirs(workdir, exist_ok=True)
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(workdir),
        "--logfile", str(workdir / "redis-routing.log"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True)
    try:
        await wait_until_up(redis, server)
        yield redis
    finally:
        await redis.aclose()
        await stop(server)


async def wait_until_up(redis: Redis, server: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + REDIS_START_SECONDS
    while True:
        if server.returncode is not None:
            raise RuntimeError(f"redis-server exited with {server.returncode}")
        with contextlib.suppress(OSError, RedisConnectionError):
            if await redis.ping():
                return
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not answer in time")
        await asyncio.sleep(0.05)


async def stop(server: asyncio.subprocess.Process) -> None:
    """Terminate, then kill: SIGTERM goes out at once, even if this await is cut short."""
    if server.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            server.terminate()
    try:
        await asyncio.wait_for(server.wait(), REDIS_STOP_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        await server.wait()


# --- The call center ----------------------------------------------------------------------------


def agent_profiles() -> list[AgentProfile]:
    """1,000 agents, each with 1-3 topics at proficiency 1-5 and one or two languages."""
    rng = random.Random(SEED)
    profiles = []
    for number in range(AGENTS):
        topics = rng.sample(TOPICS, rng.randint(1, 3))
        languages = rng.sample(LANGUAGES, rng.randint(1, 2))
        profiles.append(AgentProfile(
            agent_id=f"agent{number:04d}", name=f"Agent {number:04d}",
            skills={topic: rng.randint(1, 5) for topic in topics}, languages=languages))
    return profiles


def all_queues() -> list[tuple[str, str]]:
    return [(topic, language) for topic in TOPICS for language in LANGUAGES]


def check_staffing(profiles: list[AgentProfile], min_proficiency: int) -> None:
    """Every queue needs an agent good enough before widening, or its callers wait 30 s and
    the figures measure the widening instead."""
    staffed = {queue_name(topic, language)
               for profile in profiles for language in profile.languages
               for topic, proficiency in profile.skills.items()
               if proficiency >= min_proficiency}
    unstaffed = [queue_name(*queue) for queue in all_queues()
                 if queue_name(*queue) not in staffed]
    if unstaffed:
        raise RuntimeError(f"queues with nobody at proficiency {min_proficiency}+: {unstaffed}")


async def staff(acd: Acd, profiles: list[AgentProfile]) -> None:
    """All agents available, a hundred at a time (setting up is not what is measured)."""
    for first in range(0, len(profiles), ROUND):
        await asyncio.gather(*(start_shift(acd, profile)
                               for profile in profiles[first:first + ROUND]))


async def start_shift(acd: Acd, profile: AgentProfile) -> None:
    """Saved, softphone registered, logged in: available."""
    await acd.save_agent(profile)
    await acd.set_registered(profile.agent_id, True)
    if not await acd.log_in(profile.agent_id):
        raise RuntimeError(f"{profile.agent_id} could not log in")


@dataclass
class Floor:
    """What is going on: callers created, agents on offer, callers already given an agent."""

    callers: int = 0
    offered: dict[str, str] = field(default_factory=dict)  # agent -> call, until put back
    taken: set[str] = field(default_factory=set)

    def next_call_id(self) -> str:
        self.callers += 1
        return f"call{self.callers:07d}"

    def assigned(self, assignment: Assignment) -> None:
        if assignment.agent_id in self.offered:
            raise DoubleAssignment(
                f"{assignment.agent_id} got {assignment.call_id} while offered "
                f"{self.offered[assignment.agent_id]}")
        if assignment.call_id in self.taken:
            raise DoubleAssignment(f"caller {assignment.call_id} taken twice")
        self.offered[assignment.agent_id] = assignment.call_id
        self.taken.add(assignment.call_id)


async def line_up_callers(acd: Acd, floor: Floor) -> None:
    for _ in range(WAITING_PER_QUEUE):
        for topic, language in all_queues():
            await acd.enqueue(floor.next_call_id(), topic, language)


async def put_back(acd: Acd, floor: Floor, assignment: Assignment) -> None:
    """The offer is withdrawn (release: reserved -> available, as when the caller leaves first)
    and a new caller takes the place in the queue. A full call (answered, wrap-up, ready) would only
    add three more round trips off the clock; the matched caller's entry is left behind, since
    the server is thrown away after the run."""
    del floor.offered[assignment.agent_id]  # before release: then a match may offer them again
    if not await acd.release(assignment.agent_id):
        raise RuntimeError(f"{assignment.agent_id} could not be released")
    topic, language = assignment.queue.split(":")
    await acd.enqueue(floor.next_call_id(), topic, language)


# --- The measurement ----------------------------------------------------------------------------


@dataclass
class Run:
    decisions: list[float] = field(default_factory=list)  # seconds per match()
    matching: float = 0.0  # wall-clock seconds spent in the matching half of the rounds
    total: float = 0.0  # wall-clock seconds of the whole run, the putting back included
    widened: int = 0  # decisions that had to widen beyond the proficiency asked


async def match_many(acd: Acd, floor: Floor, count: int, run: Run) -> list[Assignment]:
    """One client's matches back to back, each timed on its own."""
    assignments = []
    for _ in range(count):
        started = time.perf_counter()
        assignment = await acd.match()
        run.decisions.append(time.perf_counter() - started)
        if assignment is None:
            raise RuntimeError("no match although callers wait and agents are free")
        floor.assigned(assignment)
        run.widened += assignment.level > 0
        assignments.append(assignment)
    return assignments


async def run_rounds(acd: Acd, floor: Floor, decisions: int, tasks: int) -> Run:
    """Rounds of ``tasks`` clients matching at once, then everyone put back, until done."""
    run = Run()
    per_task = ROUND // tasks
    started = time.perf_counter()
    for _ in range(max(1, decisions // (per_task * tasks))):
        matching = time.perf_counter()
        batches = await asyncio.gather(
            *(match_many(acd, floor, per_task, run) for _ in range(tasks)))
        run.matching += time.perf_counter() - matching
        await asyncio.gather(*(put_back(acd, floor, assignment)
                               for batch in batches for assignment in batch))
    run.total = time.perf_counter() - started
    return run


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def summary(run: Run) -> dict[str, Any]:
    cuts = statistics.quantiles(run.decisions, n=100, method="inclusive")
    count = len(run.decisions)
    return {
        "decisions": count,
        "decisions_per_s": round(count / run.matching, 3),
        "cycles_per_s": round(count / run.total, 3),  # a match and its putting back
        "p50_ms": ms(cuts[49]),
        "p95_ms": ms(cuts[94]),
        "p99_ms": ms(cuts[98]),
        "max_ms": ms(max(run.decisions)),
        "widened": run.widened,
    }


async def bench_routing(workdir: Path, quick: bool = False) -> dict[str, Any]:
    """The routing core alone: decisions per second and their latency, one client and four."""
    decisions = QUICK_DECISIONS if quick else FULL_DECISIONS
    async with redis_server(workdir) as redis:
        acd = acd_for(Settings(), redis)
        profiles = agent_profiles()
        check_staffing(profiles, acd.widening.min_proficiency)
        await staff(acd, profiles)
        floor = Floor()
        await line_up_callers(acd, floor)
        print(f"routing: {AGENTS} agents, {len(all_queues())} queues ready; "
              f"{decisions} decisions, then {decisions} by {CONCURRENT_TASKS} tasks", flush=True)
        await run_rounds(acd, floor, ROUND, 1)  # warm-up: scripts loaded, connections open
        sequential = summary(await run_rounds(acd, floor, decisions, 1))
        concurrent = summary(await run_rounds(acd, floor, decisions, CONCURRENT_TASKS))
    return {
        "agents": AGENTS,
        "queues": len(all_queues()),
        **sequential,
        "concurrent": {"tasks": CONCURRENT_TASKS, **concurrent},
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as workdir:
        result = asyncio.run(bench_routing(Path(workdir), quick="--quick" in sys.argv))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
