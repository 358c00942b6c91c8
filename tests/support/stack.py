"""Starting and stopping a whole server (`ivr run`) in a folder of its own, with its own
ports and settings: the tests' stacks and the benchmark's."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from ivr.cluster.layout import cluster_settings, shared_env
from ivr.secrets import load_settings
from ivr.settings import Settings

PROJECT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    settings: Settings
    process: subprocess.Popen[bytes]
    log_path: Path
    admin_password: str
    workdir: Path
    env: dict[str, str]  # the stack's environment: `ivr` commands against it use it

    @property
    def sip_target(self) -> str:
        return f"127.0.0.1:{self.settings.sip_port}"

    def pid(self, service: str) -> int:
        return int((self.settings.data_path / "run" / f"{service}.pid").read_text())

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def stack_env(base: Path, ports: dict[str, str]) -> dict[str, str]:
    """The environment of a test stack in ``base``: its own data, dialplans and prompts."""
    # The tests edit and publish dialplans: they work on a copy of the shipped ones.
    shutil.copytree(PROJECT / "dialplans", base / "dialplans")
    shutil.copytree(PROJECT / "audio_prompts", base / "audio_prompts")
    return {**ports, "IVR_DATA_DIR": str(base / "data"),
            "IVR_ADMIN_PASSWORD": secrets.token_urlsafe(12), "IVR_PROJECT_DIR": str(PROJECT),
            "IVR_DIALPLANS_DIR": str(base / "dialplans"),
            "IVR_PROMPTS_DIR": str(base / "audio_prompts")}


def start_stack(base: Path, env: dict[str, str], verb: str = "run") -> Server:
    """``ivr run`` (or ``ivr cluster``) with this environment, once it is healthy."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        settings = load_settings()
        if verb == "cluster":
            # `ivr` commands of the tests act on the cluster, as its own processes do.
            settings = cluster_settings(settings)
            env = {**env, **shared_env(settings)}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    log_path = base / "stack.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "ivr", verb], cwd=PROJECT,
                                   stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = Server(settings, process, log_path, env["IVR_ADMIN_PASSWORD"], base / "work", env)
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"ivr {verb} exited early:\n{server.log_tail()}")
        try:
            if httpx.get(f"{settings.api_base_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_stack(server, print_log=False)
            raise RuntimeError(f"the server did not become healthy:\n{server.log_tail()}")
        time.sleep(0.5)


def stop_stack(server: Server, print_log: bool) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        server.process.kill()
    if print_log:
        print(f"\n--- end of the server's log ({server.log_path}) ---\n"
              f"{server.log_tail(150)}")


@contextlib.asynccontextmanager
async def admin_client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.settings.api_base_url, timeout=10) as client:
        response = await client.post("/api/auth/token", data={
            "username": "admin", "password": server.admin_password})
        response.raise_for_status()
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        yield client


def open_to_postgres(folder: Path) -> None:
    """PostgreSQL runs as ``postgres``: it must pass through pytest's private folders."""
    base = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()).resolve()
    for parent in [folder, *folder.parents]:
        if parent == base or base not in parent.parents:
            break
        parent.chmod(stat.S_IMODE(parent.stat().st_mode) | 0o001)
