"""The two systems the benchmark drives, each started on loopback ports of its own and stopped
afterwards: the product (`ivr run`, as `make run` starts it) and the baseline (the same
Asterisk with a plain dialplan menu and app_queue, configured from bench/baseline)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ivr.pbx import asterisk
from ivr.settings import Settings
from tests.support.stack import PROJECT, Server, stack_env, start_stack, stop_stack

CACHE = PROJECT / ".cache" / "bench"

# Apart from the defaults (a `make run`) and the tests' ports (15000-19999).
PRODUCT_PORTS = {
    "IVR_SIP_PORT": "25060",
    "IVR_ARI_PORT": "28088",
    "IVR_API_PORT": "28000",
    "IVR_REDIS_PORT": "26379",
    "IVR_RTP_START": "40000",
    "IVR_RTP_END": "49999",
}
# What a benchmark call needs that differs from the embedded defaults: agents free again two
# seconds after a call (the baseline's wrapuptime is the same), no calls out.
PRODUCT_SETTINGS = {
    "IVR_WRAP_UP_SECONDS": "2",
    "IVR_RING_SECONDS": "10",
    "IVR_TRUNK_CONTACT": "",
    "IVR_LOG_LEVEL": "INFO",
}


def start_product(base: Path, shift: int = 0, settings: dict[str, str] | None = None,
                  verb: str = "run") -> Server:
    """`ivr run` (or ``verb`` "cluster") in ``base`` (emptied first), every port ``shift``
    higher (RTP ten times)."""
    _empty(base)
    ports = {key: str(int(value) + (shift * 10 if "_RTP_" in key else shift))
             for key, value in PRODUCT_PORTS.items()}
    env = {**os.environ, **ports, **PRODUCT_SETTINGS, **(settings or {})}
    env.update(stack_env(base, env))
    return start_stack(base, env, verb)


def stop_product(server: Server) -> None:
    stop_stack(server, print_log=False)


def _empty(base: Path) -> None:
    """A fresh folder: no agents, calls or records of an earlier run count in this one. A
    mount left by a run that was killed is undone first, so Asterisk sees the new folder."""
    settings = Settings()
    if settings.uses_asterisk_root:
        asterisk.RootFolder(settings.asterisk_root_path, base / "data").unmount()
    shutil.rmtree(base, ignore_errors=True)
    (base / "work").mkdir(parents=True)


def run_alone(name: str,
              measure: Callable[[Server, bool], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    """One part of the bench on a stack of its own (`python -m bench.<part> [--quick]`): its
    figures are printed as JSON."""
    # `kill` stops it as Ctrl-C does: the calls are hung up and the stack is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # Ports 1000 up (IVR_BENCH_SHIFT): the default ones belong to other stacks meanwhile.
    server = start_product(CACHE / f"{name}-dev",
                           shift=int(os.environ.get("IVR_BENCH_SHIFT", "1000")))
    try:
        started = time.monotonic()
        figures = asyncio.run(measure(server, "--quick" in sys.argv))
        print(json.dumps(figures, indent=2, ensure_ascii=False))
        print(f"{name} bench: {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        stop_product(server)
