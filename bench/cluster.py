"""`make bench-cluster`: the cluster (`ivr cluster`: Kamailio at the SIP edge in front of two
Asterisk nodes) against one node (`ivr run`) on this machine, and what each fault costs the
cluster under load. One table, and the same figures in bench/cluster-results.json.

1. The ramp of `make bench` (bench/load.py: callers hear the menu, press 0, talk 12 s with an
   agent) against one node, then against the cluster, whose agents register to the edge: the
   most calls held with none failed, and CPU per call of each kind of process.
2. Faults under a steady load of calls through the edge: a node drained, PostgreSQL restarted,
   a node's Asterisk killed (-9), the Redis primary killed (-9), then stopped (SIGSTOP) until
   the Sentinels fail over: the time to recover, and the calls (and places in line, and
   records) lost.

Bounded as `make bench` is: every load has a call count and a time limit, the ramp stops at
its first step with a failed call, and every process started here is stopped at the end (also
on Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select

from bench.load import (
    AGENT_PORT,
    AGENTS_PER_CALL,
    PRESS_AFTER,
    TALK_SECONDS,
    AgentPhones,
    Step,
    StepResult,
    System,
    caller_recording,
    cpu_of,
    percentiles,
    run_step,
    scenario,
    sipp_stats,
    step_for,
)
from bench.register import register_agents
from bench.run import agent_names, figures, machine, product_agents, product_system, report_step
from bench.stacks import CACHE, PRODUCT_PORTS, start_product, stop_product
from ivr.acd.core import Acd, acd_for, queue_key
from ivr.cluster import edge
from ivr.cluster.layout import redis_ports
from ivr.cluster.nodes import list_nodes, set_drained
from ivr.cluster.postgres import postgres_ready, stop_postgres
from ivr.db import create_engine, sessionmaker
from ivr.models import CallOutcome, CallRecord, aware
from ivr.redis_client import connect_redis
from ivr.settings import Settings
from tests.support.sip import free_udp_port
from tests.support.stack import Server

RESULTS = Path(__file__).resolve().parent / "cluster-results.json"
BASE = CACHE / "cluster"

# Ports: PRODUCT_PORTS plus IVR_BENCH_SHIFT, as bench/stacks.py does, but -5000 by default:
# between the tests' (15060-19000 and 25060-29000, with their offsets; `make bench` has 25060
# up) and below the kernel's ephemeral ports (32768 up), where any client's connection may hold
# one. RTP and the SIPps' media lie below them all, not ten times the shift as in stacks.py.
DEFAULT_SHIFT = -5000
POSTGRES_PORT = 25432  # before the shift
RTP_START, RTP_END = 10000, 13999  # the cluster's nodes take half each
AGENT_MEDIA_PORT = 14000  # the agents' SIPp echoes here (and on the port after next)
CALLER_MEDIA_PORT = 14100  # the callers' SIPp plays from here

# Both systems alike: one recognizer worker per controller (a node has one controller), so
# that two nodes on two cores do not start four Whisper processes.
SETTINGS = {"IVR_RECOGNIZER_WORKERS": "1"}
CALLER_PREFIX = "0107777"  # the bench callers' numbers (bench/sipp/caller.xml)
IDLE_SECONDS = 15.0
WRITE_KEY = "ivr:bench:write"


def shift() -> int:
    return int(os.environ.get("IVR_BENCH_SHIFT", str(DEFAULT_SHIFT)))


def agents_port() -> int:
    return AGENT_PORT + shift()


def stack_settings() -> dict[str, str]:
    return {**SETTINGS, "IVR_RTP_START": str(RTP_START), "IVR_RTP_END": str(RTP_END),
            "IVR_POSTGRES_PORT": str(POSTGRES_PORT + shift())}


def workdir(name: str) -> Path:
    """SIPp's files of one system (its scenarios, statistics, errors)."""
    folder = BASE / f"work-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def ramp_plan(quick: bool) -> list[Step]:
    if quick:
        return [step_for(concurrent, hold_seconds=5) for concurrent in (20, 40)]
    return [step_for(concurrent, hold_seconds=20) for concurrent in (100, 200, 300, 400)]


# --- Ports --------------------------------------------------------------------------------------


def planned_ports() -> tuple[list[int], list[int]]:
    """(UDP, TCP) ports the two stacks and the SIPps will bind: the cluster's nodes, the
    edge's JSON-RPC, Redis' replica and Sentinels as ivr.cluster.layout lays them out."""
    s = shift()
    sip, ari = int(PRODUCT_PORTS["IVR_SIP_PORT"]) + s, int(PRODUCT_PORTS["IVR_ARI_PORT"]) + s
    redis = redis_ports(Settings(redis_port=int(PRODUCT_PORTS["IVR_REDIS_PORT"]) + s))
    udp = [sip, sip + 1, sip + 2, sip + 9, agents_port(), AGENT_MEDIA_PORT,
           AGENT_MEDIA_PORT + 2, CALLER_MEDIA_PORT, CALLER_MEDIA_PORT + 2,
           *range(RTP_START, RTP_END + 1)]
    tcp = [ari, ari + 1, int(PRODUCT_PORTS["IVR_API_PORT"]) + s, POSTGRES_PORT + s,
           redis.primary, redis.replica, *redis.sentinels]
    return udp, tcp


def busy_ports() -> list[str]:
    busy = []
    udp, tcp = planned_ports()
    for kind, ports in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)):
        for port in ports:
            with socket.socket(socket.AF_INET, kind) as sock:
                if kind == socket.SOCK_STREAM:  # a port in TIME_WAIT is free for a server
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    busy.append(f"{'udp' if kind == socket.SOCK_DGRAM else 'tcp'}/{port}")
    return busy


# --- CPU of process trees -----------------------------------------------------------------------


def parents() -> dict[int, int]:
    """pid -> parent pid, for every process now."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            found[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    return found


def descendants(root: int, parent_of: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, parent in parent_of.items():
        children[parent].append(pid)
    found, todo = [], list(children[root])
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children[pid]
    return found


def stack_pids(server: Server) -> Callable[[], dict[str, int]]:
    """Every process of a stack by service (its run/<service>.pid) and their children, named
    "<service>/<pid>": Kamailio forks its workers, PostgreSQL a backend per connection, a
    controller its recognizer."""
    run = server.settings.data_path / "run"

    def pids() -> dict[str, int]:
        parent_of = parents()
        found = {}
        for path in sorted(run.glob("*.pid")):
            try:
                root = int(path.read_text())
            except (OSError, ValueError):
                continue
            found[path.stem] = root
            for child in descendants(root, parent_of):
                found[f"{path.stem}/{child}"] = child
        return found

    return pids


def kind(name: str) -> str:
    """The kind of process a name of ``stack_pids`` is: asterisk-node1 and asterisk are both
    "asterisk"; Sentinels count with Redis; a controller's children are its recognizers."""
    service, _, child = name.partition("/")
    base = service.split("-")[0]
    if child and base == "controller":
        return "recognizers"
    return "redis" if base == "sentinel" else base


def by_kind(seconds: dict[str, float]) -> dict[str, float]:
    totals: dict[str, float] = collections.defaultdict(float)
    for name, used in seconds.items():
        totals[kind(name)] += used
    return {name: round(used, 2) for name, used in sorted(totals.items())}


def machine_jiffies() -> tuple[int, int]:
    """(busy, all) jiffies of every core so far (/proc/stat)."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    return round(100 * (after[0] - before[0]) / max(after[1] - before[1], 1), 1)


def own_cpu_seconds() -> float:
    """CPU time of this bench and everything it started (the stacks, SIPp), children that
    ended included (each process's cutime and cstime): the rest of the machine's is others'."""
    parent_of = parents()
    total = 0.0
    for pid in [os.getpid(), *descendants(os.getpid(), parent_of)]:
        with contextlib.suppress(OSError, IndexError, ValueError), \
                open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def others_cores(before: tuple[tuple[int, int], float], after: tuple[tuple[int, int], float],
                 seconds: float) -> float:
    """Cores other work on the machine kept busy meanwhile (other tests, builds...)."""
    busy = (after[0][0] - before[0][0]) / os.sysconf("SC_CLK_TCK")
    return round(max(0.0, busy - (after[1] - before[1])) / max(seconds, 1.0), 2)


def system_of(name: str, server: Server) -> System:
    return System(name, server.sip_target, stack_pids(server), product_system(server).reactions,
                  caller_media_port=CALLER_MEDIA_PORT)


async def idle_cpu(system: System, seconds: float) -> dict[str, float]:
    """CPU ms per second of each kind with no calls: what the cluster spends on itself (the
    edge and the nodes check the agents' phones and each other)."""
    pids = system.pids()
    before = cpu_of(pids)
    await asyncio.sleep(seconds)
    after = cpu_of(pids)
    used = by_kind({name: after[name] - before[name] for name in after if name in before})
    return {name: round(value * 1000 / seconds, 1) for name, value in used.items()}


# --- The ramp -----------------------------------------------------------------------------------


async def ramp(system: System, plan: list[Step], phones: AgentPhones,
               workdir: Path) -> dict[str, Any]:
    """bench/run.py's ramp, its CPU by kind of process, and how busy the machine was."""
    results: list[StepResult] = []
    busy, others = [], []
    for step in plan:
        before = machine_jiffies(), own_cpu_seconds()
        started = time.monotonic()
        result = await run_step(system, step, phones, workdir)
        after = machine_jiffies(), own_cpu_seconds()
        busy.append(busy_percent(before[0], after[0]))
        others.append(others_cores(before, after, time.monotonic() - started))
        result.cpu_seconds = by_kind(result.cpu_seconds)
        report_step(system.name, result)
        results.append(result)
        if not result.ok:
            break
        await asyncio.sleep(3)  # the last agents' wrap-up
    ramp_figures = figures(results, [])
    del ramp_figures["repeats"]
    for step_figure, percent, cores in zip(ramp_figures["steps"], busy, others, strict=True):
        step_figure["machine_busy_pct"] = percent
        step_figure["others_cores"] = cores
    return ramp_figures


# --- A steady load for the faults ---------------------------------------------------------------


@dataclass
class LoadResult:
    started: float  # epoch, when SIPp started
    calls: int = 0
    successful: int = 0
    failed: int = 0
    failed_placed_at: list[float] = field(default_factory=list)  # epoch of each failed INVITE
    answers: list[tuple[float, float]] = field(default_factory=list)  # (placed at, ms to 200)
    errors: list[str] = field(default_factory=list)

    def failed_after(self, moment: float) -> list[float]:
        return [placed for placed in self.failed_placed_at if placed >= moment]


FAILED_CALL = re.compile(r"^Call debugging information for call \S+:\n\S+\t\S+\t(\d+\.\d+) "
                         r"Starting call", re.MULTILINE)


async def steady_load(system: System, concurrent: int, seconds: float, workdir: Path,
                      name: str, wait_margin: float) -> LoadResult:
    """Callers as in the ramp (a call lasts about 15 s with no wait), ``concurrent`` at once
    for ``seconds``. A caller who hears no BYE within the talk and ``wait_margin`` s fails.
    SIPp keeps the history of each failed call (when its INVITE left) and the time to each
    200 OK."""
    rate = round(concurrent / 15, 1)
    calls = int(rate * seconds)
    path = scenario("caller.xml", workdir, {
        "caller_pcap": str(caller_recording(workdir, 15 + 60)),
        "press_after_ms": str(int(PRESS_AFTER * 1000)), "digit": "0",
        "bye_within_ms": str(int((TALK_SECONDS + wait_margin) * 1000))})
    stats_file = workdir / f"load-{name}.csv"
    stats_file.unlink(missing_ok=True)
    limit = int(seconds + TALK_SECONDS + wait_margin + 60)
    result = LoadResult(time.time())
    process = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(path), "-s", "120", "-r", f"{rate:g}", "-m", str(calls),
        "-l", str(concurrent * 4), "-i", "127.0.0.1", "-p", str(free_udp_port()),
        "-mp", str(system.caller_media_port), "-trace_stat", "-stf", str(stats_file),
        "-fd", "1", "-trace_calldebug", "-trace_rtt", "-rtt_freq", "1",
        "-timeout", f"{limit}s", "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(workdir / f"load-{name}-errors.log"),
        system.sip_target, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, cwd=workdir)
    try:
        await asyncio.wait_for(process.wait(), limit + 30)
    except TimeoutError:
        result.errors.append("the callers' SIPp did not finish in time")
    finally:  # also when the fault is interrupted: no SIPp is left behind
        if process.returncode is None:
            process.kill()
            await process.wait()
    rows = sipp_stats(stats_file)
    if rows:
        last = rows[-1]
        result.calls = int(last.get("TotalCallCreated") or 0)
        result.successful = int(last.get("SuccessfulCall(C)") or 0)
        result.failed = result.calls - result.successful
    debug = workdir / f"caller_{process.pid}_calldebug.log"
    if debug.exists():
        text = debug.read_text(errors="replace")
        result.failed_placed_at = sorted(float(stamp) for stamp in FAILED_CALL.findall(text))
    if len(result.failed_placed_at) != result.failed:
        result.errors.append(f"{result.failed} failed calls, {len(result.failed_placed_at)} "
                             "in SIPp's call history")
    # -trace_rtt: ms since SIPp started at each 200 OK, and the time it took.
    for row in sipp_stats(workdir / f"caller_{process.pid}_rtt.csv"):
        with contextlib.suppress(KeyError, ValueError):
            answered_ms, took_ms = float(row["Date_ms"]), float(row["response_time_ms"])
            result.answers.append((result.started + (answered_ms - took_ms) / 1000, took_ms))
    return result


def load_figures(load: LoadResult, fault_at: float,
                 records: list[CallRecord]) -> dict[str, Any]:
    """The load's calls, those that failed placed after the fault, the answer times (INVITE
    to 200 OK), and its records: every call the callers placed reached a node (none failed
    at the edge), so each has a record, under its caller's number (0107777 and SIPp's call
    number)."""
    new_failed = load.failed_after(fault_at)
    before = [ms for placed, ms in load.answers if placed < fault_at]
    after = [ms for placed, ms in load.answers if placed >= fault_at]
    callers = {record.caller for record in records}
    return {
        "calls": load.calls, "successful": load.successful, "failed": load.failed,
        "new_calls_failed": len(new_failed),
        "calls_failed_placed_before": load.failed - len(new_failed),
        # The last new call that failed: after it, every new call succeeded.
        "new_calls_all_succeed_after_s": round(max(new_failed) - fault_at, 1)
        if new_failed else 0.0,
        "answer_ms_before_p50": percentiles(before)["p50"],
        "answer_ms_after_max": max(after, default=None),
        "answers_after_over_2s": sum(1 for ms in after if ms > 2000),
        "records_missing": sum(1 for number in range(1, load.calls + 1)
                               if f"{CALLER_PREFIX}{number}" not in callers),
        "records_not_ended": sum(1 for record in records if not record.ended_at),
        "errors": load.errors,
    }


# --- The cluster's state ------------------------------------------------------------------------


async def node_states(settings: Settings) -> dict[str, str]:
    try:
        return {state.node_id: state.state
                for state in await edge.node_states(settings.edge_rpc_port)}
    except edge.EdgeRpcError:
        return {}


async def all_nodes_up(settings: Settings, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = await node_states(settings)
        if states and all(state == "up" for state in states.values()):
            return True
        await asyncio.sleep(0.5)
    return False


async def node_down_and_up(settings: Settings, node_id: str, since: float,
                           timeout: float) -> tuple[float | None, float | None]:
    """Seconds after ``since`` until the edge counts the node out, then in again."""
    down_at = up_at = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (await node_states(settings)).get(node_id)
        if down_at is None and state != "up":
            down_at = time.time()
        elif down_at is not None and state == "up":
            up_at = time.time()
            break
        await asyncio.sleep(0.2)
    return (round(down_at - since, 1) if down_at else None,
            round(up_at - since, 1) if up_at else None)


async def channels(settings: Settings) -> dict[str, int | None]:
    return {row.node_id: row.calls for row in await list_nodes(settings)}


@contextlib.asynccontextmanager
async def acd_of(settings: Settings) -> Any:
    redis = connect_redis(settings)
    try:
        yield acd_for(settings, redis)
    finally:
        await redis.aclose()


async def agent_states(settings: Settings, names: list[str]) -> dict[str, int]:
    async with acd_of(settings) as acd:
        states = [(await acd.agent(name)).get("state", "?") for name in names]
    return dict(collections.Counter(states))


async def settle(server: Server, names: list[str], timeout: float = 60) -> dict[str, Any]:
    """Before a fault: both nodes up, no call left on them, every agent available."""
    deadline = time.monotonic() + timeout
    while True:
        up = await all_nodes_up(server.settings, timeout=5)
        on_nodes = await channels(server.settings)
        states = await agent_states(server.settings, names)
        settled = up and not any(on_nodes.values()) and states.get("available") == len(names)
        if settled or time.monotonic() > deadline:
            return {"nodes_up": up, "channels": on_nodes, "agents": states}
        await asyncio.sleep(1)


async def load_records(settings: Settings, since: float,
                       timeout: float = 30) -> list[CallRecord]:
    """The records of the bench callers' calls begun since ``since`` (epoch), once every one
    has ended (or ``timeout``: the rest are returned as they are)."""
    engine = create_engine(settings.sql_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            async with sessionmaker(engine)() as session:
                records = list(await session.scalars(select(CallRecord).where(
                    CallRecord.started_at >= datetime.fromtimestamp(since, UTC),
                    CallRecord.caller.startswith(CALLER_PREFIX))))
            if all(record.ended_at for record in records) or time.monotonic() > deadline:
                return records
            await asyncio.sleep(1)
    finally:
        await engine.dispose()


def epoch(moment: datetime) -> float:
    return aware(moment).timestamp()


# --- The faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPlan:
    concurrent: int
    warm_up: float  # seconds of load before the fault
    after: float  # seconds of new calls after it


def load_plan(quick: bool) -> LoadPlan:
    return LoadPlan(20, 8, 16) if quick else LoadPlan(30, 15, 40)


async def drain_fault(server: Server, system: System, plan: LoadPlan,
                      workdir: Path) -> dict[str, Any]:
    """node2 drained under load: no new call may fail or reach it, its calls finish."""
    settings = server.settings
    load = asyncio.create_task(steady_load(system, plan.concurrent, plan.warm_up + plan.after,
                                           workdir, "drain", wait_margin=60))
    try:
        await asyncio.sleep(plan.warm_up)
        on_node = (await channels(settings)).get("node2")
        drained_at = time.time()
        await set_drained(settings, "node2", True)
        empty_after = None
        while time.time() - drained_at < 60:
            if (await channels(settings)).get("node2") == 0:
                empty_after = round(time.time() - drained_at, 1)
                break
            await asyncio.sleep(0.5)
        undrained_at = time.time()
        await set_drained(settings, "node2", False)
        result = await load
    finally:
        load.cancel()
    records = await load_records(settings, result.started)
    reached = [r for r in records if r.channel_id.startswith("node2-")
               and drained_at + 0.5 < epoch(r.started_at) < undrained_at]
    return {**load_figures(result, drained_at, records), "channels_on_node_before": on_node,
            "node_without_channels_after_s": empty_after,
            "new_calls_on_drained_node": len(reached)}


async def postgres_fault(server: Server, system: System, plan: LoadPlan,
                         workdir: Path) -> dict[str, Any]:
    """PostgreSQL stopped (fast shutdown) under load; the supervisor starts it again. Every
    call's record must be there afterwards, those written meanwhile too."""
    settings = server.settings
    load = asyncio.create_task(steady_load(system, plan.concurrent, plan.warm_up + plan.after,
                                           workdir, "postgres", wait_margin=60))
    try:
        await asyncio.sleep(plan.warm_up)
        stopped_at = time.time()
        await asyncio.to_thread(stop_postgres, settings.data_path / "postgres")
        back_at = None
        while time.time() - stopped_at < 60:
            if await postgres_ready(settings.sql_url):
                back_at = time.time()
                break
            await asyncio.sleep(0.2)
        result = await load
    finally:
        load.cancel()
    records = await load_records(settings, result.started)
    outage_end = back_at or time.time()

    def during(moment: datetime | None) -> bool:
        return moment is not None and stopped_at <= epoch(moment) <= outage_end

    meanwhile = [r for r in records if during(r.started_at) or during(r.ended_at)]
    return {**load_figures(result, stopped_at, records),
            "outage_s": round(back_at - stopped_at, 1) if back_at else None,
            "records_begun_or_ended_during_outage": len(meanwhile)}


async def node_kill_fault(server: Server, system: System, plan: LoadPlan,
                          workdir: Path) -> dict[str, Any]:
    """node1's Asterisk killed (-9) under load: the edge sends its new calls to node2, the
    supervisor restarts it; its calls are cut."""
    settings = server.settings
    # Cut calls hear nothing more: they fail when their BYE is 30 s late.
    load = asyncio.create_task(steady_load(system, plan.concurrent, plan.warm_up + plan.after,
                                           workdir, "kill", wait_margin=30))
    try:
        await asyncio.sleep(plan.warm_up)
        on_node = (await channels(settings)).get("node1")
        killed_at = time.time()
        os.kill(server.pid("asterisk-node1"), signal.SIGKILL)
        down_after, up_after = await node_down_and_up(settings, "node1", killed_at, 120)
        result = await load
    finally:
        load.cancel()
    records = await load_records(settings, result.started, timeout=60)
    back_at = killed_at + (up_after or 0)
    taken_again = sorted(epoch(r.started_at) for r in records
                         if r.channel_id.startswith("node1-") and up_after
                         and epoch(r.started_at) > back_at)
    return {**load_figures(result, killed_at, records), "channels_on_node_before": on_node,
            "calls_cut": sum(1 for r in records if r.outcome == CallOutcome.CUT),
            "outcomes": dict(collections.Counter(r.outcome for r in records)),
            "edge_counts_node_out_after_s": down_after,
            "node_back_at_edge_after_s": up_after,
            "node_takes_a_call_again_after_s": round(taken_again[0] - killed_at, 1)
            if taken_again else None}


async def redis_primary(settings: Settings) -> tuple[str, int] | None:
    """The primary the Sentinels name now (None without Sentinels, or if none answers)."""
    for host, port in settings.sentinel_addresses():
        client = Redis(host=host, port=port, socket_timeout=1.0, decode_responses=True)
        try:
            address = await client.sentinel_get_master_addr_by_name(settings.redis_master_name)
            if isinstance(address, tuple | list):
                return str(address[0]), int(address[1])
        except RedisError:
            continue
        finally:
            await client.aclose()
    return None


async def in_line(acd: Acd) -> dict[str, list[str]]:
    """Every queue's callers, first in line first."""
    return {queue: [str(call) for call in await acd.redis.zrange(queue_key(queue), 0, -1)]
            for queue in await acd.queues()}


def places_lost(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, int]:
    """Callers in line before who are missing after, or now behind one who came later."""
    missing = moved_back = 0
    for queue, callers in before.items():
        now = after.get(queue, [])
        missing += sum(1 for call in callers if call not in now)
        newcomers = [index for index, call in enumerate(now) if call not in callers]
        if newcomers:
            moved_back += sum(1 for index, call in enumerate(now)
                              if call in callers and index > newcomers[0])
    return {"missing_from_line": missing, "behind_a_later_caller": moved_back}


async def writes(redis: Redis, stop: asyncio.Event, done: list[tuple[float, bool]]) -> None:
    """A write every 50 ms through a client that follows a failover, as the controllers'
    does; into ``done``: when each ended, and whether it succeeded."""
    number = 0
    while not stop.is_set():
        try:
            await redis.set(WRITE_KEY, number)
            done.append((time.time(), True))
        except (RedisError, OSError):
            done.append((time.time(), False))
        number += 1
        await asyncio.sleep(0.05)


def write_recovery(done: list[tuple[float, bool]], killed_at: float) -> dict[str, Any]:
    """The longest wait between two successful writes across the kill: the outage as a
    client of Redis sees it, and when it ended."""
    successes = [at for at, ok in done if ok]
    gaps = [(later - earlier, later) for earlier, later in itertools.pairwise(successes)
            if later > killed_at]
    longest, recovered_at = max(gaps, default=(0.0, killed_at))
    return {"writes_succeed_again_after_s": round(recovered_at - killed_at, 2),
            "longest_write_gap_s": round(longest, 2),
            "writes_failed": sum(1 for at, ok in done if not ok and at > killed_at)}


async def redis_fault(server: Server, system: System, plan: LoadPlan, names: list[str],
                      workdir: Path, freeze: bool = False) -> dict[str, Any]:
    """The Redis primary killed (-9) under load, with callers in line: every agent is paused
    first, so that places can be compared before and after. The supervisor starts it again;
    the Sentinels promote the replica if it stays away long enough. ``freeze``: stopped
    (SIGSTOP) instead, as a hung server or a lost link would be, until the Sentinels name
    another primary (or 15 s), then let go (SIGCONT): a real failover."""
    settings = server.settings
    primary = await redis_primary(settings)
    service = f"redis-{primary[1]}" if primary else "redis"  # without Sentinel: the one Redis
    redis = connect_redis(settings)
    acd = acd_for(settings, redis)
    stop = asyncio.Event()
    done: list[tuple[float, bool]] = []
    for name in names:
        await acd.pause(name, "bench")
    load = asyncio.create_task(steady_load(system, plan.concurrent, plan.warm_up + plan.after,
                                           workdir, "redis", wait_margin=90))
    writer = asyncio.create_task(writes(redis, stop, done))
    pid = server.pid(service)
    frozen = False
    try:
        await asyncio.sleep(plan.warm_up)
        before = await in_line(acd)
        faulted_at = time.time()
        os.kill(pid, signal.SIGSTOP if freeze else signal.SIGKILL)
        frozen = freeze
        # Until writes have gone through for 3 s since the last one failed (or 30 s passed).
        while time.time() - faulted_at < 30:
            await asyncio.sleep(0.5)
            if frozen and (await redis_primary(settings) != primary
                           or time.time() - faulted_at > 15):
                os.kill(pid, signal.SIGCONT)
                frozen = False
            failed = [at for at, ok in done if not ok]
            if not frozen and any(ok and at > faulted_at for at, ok in done) and \
                    time.time() - max(failed, default=faulted_at) > 3:
                break
        after = await in_line(acd)
        for name in names:
            await acd.ready(name)
        result = await load
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
        stop.set()
        load.cancel()
        await writer
        await redis.aclose()
    new_primary = await redis_primary(settings)
    records = await load_records(settings, result.started)
    return {**load_figures(result, faulted_at, records),
            "sentinel": primary is not None,
            "primary_before": f"{primary[0]}:{primary[1]}" if primary else None,
            "primary_after": f"{new_primary[0]}:{new_primary[1]}" if new_primary else None,
            **write_recovery(done, faulted_at),
            "callers_in_line_before": sum(len(callers) for callers in before.values()),
            **places_lost(before, after)}


# --- Running it ---------------------------------------------------------------------------------


async def one_node(plan: list[Step], names: list[str], workdir: Path,
                   quick: bool) -> dict[str, Any]:
    print(f"one node (ivr run): starting, {len(names)} agents", flush=True)
    server = start_product(BASE / "one-node", shift(), stack_settings())
    phones = AgentPhones(workdir, port=agents_port(), media_port=AGENT_MEDIA_PORT)
    try:
        await phones.start()
        await product_agents(server, names, workdir, agents_port())
        system = system_of("one-node", server)
        idle = await idle_cpu(system, IDLE_SECONDS / (3 if quick else 1))
        return {"idle_cpu_ms_per_s": idle, **await ramp(system, plan, phones, workdir)}
    finally:
        await phones.stop()
        stop_product(server)


async def cluster(plan: list[Step], names: list[str], workdir: Path,
                  quick: bool) -> dict[str, Any]:
    print(f"cluster (ivr cluster): starting, {len(names)} agents registered to the edge",
          flush=True)
    server = start_product(BASE / "cluster", shift(), stack_settings(), verb="cluster")
    phones = AgentPhones(workdir, port=agents_port(), media_port=AGENT_MEDIA_PORT)
    refreshes: asyncio.Task[None] | None = None
    try:
        if not await all_nodes_up(server.settings):
            raise RuntimeError(f"the cluster's nodes are not up at the edge ({server.log_path})")
        await phones.start()
        registrations = Registrations(
            server, await product_agents(server, names, workdir, agents_port()))
        refreshes = asyncio.create_task(registrations.keep())
        system = system_of("cluster", server)
        idle = await idle_cpu(system, IDLE_SECONDS / (3 if quick else 1))
        result = {"idle_cpu_ms_per_s": idle, **await ramp(system, plan, phones, workdir)}
        result["faults"] = await faults(server, system, names, workdir, load_plan(quick),
                                        registrations)
        result["registration_refreshes_failed"] = registrations.failed
        return result
    finally:
        if refreshes is not None:
            refreshes.cancel()
        await phones.stop()
        stop_product(server)


REFRESH_SECONDS = 30  # the edge grants a minute (kamailio.cfg, max_expires): half of it


@dataclass
class Registrations:
    """The agents' phones refresh their registrations at the edge, as phones do: every agent
    once every REFRESH_SECONDS, spread over them (a group each second)."""

    server: Server
    passwords: dict[str, str]
    failed: int = 0  # REGISTERs the edge refused or did not answer, so far

    async def keep(self) -> None:
        names = sorted(self.passwords)
        groups = [names[first::REFRESH_SECONDS] for first in range(REFRESH_SECONDS)]
        while True:
            for group in groups:
                failed = await register_agents(
                    self.server.sip_target, {name: self.passwords[name] for name in group},
                    agents_port(), at_once=10)
                self.failed += len(failed)
                await asyncio.sleep(1)


async def faults(server: Server, system: System, names: list[str], workdir: Path,
                 plan: LoadPlan, registrations: Registrations) -> dict[str, Any]:
    """One fault after another, each from a settled cluster; the gentlest first, so that what
    a fault leaves behind (agents stuck, a node not back) shows in the next one's "before"."""
    measures: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "drain": lambda: drain_fault(server, system, plan, workdir),
        "postgres_restart": lambda: postgres_fault(server, system, plan, workdir),
        "node_kill": lambda: node_kill_fault(server, system, plan, workdir),
        "redis_primary_kill": lambda: redis_fault(server, system, plan, names, workdir),
        "redis_primary_freeze": lambda: redis_fault(server, system, plan, names, workdir,
                                                    freeze=True),
    }
    results: dict[str, Any] = {"load": {"concurrent": plan.concurrent,
                                        "calls_per_second": round(plan.concurrent / 15, 1),
                                        "seconds_before_fault": plan.warm_up,
                                        "seconds_after_fault": plan.after}}
    for name, measure in measures.items():
        before = await settle(server, names)
        print(f"  fault: {name} ({plan.concurrent} calls at once)", flush=True)
        refused = registrations.failed
        try:
            results[name] = await measure()
        except Exception as exc:  # one fault not measured is reported; the others still run
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["registration_refreshes_failed"] = registrations.failed - refused
        results[name]["before"] = before
        print(f"    {json.dumps({k: v for k, v in results[name].items() if k != 'before'})}",
              flush=True)
    results["after"] = await settle(server, names)
    return results


async def bench(quick: bool) -> dict[str, Any]:
    started = time.monotonic()
    plan = ramp_plan(quick)
    names = agent_names(int(max(step.concurrent for step in plan) * AGENTS_PER_CALL))
    results: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(), "load_average_at_start": os.getloadavg()[0],
        "agents": len(names), "port_shift": shift()}
    results["one_node"] = await one_node(plan, names, workdir("one-node"), quick)
    results["cluster"] = await cluster(plan, names, workdir("cluster"), quick)
    results["compared_at"] = compared_at(results["one_node"], results["cluster"])
    results["duration_s"] = round(time.monotonic() - started)
    results["load_average_at_end"] = os.getloadavg()[0]
    return results


# --- The table ----------------------------------------------------------------------------------


def compared_at(one: dict[str, Any], other: dict[str, Any]) -> int | None:
    """The highest step both passed: where CPU per call is compared."""
    def passed(system: dict[str, Any]) -> set[int]:
        return {step["concurrent_wanted"] for step in system["steps"] if step["ok"]}

    both = passed(one) & passed(other)
    return max(both) if both else None


def step_at(system: dict[str, Any], concurrent: int | None) -> dict[str, Any]:
    return next((step for step in system["steps"] if step["concurrent_wanted"] == concurrent),
                {})


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and a:
        return round(b / a, 2)
    return None


def first_failure(system: dict[str, Any]) -> str | None:
    failed = [step for step in system["steps"] if not step["ok"]]
    if not failed:
        return None
    step = failed[0]
    unfinished = step["successful"] - step["agents_finished"]
    agents = f", {unfinished} agents' hang-ups failed" if unfinished > 0 else ""
    return f"{step['concurrent_wanted']}: {step['failed']} of {step['calls']}{agents}"


def every_caller_served(system: dict[str, Any]) -> int:
    """The peak of the highest step where every caller was served, whatever the agents'
    side saw (a hang-up that timed out at the edge)."""
    served = [step["peak_concurrent"] for step in system["steps"]
              if step["calls"] and not step["failed"]]
    return max(served, default=0)


def ramp_lines(name: str, system: dict[str, Any]) -> list[str]:
    parts = []
    for step in system["steps"]:
        cpu = step["cpu_ms_per_call"]
        edge_cpu = f", edge {cpu['edge']}" if "edge" in cpu else ""
        parts.append(f"{step['concurrent_wanted']} {'ok' if step['ok'] else 'FAILED'} "
                     f"({step['successful']}/{step['calls']}, agents finished "
                     f"{step['agents_finished']}, peak {step['peak_concurrent']}, "
                     f"{step['calls_per_second']}/s, {cpu['total']} ms/call{edge_cpu}, "
                     f"machine {step['machine_busy_pct']}% busy, others "
                     f"{step.get('others_cores')} cores)")
    return [f"{name}: " + "; ".join(parts)]


def fault_lines(faults: dict[str, Any]) -> list[str]:
    """One line per fault, in the brief's order; a fault not measured says why."""
    load = faults["load"]
    lines = [f"faults under load through the edge ({load['concurrent']} calls at once, "
             f"{load['calls_per_second']}/s; the fault {load['seconds_before_fault']:g} s in):"]

    def calls(fault: dict[str, Any]) -> str:
        return (f"calls failed {fault['failed']} of {fault['calls']} (new "
                f"{fault['new_calls_failed']}, all new ones succeed after "
                f"{fault['new_calls_all_succeed_after_s']} s); "
                f"answers after the fault: max {_cell(fault['answer_ms_after_max'])} ms, "
                f"{fault['answers_after_over_2s']} over 2 s (p50 before "
                f"{_cell(fault['answer_ms_before_p50'])} ms); records missing "
                f"{fault['records_missing']}, not ended {fault['records_not_ended']}")

    def figures_of(key: str) -> dict[str, Any] | str:
        fault: dict[str, Any] = faults.get(key, {"error": "not run"})
        return f"not measured: {fault['error']}" if "error" in fault else fault

    texts: list[tuple[str, str]] = []
    kill = figures_of("node_kill")
    texts.append(("node1 Asterisk kill -9", kill if isinstance(kill, str) else
                  f"calls cut {kill['calls_cut']}; node out at the edge after "
                  f"{_cell(kill['edge_counts_node_out_after_s'])} s, back after "
                  f"{_cell(kill['node_back_at_edge_after_s'])} s, takes a call after "
                  f"{_cell(kill['node_takes_a_call_again_after_s'])} s; {calls(kill)}"))
    drain = figures_of("drain")
    texts.append(("node2 drained", drain if isinstance(drain, str) else
                  f"new calls on node2 {drain['new_calls_on_drained_node']}, node2 at 0 "
                  f"channels after {_cell(drain['node_without_channels_after_s'])} s; "
                  f"{calls(drain)}"))
    for key, label in (("redis_primary_kill", "Redis primary kill -9"),
                       ("redis_primary_freeze", "Redis primary SIGSTOP")):
        red = figures_of(key)
        if isinstance(red, str):
            texts.append((label, red))
            continue
        primaries = (f"primary {red['primary_before']} -> {red['primary_after']}"
                     if red["sentinel"] else "no Sentinel: the one Redis restarted")
        texts.append((label, f"{primaries}; writes again after "
                      f"{red['writes_succeed_again_after_s']} s ({red['writes_failed']} "
                      f"failed); callers in line {red['callers_in_line_before']}: "
                      f"{red['missing_from_line']} lost, {red['behind_a_later_caller']} moved "
                      f"back; {calls(red)}"))
    pg = figures_of("postgres_restart")
    texts.append(("PostgreSQL restart", pg if isinstance(pg, str) else
                  f"outage {_cell(pg['outage_s'])} s, records begun or ended in it "
                  f"{pg['records_begun_or_ended_during_outage']}, phones' registrations "
                  f"refused {pg['registration_refreshes_failed']}; {calls(pg)}"))
    lines += [f"  {name:<24} {text}" for name, text in texts]
    return lines


def table(results: dict[str, Any]) -> str:
    one, other = results["one_node"], results["cluster"]
    at = results["compared_at"]
    ours, theirs = step_at(one, at), step_at(other, at)
    cpu_one, cpu_other = ours.get("cpu_ms_per_call", {}), theirs.get("cpu_ms_per_call", {})
    rows: list[tuple[str, Any, Any]] = [
        ("most concurrent calls, no failed call", one["max_concurrent_no_failure"],
         other["max_concurrent_no_failure"]),
        ("new calls per second (highest passed)", one["calls_per_second"],
         other["calls_per_second"]),
        ("failed calls (every step)", one["failed_calls"], other["failed_calls"]),
        ("first step with a failed call", first_failure(one), first_failure(other)),
        ("most concurrent calls, every caller served", every_caller_served(one),
         every_caller_served(other)),
    ]
    kinds = [("total", "all processes"), ("asterisk", "Asterisk (every node)"),
             ("controller", "controllers"), ("recognizers", "their recognizers"),
             ("redis", "Redis (cluster: + replica, Sentinels)"), ("api", "API"),
             ("postgres", "PostgreSQL"), ("edge", "edge (Kamailio, all processes)")]
    rows += [(f"CPU ms per call @{at}, {label}", cpu_one.get(key), cpu_other.get(key))
             for key, label in kinds]
    idle_one, idle_other = one["idle_cpu_ms_per_s"], other["idle_cpu_ms_per_s"]
    rows += [
        ("CPU ms per s with no call, all", round(sum(idle_one.values()), 1),
         round(sum(idle_other.values()), 1)),
        ("CPU ms per s with no call, edge", idle_one.get("edge"), idle_other.get("edge")),
        (f"machine busy @{at} (%, SIPp included)", ours.get("machine_busy_pct"),
         theirs.get("machine_busy_pct")),
        (f"other work on the machine @{at} (cores)", ours.get("others_cores"),
         theirs.get("others_cores")),
        (f"ARI event to action p99 ms @{at}", (ours.get("reaction_ms") or {}).get("p99"),
         (theirs.get("reaction_ms") or {}).get("p99")),
        (f"answer to first menu audio p50 ms @{at}",
         ours.get("first_menu_audio_ms", {}).get("p50"),
         theirs.get("first_menu_audio_ms", {}).get("p50")),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'figure':<{width}} {'one node':>10} {'cluster':>10} {'cluster/one':>11}",
             "-" * (width + 34)]
    lines += [f"{name:<{width}} {_cell(a):>10} {_cell(b):>10} {_cell(_ratio(a, b)):>11}"
              for name, a, b in rows]
    lines += ["", *ramp_lines("one node", one), *ramp_lines("cluster", other),
              f"CPU ms per s with no call, by kind: one node {idle_one}; cluster {idle_other}",
              ""]
    if "faults" in other:
        lines += fault_lines(other["faults"])
    m = results["machine"]
    lines.append(f"\n{results['mode']} run; machine: {m['cores']} cores ({m['cpu']}), "
                 f"{m['memory_gb']} GB, shared by each system in turn, SIPp and the bench "
                 f"(load average {results['load_average_at_start']:.1f} at the start, "
                 f"{results['load_average_at_end']:.1f} at the end); "
                 f"{results['duration_s']} s in all")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench-cluster",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="steps of 20 and 40 calls, shorter faults: a few minutes")
    args = parser.parse_args()
    # `kill` stops it as Ctrl-C does: the calls are hung up and the stacks are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    busy = busy_ports()
    if busy:
        raise SystemExit(f"bench-cluster: ports in use: {', '.join(busy[:10])}"
                         f"{' ...' if len(busy) > 10 else ''} (IVR_BENCH_SHIFT moves them)")
    results = asyncio.run(bench(args.quick))
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print()
    print(table(results))
    print(f"\nfigures in {RESULTS}")


if __name__ == "__main__":
    main()
