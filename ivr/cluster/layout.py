"""Where each part of a cluster on one machine listens, from the one settings object.

Node N (1, 2, ...) takes SIP on ``sip_port + N`` behind the edge on ``sip_port``, ARI on
``ari_port + N - 1``, and the N-th share of the RTP range; its Asterisk keeps its folders in
``asterisk-nodeN`` of the cluster's data folder. Every process of the cluster gets the same
data folder, Redis and SQL; a node's processes get its own ports and name on top.

With ``IVR_CLUSTER_NODE_ADDRESSES`` each node has a host of its own (docker/compose.yaml): the
same ports on every node, bound to every address, and only the RTP range still shared out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ivr.cluster.postgres import postgres_url
from ivr.secrets import load_settings, postgres_password
from ivr.settings import Settings


@dataclass(frozen=True)
class Node:
    node_id: str
    settings: Settings  # as the node's own processes see them
    env: dict[str, str]  # what makes a process one of this node's
    sip_host: str = "127.0.0.1"  # where the edge reaches the node (and the node sends from)

    @property
    def sip_address(self) -> str:
        return f"{self.sip_host}:{self.settings.sip_port}"


def cluster_data_path(settings: Settings) -> Path:
    """The cluster keeps its own data folder, so that `ivr run` and `ivr cluster` never mix."""
    return settings.data_path / "cluster"


def own_postgres_url(settings: Settings) -> str:
    """The URL of the PostgreSQL the cluster starts itself (its password in the data folder)."""
    return postgres_url(settings.postgres_port, postgres_password(settings))


def cluster_settings(settings: Settings) -> Settings:
    """The settings every process of the cluster shares: its data folder, its PostgreSQL
    (unless IVR_DATABASE_URL names one), and the edge where agents register. Settings with an
    edge address are a cluster's already (its processes', or a machine set up as part of one)."""
    if settings.edge_address:
        return settings
    cluster = load_settings(data_dir=cluster_data_path(settings))
    given_redis = bool(cluster.redis_url or cluster.redis_sentinels)
    return cluster.model_copy(update={
        "database_url": cluster.database_url or own_postgres_url(cluster),
        "redis_sentinels": cluster.redis_sentinels if given_redis else own_sentinels(cluster),
        "edge_address": f"127.0.0.1:{cluster.sip_port}"})


@dataclass(frozen=True)
class RedisPorts:
    """The cluster's own Redis: the primary at the first start on redis_port, its replica on
    the next port, and three Sentinels on redis_port + 20000 and the two after it (26379-26381
    by default, Sentinel's usual ports)."""

    primary: int
    replica: int
    sentinels: list[int]


def redis_ports(settings: Settings) -> RedisPorts:
    port = settings.redis_port
    return RedisPorts(port, port + 1, [port + 20000 + number for number in range(3)])


def own_sentinels(settings: Settings) -> str:
    return ",".join(f"127.0.0.1:{port}" for port in redis_ports(settings).sentinels)


def shared_env(cluster: Settings) -> dict[str, str]:
    """What makes a process one of this cluster's: its data folder, Redis, SQL and edge."""
    return {
        "IVR_DATA_DIR": str(cluster.data_path),
        **({"IVR_REDIS_SENTINELS": cluster.redis_sentinels,
            "IVR_REDIS_MASTER_NAME": cluster.redis_master_name} if cluster.redis_sentinels
           else {"IVR_REDIS_URL": cluster.redis_dsn}),
        "IVR_DATABASE_URL": cluster.database_url or cluster.sql_url,
        "IVR_EDGE_ADDRESS": cluster.edge_address,
    }


def nodes(settings: Settings) -> list[Node]:
    if settings.cluster_node_addresses:
        return _nodes_at(settings, settings.node_addresses())
    count = settings.cluster_nodes
    span = (settings.rtp_end - settings.rtp_start) // count
    result = []
    for number in range(1, count + 1):
        node_id = f"node{number}"
        rtp_start = settings.rtp_start + (number - 1) * span
        env = {
            "IVR_NODE_ID": node_id,
            "IVR_SIP_PORT": str(settings.sip_port + number),
            "IVR_ARI_PORT": str(settings.ari_port + number - 1),
            "IVR_RTP_START": str(rtp_start),
            "IVR_RTP_END": str(rtp_start + span - 1),
            "IVR_ASTERISK_DIR": f"asterisk-{node_id}",
            # A node takes calls from the edge only; the carrier talks to the edge.
            "IVR_TRUNK_MATCH": settings.sip_bind,
            "IVR_SIP_BIND": "127.0.0.1",
        }
        node_settings = settings.model_copy(update={
            "node_id": node_id, "sip_port": settings.sip_port + number,
            "ari_port": settings.ari_port + number - 1, "ari_url": None,
            "rtp_start": rtp_start, "rtp_end": rtp_start + span - 1,
            "asterisk_dir": f"asterisk-{node_id}", "trunk_match": settings.sip_bind,
            "sip_bind": "127.0.0.1"})
        result.append(Node(node_id, node_settings, env))
    return result


def _nodes_at(settings: Settings, addresses: dict[str, tuple[str, int]]) -> list[Node]:
    """Nodes each on a host of its own: SIP on its port there, ARI on ari_port, both on every
    address; calls come from the edge, whose address is the node's trunk."""
    edge_host = settings.edge_address.rpartition(":")[0]
    if not edge_host:
        raise ValueError("IVR_CLUSTER_NODE_ADDRESSES needs IVR_EDGE_ADDRESS (host:port): "
                         "the nodes take calls from the edge only")
    span = (settings.rtp_end - settings.rtp_start) // len(addresses)
    result = []
    for number, (node_id, (host, port)) in enumerate(addresses.items(), start=1):
        rtp_start = settings.rtp_start + (number - 1) * span
        updates: dict[str, str | int] = {
            "node_id": node_id, "sip_port": port, "ari_url": f"http://{host}:{settings.ari_port}",
            "rtp_start": rtp_start, "rtp_end": rtp_start + span - 1,
            "asterisk_dir": f"asterisk-{node_id}", "trunk_match": edge_host,
            "sip_bind": "0.0.0.0", "ari_bind": "0.0.0.0"}
        env = {f"IVR_{key.upper()}": str(value) for key, value in updates.items()}
        result.append(Node(node_id, settings.model_copy(update=updates), env, sip_host=host))
    return result
