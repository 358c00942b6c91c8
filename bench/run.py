"""`make bench`: the product and the baseline driven by the same SIPp calls, one after the other
on this machine, then the callbot and the routing core alone; one table, and the same figures
in bench/results.json.

Bounded: every step has a call count and a time limit, the ramp stops at the first step with
a failed call, and every process started here is stopped at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.baseline import start_baseline
from bench.callbot import bench_callbot
from bench.load import (
    AGENT_PORT,
    AGENTS_PER_CALL,
    Step,
    StepResult,
    System,
    agent_phones,
    run_step,
    step_for,
    summary,
)
from bench.register import register_agents
from bench.routing import bench_routing
from bench.stacks import CACHE, start_product, stop_product
from ivr.acd.agents import open_agents
from ivr.ari import AriClient
from ivr.controller.reaction import percentile, reaction_histogram
from ivr.db import create_engine, sessionmaker
from ivr.dialplan.versions import DialplanVersions
from ivr.redis_client import connect_redis
from tests.support.stack import Server

RESULTS = Path(__file__).resolve().parent / "results.json"
CALLBOT_RESULTS = Path(__file__).resolve().parent / "callbot-results.json"
GOAL_CONCURRENT = 300  # the figures compared between product and baseline are of this step
REACTION_AT = 200  # the controller's reaction is read at this step


def steps(quick: bool) -> list[Step]:
    if quick:
        return [step_for(60, hold_seconds=10)]
    return [step_for(concurrent, hold_seconds=20) for concurrent in (100, 200, 300, 400, 500)]


def agent_names(count: int) -> list[str]:
    return [f"bench-agent-{number:03d}" for number in range(1, count + 1)]


# --- The product --------------------------------------------------------------------------------


async def product_agents(server: Server, names: list[str], workdir: Path,
                         contact_port: int = AGENT_PORT) -> dict[str, str]:
    """The agents as an admin makes them, their phones registered (to the agents' SIPp on
    ``contact_port``) and ready; returns their SIP passwords. Their contact is the SIPp that
    answers for all of them, not the address the REGISTER came from, so the endpoints do not
    rewrite it. A cluster's agents register to its edge (its SIP target), which keeps the
    contact as sent."""
    async with open_agents(server.settings) as agents:
        acd, ari = agents.acd, agents.ari
        passwords = {}
        for name in names:
            made = await agents.create(name, name, {"general": 3}, ["ko"])
            passwords[name] = made.sip_password
        # Each controller sets a new agent's account up again when it hears of it, in its own
        # time, rewrite_contact included: an agent registered while that was on registers
        # again, until every contact was taken with the bench's setting.
        unsure = [] if server.settings.edge_address else names
        deadline = time.monotonic() + 60
        while True:
            for name in unsure:
                await ari.request("PUT", f"{ENDPOINTS}/{name}", body={"fields": [
                    {"attribute": "rewrite_contact", "value": "no"}]})
            await register(server, {name: passwords[name] for name in unsure or names},
                           contact_port)
            unsure = [name for name in unsure if await rewrites_contact(ari, name)]
            if not unsure:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(unsure)} agents' contacts rewritten, e.g. {unsure[0]}")
            print(f"  {len(unsure)} agents' contacts maybe rewritten: again", flush=True)
            await asyncio.sleep(2)
        deadline = time.monotonic() + 60
        for name in names:
            while (await acd.agent(name)).get("registered") != "1":
                if time.monotonic() > deadline:
                    endpoint = await ari.request("GET", f"/endpoints/PJSIP/{name}")
                    raise RuntimeError(f"{name}'s registration not seen by the controller "
                                       f"(Asterisk: {endpoint.get('state')})")
                await asyncio.sleep(0.2)
            await acd.log_in(name)
    return passwords


ENDPOINTS = "/asterisk/config/dynamic/res_pjsip/endpoint"


async def rewrites_contact(ari: AriClient, name: str) -> bool:
    fields = await ari.request("GET", f"{ENDPOINTS}/{name}")
    return any(field["attribute"] == "rewrite_contact" and field["value"] in ("true", "yes")
               for field in fields)


async def register(server: Server, passwords: dict[str, str], contact_port: int) -> None:
    failed = await register_agents(server.sip_target, passwords, contact_port)
    for _ in range(3):  # a busy Asterisk drops some of a burst of REGISTERs: again, later
        if not failed:
            return
        print(f"  {len(failed)} agents not registered yet: again", flush=True)
        await asyncio.sleep(2)
        failed = await register_agents(server.sip_target,
                                       {name: passwords[name] for name in failed},
                                       contact_port, at_once=10)
    if failed:
        raise RuntimeError(f"{len(failed)} agents not registered, e.g. {failed[0]}")


async def menu_audio(server: Server) -> dict[str, Path]:
    """The product's greeting and main menu for 120, for the baseline to play the same."""
    engine = create_engine(server.settings.sql_url)
    redis = connect_redis(server.settings)
    try:
        plan = await DialplanVersions(sessionmaker(engine), redis).live()
    finally:
        await redis.aclose()
        await engine.dispose()
    return {name: Path(plan.media(name, "ko", "120").removeprefix("sound:") + ".wav")
            for name in ("greeting", "main_menu")}


def product_system(server: Server) -> System:
    def pids() -> dict[str, int]:
        run = server.settings.data_path / "run"
        return {path.stem: int(path.read_text()) for path in run.glob("*.pid")}

    async def reactions() -> dict[int, int]:
        redis = connect_redis(server.settings)
        try:
            return await reaction_histogram(redis)
        finally:
            await redis.aclose()

    return System("product", server.sip_target, pids, reactions)


# --- Running both -------------------------------------------------------------------------------


async def ramp(system: System, plan: list[Step], workdir: Path,
               repeat: Step | None) -> dict[str, Any]:
    """The steps in order until one has a failed call; then ``repeat`` again, for spread."""
    results: list[StepResult] = []
    repeats: list[StepResult] = []
    async with agent_phones(workdir) as phones:
        for step in plan:
            result = await run_step(system, step, phones, workdir)
            report_step(system.name, result)
            results.append(result)
            if not result.ok:
                break
            await asyncio.sleep(3)  # the last agents' wrap-up
        if repeat is not None and any(r.ok and r.step == repeat for r in results):
            for _ in range(2):
                result = await run_step(system, repeat, phones, workdir)
                report_step(f"{system.name} (again)", result)
                repeats.append(result)
                await asyncio.sleep(3)
    return figures(results, repeats)


def report_step(name: str, result: StepResult) -> None:
    reaction = (f", reaction p99 {percentile(result.reactions, 0.99)} ms"
                if result.reactions else "")
    print(f"  {name:<18} {result.step.name:>12}: {result.successful}/{result.calls} ok, "
          f"{result.failed} failed, peak {result.peak_concurrent} up, "
          f"{result.calls_per_second} calls/s, CPU {result.cpu_ms_per_call()} ms/call"
          f"{reaction}{'; ' + '; '.join(result.errors) if result.errors else ''}", flush=True)


def step_figures(result: StepResult) -> dict[str, Any]:
    cpu = result.cpu_ms_per_call()
    return {
        "concurrent_wanted": result.step.concurrent, "rate_wanted": result.step.rate,
        "calls": result.calls, "successful": result.successful, "failed": result.failed,
        "agents_finished": result.talked, "ok": result.ok, "seconds": result.seconds,
        "peak_concurrent": result.peak_concurrent, "calls_per_second": result.calls_per_second,
        "cpu_ms_per_call": {**cpu, "total": round(sum(cpu.values()), 1)},
        "reaction_ms": {"p50": percentile(result.reactions, 0.5),
                        "p99": percentile(result.reactions, 0.99),
                        "events": sum(result.reactions.values())} if result.reactions else None,
        "first_menu_audio_ms": summary(result.first_audio_ms), "errors": result.errors,
    }


def figures(results: list[StepResult], repeats: list[StepResult]) -> dict[str, Any]:
    passed = [r for r in results if r.ok]
    best = max(passed, key=lambda r: r.peak_concurrent, default=None)
    return {
        "max_concurrent_no_failure": best.peak_concurrent if best else 0,
        "calls_per_second": max((r.calls_per_second for r in passed), default=0.0),
        "failed_calls": sum(r.failed for r in results + repeats),
        "steps": [step_figures(r) for r in results],
        "repeats": [step_figures(r) for r in repeats],
    }


def at_step(system: dict[str, Any], concurrent: int) -> dict[str, Any] | None:
    """A system's figures at the step of ``concurrent`` calls (or its highest passed one)."""
    passed = [s for s in system["steps"] if s["ok"]]
    exact = [s for s in passed if s["concurrent_wanted"] == concurrent]
    found: dict[str, Any] | None = (exact or passed[-1:] or [None])[0]
    return found


def spread(system: dict[str, Any], concurrent: int, figure: str) -> list[float]:
    """Total CPU ms per call at one step in every run of it: the ramp's and the repeats'."""
    runs = [s for s in system["steps"] + system["repeats"]
            if s["ok"] and s["concurrent_wanted"] == concurrent]
    return [s["cpu_ms_per_call"][figure] for s in runs if figure in s["cpu_ms_per_call"]]


def compare(product: dict[str, Any], baseline: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The ratios product/baseline, at the step both passed nearest the goal."""
    goal = 60 if quick else GOAL_CONCURRENT
    ours, theirs = at_step(product, goal), at_step(baseline, goal)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    result: dict[str, Any] = {
        "max_concurrent_no_failure": ratio(product["max_concurrent_no_failure"],
                                           baseline["max_concurrent_no_failure"]),
        "calls_per_second": ratio(product["calls_per_second"], baseline["calls_per_second"]),
    }
    if ours and theirs:
        result["at_concurrent"] = ours["concurrent_wanted"]
        result["cpu_per_call_total"] = ratio(ours["cpu_ms_per_call"]["total"],
                                             theirs["cpu_ms_per_call"]["total"])
        result["cpu_per_call_asterisk"] = ratio(ours["cpu_ms_per_call"].get("asterisk"),
                                                theirs["cpu_ms_per_call"].get("asterisk"))
        result["first_menu_audio_p50"] = ratio(ours["first_menu_audio_ms"]["p50"],
                                               theirs["first_menu_audio_ms"]["p50"])
        mine, other = spread(product, goal, "total"), spread(baseline, goal, "total")
        if mine and other:
            result["cpu_per_call_total_runs"] = {
                "product_ms": mine, "baseline_ms": other,
                "ratio_of_medians": ratio(statistics.median(mine), statistics.median(other))}
    return result


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        memory_kb = int(meminfo.readline().split()[1])
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(memory_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version()}


async def bench(quick: bool) -> dict[str, Any]:
    started = time.monotonic()
    plan = steps(quick)
    repeat = None if quick else step_for(GOAL_CONCURRENT, hold_seconds=20)
    names = agent_names(int(max(step.concurrent for step in plan) * AGENTS_PER_CALL))
    workdir = CACHE / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"mode": "quick" if quick else "full",
                               "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": machine(), "agents": len(names)}

    print(f"routing core: 1,000 agents, 100 queues ({results['mode']})", flush=True)
    results["routing"] = await bench_routing(workdir / "routing", quick)

    print(f"product: starting the server, {len(names)} agents", flush=True)
    server = start_product(CACHE / "product")
    try:
        await product_agents(server, names, workdir)
        audio = await menu_audio(server)
        results["product"] = await ramp(product_system(server), plan, workdir, repeat)
        print("callbot", flush=True)
        results["callbot"] = await bench_callbot(server, quick)
    finally:
        stop_product(server)

    print("baseline: Asterisk with a dialplan menu and app_queue", flush=True)
    baseline = start_baseline(CACHE / "baseline", names, AGENT_PORT, audio)
    try:
        system = System("baseline", baseline.sip_target, baseline.pids)
        results["baseline"] = await ramp(system, plan, workdir, repeat)
    finally:
        baseline.stop()

    results["ratios"] = compare(results["product"], results["baseline"], quick)
    results["duration_s"] = round(time.monotonic() - started)
    return results


# --- The table ----------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def table(results: dict[str, Any]) -> str:
    product, baseline, ratios = results["product"], results["baseline"], results["ratios"]
    goal = ratios.get("at_concurrent", GOAL_CONCURRENT)
    ours, theirs = at_step(product, goal) or {}, at_step(baseline, goal) or {}
    reaction_step = at_step(product, REACTION_AT) or {}
    reaction = reaction_step.get("reaction_ms") or {}
    ours_cpu, theirs_cpu = ours.get("cpu_ms_per_call", {}), theirs.get("cpu_ms_per_call", {})
    controller = sum(v for k, v in ours_cpu.items() if k.startswith("controller"))
    rows = [
        ("most concurrent calls, no failed call", product["max_concurrent_no_failure"],
         baseline["max_concurrent_no_failure"], ratios.get("max_concurrent_no_failure")),
        ("new calls per second (highest passed)", product["calls_per_second"],
         baseline["calls_per_second"], ratios.get("calls_per_second")),
        ("failed calls (every step)", product["failed_calls"], baseline["failed_calls"], None),
        (f"CPU ms per call, all processes @{goal}", ours_cpu.get("total"),
         theirs_cpu.get("total"), ratios.get("cpu_per_call_total")),
        (f"CPU ms per call, Asterisk @{goal}", ours_cpu.get("asterisk"),
         theirs_cpu.get("asterisk"), ratios.get("cpu_per_call_asterisk")),
        (f"CPU ms per call, controller @{goal}", round(controller, 1), None, None),
        (f"CPU ms per call, Redis + API @{goal}",
         round(ours_cpu.get("redis", 0) + ours_cpu.get("api", 0), 1), None, None),
        (f"ARI event to action p50 / p99 ms @{reaction_step.get('concurrent_wanted')}",
         f"{_cell(reaction.get('p50'))} / {_cell(reaction.get('p99'))}", None, None),
        (f"answer to first menu audio p50 ms @{goal}",
         ours.get("first_menu_audio_ms", {}).get("p50"),
         theirs.get("first_menu_audio_ms", {}).get("p50"), ratios.get("first_menu_audio_p50")),
    ]
    lines = [f"{'figure':<44} {'product':>12} {'baseline':>12} {'ratio':>7}", "-" * 78]
    lines += [f"{name:<44} {_cell(a):>12} {_cell(b):>12} {_cell(r):>7}" for name, a, b, r in rows]
    runs = ratios.get("cpu_per_call_total_runs")
    if runs:
        lines.append(f"CPU ms per call @{goal} in each run: product {runs['product_ms']}, "
                     f"baseline {runs['baseline_ms']}")
    lines += ["", *callbot_lines(results.get("callbot", {})), *routing_lines(results["routing"])]
    lines.append(f"machine: {json.dumps(results['machine'])}; {results['duration_s']} s in all")
    return "\n".join(lines)


def callbot_lines(bot: dict[str, Any]) -> list[str]:
    lines = []
    for engine, figures in bot.get("recognition", {}).items():
        if not isinstance(figures, dict):
            continue
        if "skipped" in figures:
            lines.append(f"callbot, {engine}: skipped ({figures['skipped']})")
        else:
            error = "CER" if "cer" in figures else "WER"
            lines.append(f"callbot, {engine}: {error} {figures.get('cer', figures.get('wer'))}"
                         f" on telephone audio, {figures['cpu_seconds_per_audio_second']} CPU s"
                         f" per audio s, {figures['seconds_per_utterance_p50']} s an utterance"
                         f" (p50), {figures['worker_memory_mb']} MB")
    answer = bot.get("answer_start_ms", {})
    calls = bot.get("concurrent_calls", {})
    lines.append(f"callbot: end of speech to first answer audio p50 {_cell(answer.get('p50'))}"
                 f" ms, p95 {_cell(answer.get('p95'))} ms ({answer.get('calls', 0)} calls); "
                 f"bot calls at once before answers lag: "
                 f"{_cell(calls.get('max_concurrent_without_lag'))}")
    for language, figures in (bot.get("spoken_population") or {}).items():
        if not isinstance(figures, dict):
            continue
        error = "CER" if "cer" in figures else "WER"
        lines.append(f"callbot, spoken {language}: {figures['calls']} calls, {error} "
                     f"{figures.get('cer', figures.get('wer'))}, type right "
                     f"{_cell(figures['question_type_accuracy'])}, wrong answers "
                     f"{figures['wrong_answers_read']}, containment {figures['containment']}")
    door = bot.get("front_door") or {}
    if door:
        spoken, place = door["spoken_topics"], door["seconds_to_the_right_place"]
        intake = door["intake"]
        lines.append(f"front door: {spoken['routed_right']} of spoken topics routed right, "
                     f"{spoken['wrong_routes']} wrong routes; to the right place "
                     f"{_cell(place['by_speech_p50'])} s by speech, {_cell(place['by_keys_p50'])}"
                     f" s by keys; intake filed {intake['filed_without_an_agent']} of "
                     f"{intake['calls']}, details right {intake['details_right']} of "
                     f"{intake['details_asked']}")
    return lines


def routing_lines(routing: dict[str, Any]) -> list[str]:
    together = routing.get("concurrent", {})
    return [f"routing core ({routing['agents']} agents, {routing['queues']} queues): "
            f"{routing['decisions_per_s']} decisions/s, p99 {routing['p99_ms']} ms; "
            f"{together.get('tasks')} at once: {together.get('decisions_per_s')} decisions/s, "
            f"p99 {together.get('p99_ms')} ms"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small step: a minute or two")
    args = parser.parse_args()
    results = asyncio.run(bench(args.quick))
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    # The callbot's figures are kept in the repository, beside the code they measure.
    CALLBOT_RESULTS.write_text(json.dumps(results.get("callbot", {}), indent=2,
                                          ensure_ascii=False) + "\n")
    print()
    print(table(results))
    print(f"\nfigures in {RESULTS}")
