"""Redis for the cluster: one primary, one asynchronous replica and three Sentinels on loopback.

Clients find the primary through the Sentinels (``ivr.redis_client.connect_redis`` with
``IVR_REDIS_SENTINELS``). When the primary dies, two of the three Sentinels agree it is down
after ``DOWN_AFTER_MS``, one of them promotes the replica, and clients follow.

The trap is a restart. Each Redis node runs from a config file that is written again at every
start (``python -m ivr.cluster.redis_ha``, which then becomes ``redis-server``): its role is
the one the Sentinels name *now*, not the one it was started with. A killed old primary that
the supervisor starts again after a failover would otherwise come back as a second primary
with its stale data (its file still says so), and the Sentinels leave a replica that claims to
be a primary alone for 8 s and more before they turn it. Only when no Sentinel answers (the
very first start) does the node keep the role last written in its file.

Sentinels rewrite their own config file (the current primary, the replicas and the other
Sentinels they learnt, the epoch), so it is written only once and kept in the data folder.
They are started before the nodes, so that a node starting has someone to ask.

No password: everything binds 127.0.0.1 only (the cluster runs on one machine).

What the asynchronous replica may lose is measured by ``measure_failover``; ``replicated`` is
a barrier a writer can wait on (WAIT) so that what it wrote is on the replica too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

if TYPE_CHECKING:
    from ivr.stack import Service

HOST = "127.0.0.1"
QUORUM = 2  # of the three Sentinels must agree the primary is down before a failover
DOWN_AFTER_MS = 1000  # no valid reply to PING for this long: down (in a Sentinel's view)
FAILOVER_TIMEOUT_MS = 3000  # a failover not done by then is abandoned, and tried again later
ASK_TIMEOUT = 1.0  # seconds a starting node waits for each Sentinel's answer
BARRIER_KEY = "ivr:replicated"

Address = tuple[str, int]


# --- The services the supervisor starts ----------------------------------------------------------


def node_dir(data_dir: Path, port: int) -> Path:
    return data_dir / f"redis-{port}"


def sentinel_dir(data_dir: Path, port: int) -> Path:
    return data_dir / f"sentinel-{port}"


def redis_ha_services(data_dir: Path, primary_port: int, replica_port: int,
                      sentinel_ports: list[int], master_name: str,
                      server_binary: str = "redis-server",
                      sentinel_binary: str = "redis-sentinel") -> list[Service]:
    """The Sentinels, then the two nodes; ``primary_port`` is the primary at the first start."""
    from ivr.stack import Service  # here: the node launcher imports this module, and fast

    services = []
    for port in sentinel_ports:
        folder = sentinel_dir(data_dir, port)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "sentinel.conf"
        if not config.exists():  # Sentinel's own rewrites of it are what it knows: keep them
            config.write_text(sentinel_config(port, folder, master_name, primary_port))
        services.append(Service(f"sentinel-{port}", [sentinel_binary, str(config)],
                                pinged(port)))
    sentinels = ",".join(str(port) for port in sentinel_ports)
    for port, first_primary in ((primary_port, None), (replica_port, primary_port)):
        argv = [sys.executable, "-m", "ivr.cluster.redis_ha", "--port", str(port),
                "--dir", str(node_dir(data_dir, port)), "--sentinels", sentinels,
                "--master-name", master_name, "--server", server_binary]
        if first_primary is not None:
            argv += ["--first-replica-of", str(first_primary)]
        services.append(Service(f"redis-{port}", argv, pinged(port)))
    return services


def sentinel_config(port: int, folder: Path, master_name: str, primary_port: int) -> str:
    return "\n".join([
        f"port {port}",
        f"bind {HOST}",
        "daemonize no",
        'logfile ""',
        f"dir {folder}",
        f"sentinel monitor {master_name} {HOST} {primary_port} {QUORUM}",
        f"sentinel down-after-milliseconds {master_name} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {master_name} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {master_name} 1",
        "",
    ])


def node_config(port: int, folder: Path, replica_of: Address | None) -> str:
    lines = [
        "# Written at every start by ivr.cluster.redis_ha: the role is the one Sentinel names.",
        f"port {port}",
        f"bind {HOST}",
        "daemonize no",
        'logfile ""',
        f"dir {folder}",
        "appendonly yes",
        'save ""',
        # One replica: a full sync need not wait 5 s for others to join it.
        "repl-diskless-sync-delay 0",
    ]
    if replica_of is not None:
        lines.append(f"replicaof {replica_of[0]} {replica_of[1]}")
    return "\n".join(lines) + "\n"


def replica_of_in(config: Path) -> Address | None:
    """The primary a node's config file names (Sentinel rewrites it too); None: a primary."""
    found: Address | None = None
    for line in config.read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] in ("replicaof", "slaveof"):
            found = (words[1], int(words[2]))
    return found


def pinged(port: int) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        client = Redis(host=HOST, port=port, socket_timeout=1.0, socket_connect_timeout=1.0,
                       retry=Retry(NoBackoff(), 0))
        try:
            return bool(await client.ping())
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()

    return ready


# --- A node's start: the role Sentinel names ------------------------------------------------------


def primary_named_by_sentinels(sentinel_ports: list[int], master_name: str,
                               wait: float = 2 * FAILOVER_TIMEOUT_MS / 1000) -> Address | None:
    """The primary the Sentinels name, the newest view (highest epoch) among those answering;
    None if none answers. While a failover is in progress, wait for its outcome (up to
    ``wait`` seconds): starting as the old primary meanwhile would make two."""
    deadline = time.monotonic() + wait
    while True:
        views = []
        for port in sentinel_ports:
            client = redis.Redis(host=HOST, port=port, socket_timeout=ASK_TIMEOUT,
                                 socket_connect_timeout=ASK_TIMEOUT, decode_responses=True,
                                 retry=SyncRetry(NoBackoff(), 0))
            try:
                views.append(cast(dict[str, Any], client.sentinel_master(master_name)))
            except RedisError:
                continue  # down, or it does not know the name: ask the others
            finally:
                client.close()
        if not views:
            return None
        moving = any("failover_in_progress" in view["flags"] for view in views)
        if not moving or time.monotonic() > deadline:
            newest = max(views, key=lambda view: int(view["config-epoch"]))
            return str(newest["ip"]), int(newest["port"])
        time.sleep(0.2)


def role_at_start(port: int, config: Path, sentinel_ports: list[int], master_name: str,
                  first_replica_of: int | None) -> Address | None:
    """The primary a node starting now replicates; None: it is the primary."""
    primary = primary_named_by_sentinels(sentinel_ports, master_name)
    if primary is not None:
        return None if primary == (HOST, port) else primary
    if config.exists():  # nobody to ask: the role last written (by this, or by Sentinel)
        return replica_of_in(config)
    return None if first_replica_of is None else (HOST, first_replica_of)


def start_node(port: int, folder: Path, sentinel_ports: list[int], master_name: str,
               first_replica_of: int | None, server: str) -> NoReturn:
    """Write the node's config with the role of now, and become its redis-server."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "redis.conf"
    replica_of = role_at_start(port, config, sentinel_ports, master_name, first_replica_of)
    config.write_text(node_config(port, folder, replica_of))
    role = "primary" if replica_of is None else f"replica of {replica_of[0]}:{replica_of[1]}"
    print(f"redis {port}: starting as {role}", flush=True)
    # The same process becomes redis-server: the supervisor's SIGTERM reaches Redis itself.
    os.execvp(server, [server, str(config)])


# --- Replication: a barrier, and what a failover loses --------------------------------------------


async def replicated(redis_client: Redis, replicas: int = 1, timeout_ms: int = 1000) -> int:
    """How many replicas have every write the primary took so far, from any client.

    WAIT counts acknowledgements of the last write of *its own connection*; a pooled client
    may send it on another connection than the writes it should cover. So a marker is written
    first on the same connection: the replication stream is in order, and a replica that has
    the marker has everything the primary executed before it."""
    async with redis_client.pipeline(transaction=False) as pipe:
        pipe.incr(BARRIER_KEY)
        pipe.wait(replicas, timeout_ms)
        _, acknowledged = await pipe.execute()
    return int(acknowledged)


@dataclass(frozen=True)
class FailoverFigures:
    # From the failure to the first write acknowledged after it: by the new primary if the old
    # one was killed (by the old one, so about 0, if it runs on).
    failover_seconds: float
    acknowledged: int  # writes the clients were told succeeded
    lost: int  # of those, missing on the new primary (still on the way to the replica)
    failed: int  # writes that raised (the clients were told: not counted as lost)
    duplicated: int  # applied twice (a retry of a write whose reply was lost)
    writes_per_second: float  # before the kill

    def __str__(self) -> str:
        return (f"{self.failover_seconds:.2f} s from the failure to the first write "
                f"acknowledged after it; {self.lost} of {self.acknowledged} acknowledged "
                f"writes lost (at {self.writes_per_second:.0f} writes/s: "
                f"{self.lost / max(self.writes_per_second, 1.0) * 1000:.1f} ms of them), "
                f"{self.failed} failed, {self.duplicated} applied twice")


async def measure_failover(redis_client: Redis, fail: Callable[[], None], writers: int = 4,
                           warm_up: float = 0.5, after: float = 0.5, timeout: float = 60.0,
                           settled: Callable[[], Awaitable[bool]] | None = None,
                           key: str = "ivr:failover-probe") -> FailoverFigures:
    """Writers append numbers as fast as they can; ``fail`` makes the primary fail: kills it
    (and returns when it is gone, e.g. ``process.kill(); process.wait()``), or has Sentinel
    fail over while it runs on. Once a write succeeds after that, and ``settled`` holds (for a
    primary that runs on: it has been turned into a replica), compare what the primary has
    with what was acknowledged."""
    await redis_client.delete(key)
    acknowledged: set[int] = set()
    failed = 0
    failed_at: float | None = None
    recovered_at: float | None = None
    recovered = asyncio.Event()
    stop = asyncio.Event()

    async def writer(number: int) -> None:
        nonlocal failed, recovered_at
        sequence = 0
        while not stop.is_set():
            value = sequence * writers + number
            sequence += 1
            started = time.monotonic()
            try:
                await redis_client.rpush(key, value)
            except (RedisConnectionError, RedisTimeoutError):
                failed += 1
                continue
            acknowledged.add(value)
            if failed_at is not None and started > failed_at and recovered_at is None:
                recovered_at = time.monotonic()
                recovered.set()

    began = time.monotonic()
    tasks = [asyncio.create_task(writer(number)) for number in range(writers)]
    try:
        await asyncio.sleep(warm_up)
        rate = len(acknowledged) / (time.monotonic() - began)
        fail()  # synchronous: no write starts between the failure and the time taken after it
        failed_at = time.monotonic()
        await asyncio.wait_for(recovered.wait(), timeout)
        while settled is not None and not await settled():
            if time.monotonic() - failed_at > timeout:
                raise TimeoutError(f"not settled {timeout} s after the failure")
            await asyncio.sleep(0.1)
        await asyncio.sleep(after)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    stored = [int(value) for value in await redis_client.lrange(key, 0, -1)]
    await redis_client.delete(key)
    assert failed_at is not None and recovered_at is not None
    return FailoverFigures(
        failover_seconds=recovered_at - failed_at,
        acknowledged=len(acknowledged),
        lost=len(acknowledged - set(stored)),
        failed=failed,
        duplicated=len(stored) - len(set(stored)),
        writes_per_second=rate)


# --- The node launcher ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ivr.cluster.redis_ha",
        description="Start a Redis node of the cluster in the role the Sentinels name.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--sentinels", required=True, help="their ports, comma-separated")
    parser.add_argument("--master-name", required=True)
    parser.add_argument("--first-replica-of", type=int, default=None,
                        help="the primary's port, if this node starts as its replica the "
                             "very first time (no Sentinel answers, no config file yet)")
    parser.add_argument("--server", default="redis-server")
    args = parser.parse_args(argv)
    start_node(args.port, args.dir, [int(port) for port in args.sentinels.split(",")],
               args.master_name, args.first_replica_of, args.server)


if __name__ == "__main__":
    main()
