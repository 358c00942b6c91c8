"""`make bench`'s own parts on a small scale, so that the benchmark measures what it says: the
product and the baseline (plain Asterisk with app_queue) carry its calls from the menu to an
agent who talks and hangs up, its agents' phones register by digest authentication, and every
figure of a step comes out."""

from __future__ import annotations

from pathlib import Path

from bench.baseline import start_baseline
from bench.load import AGENT_PORT, Step, StepResult, System, agent_phones, run_step
from bench.run import agent_names, menu_audio, product_agents, product_system
from tests.conftest import Server, run_ivr

A_FEW = Step(concurrent=3, rate=1.0, calls=3)


def carried_every_call(result: StepResult) -> None:
    assert result.ok, result
    assert result.calls == result.successful == result.talked == A_FEW.calls
    assert result.failed == 0 and result.errors == []
    assert result.peak_concurrent >= 1 and result.calls_per_second > 0
    assert result.first_audio_ms, "no probe heard the menu"


async def test_the_product_carries_the_bench_calls(server: Server, tmp_path: Path) -> None:
    names = [f"bench-test-{number}" for number in range(1, 4)]
    try:
        await product_agents(server, names, tmp_path)  # registered, or it raises
        system = product_system(server)
        async with agent_phones(tmp_path) as phones:
            result = await run_step(system, A_FEW, phones, tmp_path)
    finally:
        for name in names:
            run_ivr("agent", "remove", name)
    carried_every_call(result)
    assert {"asterisk", "controller", "redis"} <= set(result.cpu_seconds)
    assert result.cpu_seconds["controller"] > 0 and result.cpu_seconds["asterisk"] > 0
    assert sum(result.reactions.values()) >= 2 * A_FEW.calls  # answers, bridges...: timed


async def test_the_baseline_carries_the_same_calls(server: Server, tmp_path: Path) -> None:
    baseline = start_baseline(tmp_path / "baseline", agent_names(3), AGENT_PORT,
                              await menu_audio(server))
    try:
        system = System("baseline", baseline.sip_target, baseline.pids)
        async with agent_phones(tmp_path) as phones:
            result = await run_step(system, A_FEW, phones, tmp_path)
    finally:
        baseline.stop()
    carried_every_call(result)
    assert set(result.cpu_seconds) == {"asterisk"} and result.cpu_seconds["asterisk"] > 0
    assert baseline.process.poll() is not None  # stopped
