"""``ivr cluster``: a whole cluster on one machine, in the foreground, as one command.

The edge (Kamailio) on the SIP port, two (``IVR_CLUSTER_NODES``) Asterisk nodes behind it, each
with its controller, one API, and the shared state: Redis and SQL. Every child is supervised as
in ``ivr run`` (restarted when it dies, stopped in reverse order), so that killing a node's
Asterisk shows what the cluster does about it: the edge stops sending it calls within a probe,
the other node's calls go on, and the supervisor brings the node back.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from functools import partial
from pathlib import Path

from sqlalchemy import make_url

from ivr.cluster import edge
from ivr.cluster.layout import (
    Node,
    nodes,
    own_postgres_url,
    own_sentinels,
    redis_ports,
    shared_env,
)
from ivr.cluster.postgres import postgres_command, postgres_ready, prepare_postgres
from ivr.cluster.redis_ha import redis_ha_services
from ivr.pbx import asterisk
from ivr.redis_client import connect_redis
from ivr.secrets import postgres_password
from ivr.settings import Settings
from ivr.stack import (
    Service,
    Stack,
    api_ready,
    asterisk_ready,
    controller_ready,
    publish_dialplan,
)

log = logging.getLogger("ivr.cluster")


def edge_config(settings: Settings) -> edge.EdgeConfig:
    """The edge of the cluster these settings describe: on sip_port, in front of ``nodes``."""
    if not settings.sql_url.startswith("postgresql"):
        raise edge.EdgeSetupError(f"IVR_DATABASE_URL: the cluster keeps its records in "
                                  f"PostgreSQL, not in {settings.sql_url.split(':')[0]}")
    return edge.EdgeConfig(
        bind=settings.sip_bind, port=settings.sip_port, rpc_port=settings.edge_rpc_port,
        run_dir=settings.data_path / "edge",
        nodes=[edge.EdgeNode(node.node_id, node.sip_address) for node in nodes(settings)],
        trusted_networks=[item.strip() for item in settings.trunk_match.split(",")
                          if item.strip()],
        db_url=_kamailio_db_url(settings.sql_url),
        probe_seconds=settings.node_probe_seconds, node_reply_ms=settings.node_reply_ms)


async def drained_nodes(settings: Settings) -> set[str]:
    """The nodes an operator drained (kept in Redis, so that they stay drained)."""
    redis = connect_redis(settings)
    try:
        return {str(node_id) for node_id in await redis.smembers(edge.DRAINED_KEY)}
    finally:
        await redis.aclose()


def render_cluster_files(settings: Settings, config: edge.EdgeConfig, drained: set[str]) -> None:
    """Every node's Asterisk configuration and the edge's into the data folder; the edge's is
    checked with ``kamailio -c``, so that a bad setting stops here, before anything starts."""
    for node in nodes(settings):
        asterisk.render_config(node.settings)
    edge.render(config, drained)
    edge.check(config)


async def prepare_cluster(settings: Settings) -> None:
    """``ivr --cluster prepare``: the cluster's files rendered and the dialplan published (Redis
    and SQL must be up), for a cluster whose parts something else starts (docker/compose.yaml
    runs Kamailio and each node's Asterisk on what this renders)."""
    render_cluster_files(settings, edge_config(settings), await drained_nodes(settings))
    await publish_dialplan(settings)


class ClusterStack(Stack):
    def __init__(self, settings: Settings) -> None:
        self.edge = edge_config(settings)  # refuses a cluster it cannot start, before anything
        super().__init__(settings)
        self.nodes: list[Node] = nodes(settings)
        # What the cluster starts itself (cluster_settings names it), and what it was given.
        self.owns_postgres = settings.database_url == own_postgres_url(settings)
        self.owns_redis = settings.redis_sentinels == own_sentinels(settings)
        self.shared_env = shared_env(settings)

    def prepare(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.owns_postgres:
            prepare_postgres(self.postgres_dir, self.settings.postgres_port,
                             postgres_password(self.settings))
        render_cluster_files(self.settings, self.edge, drained=set())
        if self.settings.uses_asterisk_root:
            # One mount of the cluster's data folder serves every node (same paths inside).
            self.root = asterisk.RootFolder(self.settings.asterisk_root_path,
                                            self.settings.data_path)
            self.root.mount()

    def _build_services(self) -> None:
        settings = self.settings
        python = sys.executable
        if self.owns_postgres:
            self.services.append(Service(
                "postgres", postgres_command(self.postgres_dir, settings.postgres_port),
                partial(postgres_ready, settings.sql_url),
                # SIGINT: PostgreSQL's fast shutdown; SIGTERM would wait for every client.
                stop_signal=signal.SIGINT))
        if self.owns_redis:
            ports = redis_ports(settings)
            self.services += redis_ha_services(
                settings.data_path / "redis", ports.primary, ports.replica, ports.sentinels,
                settings.redis_master_name, server_binary=settings.redis_server_binary)
        for node in self.nodes:
            env = {**self.shared_env, **node.env}
            self.services.append(Service(
                f"asterisk-{node.node_id}", asterisk.command(node.settings, "-f"),
                partial(asterisk_ready, node.settings), env=env))
            for number, app in enumerate(node.settings.stasis_apps, start=1):
                suffix = "" if len(node.settings.stasis_apps) == 1 else f"-{number}"
                self.services.append(Service(
                    f"controller-{node.node_id}{suffix}", [python, "-m", "ivr", "controller"],
                    controller_ready(node.settings, app),
                    env={**env, "IVR_CONTROLLER_NUMBER": str(number)}))
        self.services.append(Service("api", [python, "-m", "ivr", "api"],
                                     partial(api_ready, settings), env=self.shared_env))
        self.services.append(Service("edge", edge.command(self.edge), self._edge_ready,
                                     env=self.shared_env, before_start=self._render_edge))

    @property
    def postgres_dir(self) -> Path:
        return self.settings.data_path / "postgres"

    async def _render_edge(self) -> None:
        """At every start of the edge: drained nodes stay drained across its restarts."""
        edge.render(self.edge, await self.drained())

    async def drained(self) -> set[str]:
        return await drained_nodes(self.settings)

    async def _edge_ready(self) -> bool:
        try:
            states = await edge.node_states(self.edge.rpc_port)
        except edge.EdgeRpcError:
            return False
        return any(state.state == "up" for state in states)

    async def start(self) -> None:
        self.prepare()
        self._build_services()
        for node in self.nodes:
            self._watchers.append(asyncio.create_task(
                self._tail_asterisk_log(node.settings, f"asterisk-{node.node_id}")))
        for service in self.services:
            if service.name == f"asterisk-{self.nodes[0].node_id}":
                await publish_dialplan(self.settings)  # Redis and SQL are up
            await self._spawn(service)
        for service in self.services:
            self._watchers.append(asyncio.create_task(self._watch(service)))
        self._banner()

    def _banner(self) -> None:
        s = self.settings
        lines = [
            "the 120 IVR cluster is up:",
            f"  SIP edge (Kamailio, UDP)  {s.sip_bind}:{s.sip_port}   carrier from "
            f"{s.trunk_match}; JSON-RPC 127.0.0.1:{s.edge_rpc_port}",
        ]
        for node in self.nodes:
            n = node.settings
            lines.append(f"  {node.node_id} (Asterisk)        SIP 127.0.0.1:{n.sip_port}   "
                         f"ARI {n.ari_base_url}   RTP {n.rtp_start}-{n.rtp_end}")
        lines += [
            f"  API                       {s.api_base_url}",
            f"  Redis                     "
            f"{'Sentinels ' + s.redis_sentinels if s.redis_sentinels else s.redis_dsn}",
            f"  SQL                       {s.sql_url.split('@')[-1]}",
            f"  data                      {s.data_path}",
            "  nodes: ivr node list | drain NODE | undrain NODE   (Ctrl-C stops everything)",
        ]
        for line in lines:
            log.info("%s", line)


def _kamailio_db_url(sql_url: str) -> str:
    """The cluster's database as Kamailio's db_postgres reaches it."""
    url = make_url(sql_url)
    return (f"postgres://{url.username}:{url.password}@{url.host or '127.0.0.1'}:"
            f"{url.port or 5432}/{url.database}")
