"""The calls of the benchmark, the same for the product and the baseline.

SIPp callers (bench/sipp/caller.xml) dial 120, talk all along, press 0 for an agent during the
menu and wait; one SIPp plays every agent's phone (bench/sipp/agent.xml): it answers, echoes the
caller's audio for the talk time and hangs up. A step runs calls at a rate long enough for the
wanted number to be up at once; around it the benchmark reads the CPU time of each server
process, the controller's reaction times, and times a few probe calls from their answer to the
first audio of the menu.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.sip import SippCall, free_udp_port
from tests.support.speech import alaw, frames, spoken, write_pcap

SIPP = Path(__file__).resolve().parent / "sipp"

AGENT_PORT = 25070  # the agents' SIPp: their phones' SIP contact
AGENT_MEDIA_PORT = 36000  # and the RTP port it echoes on
CALLER_MEDIA_PORT = 36100  # the callers' RTP (the port's neighbours are SIPp's too)
PRESS_AFTER = 1.5  # seconds of menu before the caller presses 0
TALK_SECONDS = 12.0  # the agent's part of the call
CALL_SECONDS = 15.0  # menu, line, ringing and talk: the length of a call with no wait
PROBES_PER_STEP = 3

# Each call's talk also ends in the agent's 2 s wrap-up, so a step needs more agents than calls.
AGENTS_PER_CALL = 1.25


@dataclass(frozen=True)
class Step:
    concurrent: int  # calls meant to be up at once
    rate: float  # new calls per second
    calls: int

    @property
    def name(self) -> str:
        return f"{self.concurrent} at {self.rate:g}/s"


def step_for(concurrent: int, hold_seconds: float) -> Step:
    """Enough calls at the rate that keeps ``concurrent`` up, for ``hold_seconds`` at the top."""
    rate = round(concurrent / CALL_SECONDS, 1)
    return Step(concurrent, rate, int(rate * (CALL_SECONDS + hold_seconds)))


@dataclass
class System:
    """What a step drives and watches: the product or the baseline."""

    name: str
    sip_target: str
    pids: Callable[[], dict[str, int]]  # process name -> pid, read at each use
    reactions: Callable[[], Awaitable[dict[int, int]]] | None = None  # ms -> events so far
    caller_media_port: int = CALLER_MEDIA_PORT  # another bench beside this one needs its own


@dataclass
class StepResult:
    step: Step
    seconds: float = 0.0
    calls: int = 0
    successful: int = 0
    failed: int = 0
    talked: int = 0  # calls the agents answered and finished
    peak_concurrent: int = 0
    calls_per_second: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    reactions: dict[int, int] = field(default_factory=dict)
    first_audio_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.calls > 0 and self.failed == 0 and self.talked >= self.successful

    def cpu_ms_per_call(self) -> dict[str, float]:
        return {name: round(seconds * 1000 / max(self.calls, 1), 1)
                for name, seconds in self.cpu_seconds.items()}


# --- Files --------------------------------------------------------------------------------------


def scenario(name: str, workdir: Path, values: dict[str, str]) -> Path:
    """A scenario of bench/sipp with its @@placeholders@@ filled in, written to ``workdir``."""
    text = (SIPP / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    missing = re.search(r"@@\w+@@", text)
    if missing:
        raise ValueError(f"{name}: {missing.group(0)} is not filled in")
    path = workdir / name
    path.write_text(text)
    return path


def caller_recording(workdir: Path, seconds: float) -> Path:
    """What the callers say, as RTP in a pcap: a question said again and again."""
    path = workdir / f"caller-{int(seconds)}s.pcap"
    if not path.exists():
        said = alaw(spoken("I would like to ask about my water bill, please.", workdir))
        payloads = frames(said)
        needed = int(seconds / 0.02)
        write_pcap((payloads * (needed // len(payloads) + 1))[:needed], path)
    return path


# --- Measuring ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and all its threads so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    used = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            used[name] = cpu_seconds(pid)
    return used


def sipp_stats(path: Path) -> list[dict[str, str]]:
    """The rows of a SIPp statistics file (-trace_stat), one per dump."""
    if not path.exists():
        return []
    with path.open() as rows:
        return list(csv.DictReader(rows, delimiter=";"))


def _count(row: dict[str, str], column: str) -> int:
    return int(row.get(column) or 0)


MESSAGE_TIME = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)$")


def answered_at(message_log: Path) -> float | None:
    """When the probe's INVITE was answered (200 OK received), from SIPp's message log."""
    stamp = None
    lines = message_log.read_text(errors="replace").splitlines() if message_log.exists() else []
    for number, line in enumerate(lines):
        match = MESSAGE_TIME.match(line)
        if match:
            stamp = match.group(1)
        elif line.startswith("SIP/2.0 200") and stamp and "received" in lines[number - 2]:
            if any("INVITE" in later for later in lines[number:number + 8]
                   if later.startswith("CSeq:")):
                return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return None


async def probe(system: System, workdir: Path) -> float | None:
    """One call that only listens: ms from its answer to the first audio of the menu."""
    call = await SippCall(str(SIPP / "probe.xml"), "120", system.sip_target, workdir / "probes",
                          caller="0107778000").start()
    result = await call.finished(timeout=60)
    answered = answered_at(call.message_file)
    if not result.ok or answered is None or not call.rtp.packets:
        return None
    first_audio = time.time() - (time.monotonic() - call.rtp.first_arrival)
    return round((first_audio - answered) * 1000, 1)


# --- The agents' phones -------------------------------------------------------------------------


class AgentPhones:
    """One SIPp answering for every agent: rings, answers, echoes the caller, hangs up. It
    also answers OPTIONS, with which a cluster's nodes check the phones through the edge."""

    def __init__(self, workdir: Path, talk_seconds: float = TALK_SECONDS,
                 port: int = AGENT_PORT, media_port: int = AGENT_MEDIA_PORT) -> None:
        self.workdir = workdir
        self.talk_seconds = talk_seconds
        self.port = port
        self.media_port = media_port
        self.stats_file = workdir / "agents-stats.csv"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        path = scenario("agent.xml", self.workdir, {})
        self.stats_file.unlink(missing_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(path), "-i", "127.0.0.1", "-p", str(self.port),
            "-mp", str(self.media_port), "-rtp_echo", "-d", str(int(self.talk_seconds * 1000)),
            "-trace_stat", "-stf", str(self.stats_file), "-trace_counts", "-fd", "1",
            "-nostdin", "-trace_err", "-error_file", str(self.workdir / "agents-errors.log"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            cwd=self.workdir)

    def finished_calls(self) -> int:
        """Talks the agents finished: the answers to their BYEs, in SIPp's count of each
        message (a call ended is not one: an answered OPTIONS ends as a call too)."""
        assert self.process is not None
        rows = sipp_stats(self.workdir / f"agent_{self.process.pid}_counts.csv")
        if not rows:
            return 0
        last = rows[-1]
        return sum(_count(last, column) for column in last if column.endswith("_200_Recv"))

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def agent_phones(workdir: Path) -> AsyncIterator[AgentPhones]:
    phones = AgentPhones(workdir)
    await phones.start()
    try:
        yield phones
    finally:
        await phones.stop()


# --- A step -------------------------------------------------------------------------------------


async def run_step(system: System, step: Step, phones: AgentPhones, workdir: Path) -> StepResult:
    """``step.calls`` callers at ``step.rate`` per second; every figure is of this step only."""
    result = StepResult(step)
    talk_ms = int(TALK_SECONDS * 1000)
    recording = caller_recording(workdir, CALL_SECONDS + 60)
    path = scenario("caller.xml", workdir, {
        "caller_pcap": str(recording), "press_after_ms": str(int(PRESS_AFTER * 1000)),
        "digit": "0", "bye_within_ms": str(talk_ms + 90_000)})
    stats_file = workdir / f"callers-{system.name}-{step.concurrent}.csv"
    stats_file.unlink(missing_ok=True)
    limit = step.concurrent * 3  # a ceiling for safety: the rate, not SIPp, sets the load
    duration_limit = int(step.calls / step.rate + TALK_SECONDS + 120)

    pids = system.pids()
    cpu_before = cpu_of(pids)
    reactions_before = await system.reactions() if system.reactions else {}
    talked_before = phones.finished_calls()
    started = time.monotonic()
    callers = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(path), "-s", "120", "-r", f"{step.rate:g}", "-m", str(step.calls),
        "-l", str(limit), "-i", "127.0.0.1", "-p", str(free_udp_port()),
        "-mp", str(system.caller_media_port), "-trace_stat", "-stf", str(stats_file), "-fd", "1",
        "-timeout", f"{duration_limit}s", "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(workdir / f"callers-{system.name}-errors.log"),
        system.sip_target, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        cwd=workdir)
    probes = asyncio.create_task(_probes(system, workdir, step))
    try:
        await asyncio.wait_for(callers.wait(), duration_limit + 30)
    except TimeoutError:
        result.errors.append("the callers' SIPp did not finish in time")
    finally:  # also when the benchmark is interrupted: no SIPp is left behind
        if callers.returncode is None:
            callers.kill()
            await callers.wait()
    result.seconds = round(time.monotonic() - started, 1)
    result.first_audio_ms = [ms for ms in await probes if ms is not None]
    await asyncio.sleep(2.5)  # SIPp writes its statistics every 1 s, the controller every 2 s

    after = cpu_of(pids)
    result.cpu_seconds = {name: round(after[name] - cpu_before[name], 2)
                          for name in after if name in cpu_before}
    if system.reactions:
        now = await system.reactions()
        result.reactions = {ms: now[ms] - reactions_before.get(ms, 0) for ms in now
                            if now[ms] > reactions_before.get(ms, 0)}
    rows = sipp_stats(stats_file)
    if rows:
        last = rows[-1]
        result.calls = _count(last, "TotalCallCreated")
        result.successful = _count(last, "SuccessfulCall(C)")
        result.failed = result.calls - result.successful  # failed, or cut off by the limit
        result.peak_concurrent = max(_count(row, "CurrentCall") for row in rows)
        # SIPp's cumulative call rate once the last call was placed: the rate achieved.
        placed = [row for row in rows if _count(row, "TotalCallCreated") >= step.calls] or rows
        result.calls_per_second = round(float(placed[0].get("CallRate(C)") or 0), 1)
    else:
        result.errors.append("the callers' SIPp wrote no statistics")
    result.talked = phones.finished_calls() - talked_before
    if callers.returncode not in (0, 1):  # 1: some calls failed, counted above
        result.errors.append(f"the callers' SIPp exited with {callers.returncode}")
    return result


async def _probes(system: System, workdir: Path, step: Step) -> list[float | None]:
    """A few probe calls spread over the step, while it is at its height."""
    ramp_seconds = CALL_SECONDS
    spacing = max(1.0, (step.calls / step.rate - ramp_seconds) / PROBES_PER_STEP)
    await asyncio.sleep(ramp_seconds)
    times = []
    for _ in range(PROBES_PER_STEP):
        try:
            times.append(await probe(system, workdir))
        except Exception:  # a probe that fails is a missing figure, not a failed benchmark
            times.append(None)
        await asyncio.sleep(spacing)
    return times


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Median and 95th percentile (ms), the way the server's own figures count them."""
    if not values:
        return {"p50": None, "p95": None}
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1)}


def summary(values: list[float]) -> dict[str, Any]:
    return {**percentiles(values), "n": len(values)}
