"""``ivr run``: the whole server in the foreground, as one command.

Starts Redis (unless ``IVR_REDIS_URL`` points at one), Asterisk, the controller and the API,
each a child process whose output is shown line by line with its name in front. A child that
dies is started again after a short pause, so the server stays up; Ctrl-C (or SIGTERM) stops
everything in reverse order and unmounts what was mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ivr.dialplan.versions import DialplanRefused, live_version_number, publish_from_files
from ivr.pbx import asterisk
from ivr.redis_client import connect_redis
from ivr.settings import Settings

log = logging.getLogger("ivr.stack")

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
Probe = Callable[[], Awaitable[bool]]


@dataclass
class Service:
    name: str
    argv: list[str]
    ready: Probe
    env: dict[str, str] = field(default_factory=dict)  # on top of the stack's own
    ready_timeout: float = 60.0
    before_start: Callable[[], Awaitable[None]] | None = None  # at every start and restart
    stop_signal: int = signal.SIGTERM
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.data_path / "run"
        self.services: list[Service] = []
        self.root: asterisk.RootFolder | None = None
        self.stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    # --- Preparing ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything that is built before the processes start (each step skips what exists)."""
        settings = self.settings
        self.run_dir.mkdir(parents=True, exist_ok=True)
        prepare_files(settings)
        if settings.uses_asterisk_root:
            self.root = asterisk.RootFolder(settings.asterisk_root_path, settings.data_path)
            self.root.mount()

    def _build_services(self) -> None:
        settings = self.settings
        python = sys.executable
        if settings.owns_redis:
            redis_dir = settings.data_path / "redis"
            redis_dir.mkdir(parents=True, exist_ok=True)
            self.services.append(Service("redis", [
                settings.redis_server_binary, "--port", str(settings.redis_port),
                "--bind", "127.0.0.1", "--dir", str(redis_dir), "--appendonly", "yes",
                "--save", "", "--daemonize", "no", "--loglevel", "warning",
            ], self._redis_ready))
        self.services.append(Service("asterisk", asterisk.command(settings, "-f"),
                                     self._asterisk_ready))
        for number, app in enumerate(settings.stasis_apps, start=1):
            # One process per Stasis app; with several, Asterisk spreads calls among them.
            name = "controller" if settings.controllers == 1 else f"controller-{number}"
            self.services.append(Service(
                name, [python, "-m", "ivr", "controller"], self._controller_ready(app),
                env={"IVR_CONTROLLER_NUMBER": str(number)}))
        self.services.append(Service("api", [python, "-m", "ivr", "api"], self._api_ready))

    # --- Readiness probes ---------------------------------------------------------------------

    async def _redis_ready(self) -> bool:
        return await redis_ready(self.settings)

    async def _asterisk_ready(self) -> bool:
        return await asterisk_ready(self.settings)

    def _controller_ready(self, app: str) -> Probe:
        return controller_ready(self.settings, app)

    async def _api_ready(self) -> bool:
        return await api_ready(self.settings)

    # --- Processes ----------------------------------------------------------------------------

    async def _spawn(self, service: Service) -> None:
        if service.before_start is not None:
            await service.before_start()
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   IVR_PROJECT_DIR=str(self.settings.project_dir), **service.env)
        service.process = await asyncio.create_subprocess_exec(
            *service.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the stack, which stops children in order
        )
        service.started_at = time.monotonic()
        (self.run_dir / f"{service.name}.pid").write_text(str(service.process.pid))
        service.tasks.append(asyncio.create_task(self._pump(service, service.process)))
        deadline = time.monotonic() + service.ready_timeout
        while not await service.ready():
            if service.process.returncode is not None:
                raise RuntimeError(f"{service.name} exited with {service.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} not ready after {service.ready_timeout} s")
            await asyncio.sleep(0.2)
        log.info("%s ready (pid %d)", service.name, service.process.pid)

    async def _pump(self, service: Service, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        width = max(len(s.name) for s in self.services)
        async for raw in process.stdout:
            line = ANSI_ESCAPE.sub("", raw.decode(errors="replace")).rstrip()
            if line:
                print(f"{service.name:<{width}} | {line}", flush=True)

    async def _tail_asterisk_log(self, settings: Settings | None = None,
                                 name: str = "asterisk") -> None:
        """Asterisk run with -f prints nothing: show its notices, warnings and errors."""
        log_file = asterisk.asterisk_dirs(settings or self.settings)["log"] / "messages.log"
        log_file.touch()
        width = max([len(s.name) for s in self.services] + [len(name)])
        with log_file.open(errors="replace") as source:
            source.seek(0, os.SEEK_END)
            while True:
                line = source.readline()
                if line:
                    print(f"{name:<{width}} | {line.rstrip()}", flush=True)
                else:
                    await asyncio.sleep(0.5)

    async def _watch(self, service: Service) -> None:
        """Start a service again whenever it dies, with a growing pause."""
        while not self.stopping:
            assert service.process is not None
            code = await _exited(service.process)
            _kill_leftovers(service.process.pid)
            if self.stopping:
                return
            if time.monotonic() - service.started_at > 60:
                service.restarts = 0  # it ran for a while: a fresh failure, not a crash loop
            service.restarts += 1
            pause = min(2 ** min(service.restarts, 4) * 0.25, 5.0)
            log.warning("%s exited with %s; starting it again in %.1f s", service.name, code,
                        pause)
            await asyncio.sleep(pause)
            if self.stopping:
                return
            try:
                await self._spawn(service)
            except RuntimeError as exc:
                log.error("%s did not come back: %s", service.name, exc)

    async def start(self) -> None:
        self.prepare()
        self._build_services()
        self._watchers.append(asyncio.create_task(self._tail_asterisk_log()))
        for service in self.services:
            if service.name == "asterisk":
                await publish_dialplan(self.settings)  # Redis is up; calls need a dialplan
            await self._spawn(service)
        for service in self.services:
            self._watchers.append(asyncio.create_task(self._watch(service)))
        self._banner()

    async def stop(self) -> None:
        self.stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        for service in reversed(self.services):
            await self._terminate(service)
        if self.root is not None:
            self.root.unmount()
        log.info("stopped")

    async def _terminate(self, service: Service) -> None:
        process = service.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(service.stop_signal)
        try:
            await asyncio.wait_for(_exited(process), timeout=10)
        except TimeoutError:
            log.warning("%s did not stop in 10 s; killing it", service.name)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await _exited(process)
        _kill_leftovers(process.pid)
        for task in service.tasks:
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / f"{service.name}.pid").unlink()

    def _banner(self) -> None:
        s = self.settings
        lines = [
            "the 120 IVR server is up:",
            f"  SIP (PJSIP, UDP)  {s.sip_bind}:{s.sip_port}   carrier trunk from {s.trunk_match}",
            f"  ARI               {s.ari_base_url}   apps {' '.join(s.stasis_apps)}, "
            f"user {s.ari_user!r}",
            f"  API               {s.api_base_url}   (/docs, /health, /metrics)",
            f"  Redis             {s.redis_dsn}",
            f"  data              {s.data_path}",
            "  place a test call: make call   (Ctrl-C stops everything)",
        ]
        for line in lines:
            log.info("%s", line)


async def _exited(process: asyncio.subprocess.Process) -> int:
    """The service's own exit code, as soon as it exits. (``process.wait()`` also waits for
    its output pipe to close, which children it left behind may hold open for ever.)"""
    # asyncio offers no event for the exit alone
    while process.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return process.returncode


def _kill_leftovers(group: int) -> None:
    """A service that died may leave children (Kamailio's workers, PostgreSQL's backends, the
    callbot's recognizers) holding its ports and files: the one started next could not bind,
    and they would answer in its place. Each service leads a process group of its own: end
    what is left of it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


# --- Readiness probes (also for the cluster's nodes, each with its own settings) ---------------


async def redis_ready(settings: Settings) -> bool:
    client = connect_redis(settings, timeout=1.0)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def _ari_get(settings: Settings, path: str) -> int:
    auth = (settings.ari_user, settings.ari_secret())
    try:
        async with httpx.AsyncClient(timeout=2, auth=auth) as http:
            response = await http.get(f"{settings.ari_base_url}/ari{path}")
            return response.status_code
    except httpx.HTTPError:
        return 0


async def asterisk_ready(settings: Settings) -> bool:
    return await _ari_get(settings, "/asterisk/ping") == 200


def controller_ready(settings: Settings, app: str) -> Probe:
    async def ready() -> bool:
        return await _ari_get(settings, f"/applications/{app}") == 200

    return ready


async def api_ready(settings: Settings) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            response = await http.get(f"{settings.api_base_url}/health")
            return response.status_code in (200, 503)
    except httpx.HTTPError:
        return False


def prepare_files(settings: Settings) -> None:
    """The files Asterisk needs: its configuration, rendered into the data folder."""
    asterisk.render_config(settings)


async def publish_dialplan(settings: Settings) -> None:
    """Publish dialplans/ at start. If it is refused, the version already live stays live."""
    try:
        published = await publish_from_files(settings, author="ivr run", note="at start")
    except DialplanRefused as refused:
        live = await live_version_number(settings)
        for problem in refused.problems:
            log.error("dialplan: %s", problem)
        if live is None:
            raise RuntimeError("the dialplan is refused and no earlier version exists") from None
        log.error("dialplan refused: version %d stays live", live)
        return
    for warning in published.warnings:
        log.warning("dialplan: %s", warning)
    log.info("dialplan version %d is live%s", published.dialplan.version,
             "" if published.created else " (unchanged)")


async def run_stack(settings: Settings, stack: Stack | None = None) -> None:
    stack = stack or Stack(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stack.start()
        await stop.wait()
        log.info("stopping")
    finally:
        await stack.stop()


def pid_of(data_dir: Path, name: str) -> int:
    """The process id of a service of a running stack (for tests and operators)."""
    return int((data_dir / "run" / f"{name}.pid").read_text())
