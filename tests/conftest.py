"""The whole server, started once for the test session with `ivr run`, on test ports.

Tests talk to it as its users do: SIP calls from SIPp, the HTTP API, the Asterisk CLI. Its
output goes to stack.log in the session's temporary folder (printed when a test failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ivr.db import create_engine, sessionmaker
from ivr.dialplan.model import Dialplan
from ivr.dialplan.versions import DialplanVersions
from ivr.prompts import duration_seconds
from ivr.redis_client import connect_redis
from tests.support.sip import SippCall
from tests.support.stack import (
    PROJECT,
    Server,
    admin_client,
    stack_env,
    start_stack,
    stop_stack,
)

# Ports apart from the defaults, so that the tests can run beside a `make run`; a second test
# run at the same time sets IVR_TEST_PORT_OFFSET (e.g. 100).
_OFFSET = int(os.environ.get("IVR_TEST_PORT_OFFSET", "0"))
TEST_ENV = {
    "IVR_SIP_PORT": str(15060 + _OFFSET),
    "IVR_ARI_PORT": str(18088 + _OFFSET),
    "IVR_API_PORT": str(18000 + _OFFSET),
    "IVR_REDIS_PORT": str(16379 + _OFFSET),
    "IVR_POSTGRES_PORT": str(15532 + _OFFSET),  # a cluster's (tests/test_cluster.py)
    "IVR_RTP_START": str(31000 + _OFFSET * 10),
    "IVR_RTP_END": str(31999 + _OFFSET * 10),
    "IVR_LOG_LEVEL": "INFO",
    # Short rings and wrap-ups keep the queue tests quick.
    "IVR_RING_SECONDS": "4",
    "IVR_WRAP_UP_SECONDS": "3",
    "IVR_MISSED_CALLS_PAUSE": "1",
    "IVR_QUEUE_ANNOUNCE_SECONDS": "3",
    # Calls out (callbacks) go to a SIPp "carrier" that a test starts on this port.
    "IVR_TRUNK_CONTACT": f"sip:127.0.0.1:{15070 + _OFFSET}",
}


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float = 30,
                   interval: float = 0.2, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("stack")
    os.environ.update(stack_env(base, TEST_ENV))  # `ivr` commands of the tests use it too
    server = start_stack(base, dict(os.environ))
    try:
        yield server
    finally:
        stop_stack(server, print_log=bool(request.session.testsfailed))


@contextlib.contextmanager
def another_stack(base: Path, shift: int, settings: dict[str, str],
                  print_log: Callable[[], bool], verb: str = "run") -> Iterator[Server]:
    """A stack of a test module's own, beside the session's: every port ``shift`` higher
    (RTP ten times that), with these settings on top of the tests' ones. ``verb`` "cluster"
    starts a cluster instead of one node."""
    ports = {key: str(int(value) + shift) for key, value in TEST_ENV.items()
             if key.endswith("_PORT")}
    env = {**os.environ, **TEST_ENV, **ports,
           "IVR_RTP_START": str(int(TEST_ENV["IVR_RTP_START"]) + shift * 10),
           "IVR_RTP_END": str(int(TEST_ENV["IVR_RTP_END"]) + shift * 10), **settings}
    env.update(stack_env(base, env))
    server = start_stack(base, env, verb)
    try:
        yield server
    finally:
        stop_stack(server, print_log=print_log())


@pytest.fixture(scope="session")
async def api(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An API client logged in as the first admin."""
    async with admin_client(server) as client:
        yield client


async def call_record(api: httpx.AsyncClient, caller: str, ended: bool = True,
                      timeout: float = 20) -> dict[str, Any]:
    """The call record of the call from ``caller`` (each test uses its own caller number)."""

    async def find() -> dict[str, Any] | None:
        response = await api.get("/api/calls", params={"limit": 200})
        response.raise_for_status()
        for record in response.json():
            if record["caller"] == caller and (record["ended_at"] or not ended):
                return dict(record)
        return None

    result: dict[str, Any] = await wait_for(find, timeout, what=f"the record of {caller}")
    return result


def caller_number() -> str:
    """A plainly fake caller number, different for every call of the session."""
    return "0299" + str(secrets.randbelow(10**6)).zfill(6)


async def live_dialplan(server: Server) -> Dialplan:
    """The dialplan version calls get now, as the controller reads it."""
    engine = create_engine(server.settings.sql_url)
    redis = connect_redis(server.settings)
    try:
        return await DialplanVersions(sessionmaker(engine), redis).live()
    finally:
        await redis.aclose()
        await engine.dispose()


async def prompt_seconds(server: Server, prompt_id: str, language: str, did: str = "") -> float:
    """How long a prompt of the live dialplan plays."""
    plan = await live_dialplan(server)
    media = plan.media(prompt_id, language, did)
    return duration_seconds(Path(media.removeprefix("sound:")))


async def audio_for(call: SippCall, seconds: float, timeout: float = 60) -> None:
    """Wait until the caller has received ``seconds`` of audio."""

    async def enough() -> bool:
        return call.rtp.audio_seconds >= seconds

    await wait_for(enough, timeout, 0.05, what=f"{seconds:.1f} s of audio")


async def prompt_ends(call: SippCall, quiet: float = 0.6, timeout: float = 90) -> float:
    """Wait until the server stops sending audio (its prompt ended); returns the audio heard."""

    async def silent() -> bool:
        return call.rtp.packets > 0 and call.rtp.quiet_for() >= quiet

    await wait_for(silent, timeout, 0.05, what="the prompt to end")
    return call.rtp.audio_seconds


def run_ivr(*args: str, server: Server | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `ivr` command as an admin would, against the test server's settings (or those
    of another stack)."""
    return subprocess.run([sys.executable, "-m", "ivr", *args], cwd=PROJECT, text=True,
                          capture_output=True, timeout=120,
                          env=server.env if server is not None else None)
