"""``ivr node list|drain|undrain``: what an operator does with the cluster's nodes.

A drained node takes no new calls and finishes the ones it has (in-dialog requests follow the
Record-Route to it, whatever the dispatcher says). The drain is kept in Redis, so that the
edge, restarted, drains the node again.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from ivr.cluster import edge
from ivr.cluster.layout import nodes
from ivr.redis_client import connect_redis
from ivr.settings import Settings


class NodeError(Exception):
    """A node that cannot be changed as asked, with the reason."""


class UnknownNode(NodeError):
    pass


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    uri: str
    state: str  # up, down or drained (what the edge says)
    calls: int | None  # channels on its Asterisk now; None: its ARI does not answer


async def _channels(settings: Settings) -> int | None:
    auth = (settings.ari_user, settings.ari_secret())
    try:
        async with httpx.AsyncClient(timeout=2, auth=auth) as http:
            response = await http.get(f"{settings.ari_base_url}/ari/channels")
            response.raise_for_status()
            return len(response.json())
    except httpx.HTTPError:
        return None


async def list_nodes(settings: Settings) -> list[NodeRow]:
    """``settings``: the cluster's (see ``cluster_settings``)."""
    layout = {node.node_id: node for node in nodes(settings)}
    rows = []
    for state in await edge.node_states(settings.edge_rpc_port):
        node = layout.get(state.node_id)
        calls = await _channels(node.settings) if node is not None else None
        rows.append(NodeRow(state.node_id, state.uri, state.state, calls))
    return sorted(rows, key=lambda row: row.node_id)


async def set_drained(settings: Settings, node_id: str, drained: bool,
                      force: bool = False) -> NodeRow:
    rows = {row.node_id: row for row in await list_nodes(settings)}
    if node_id not in rows:
        raise UnknownNode(f"no node {node_id!r}; the nodes are {', '.join(sorted(rows))}")
    others_up = [row for row in rows.values() if row.node_id != node_id and row.state == "up"]
    if drained and not others_up and not force:
        raise NodeError(f"{node_id} is the only node up: draining it would leave new calls "
                        "nowhere to go (--force to drain it anyway)")
    redis = connect_redis(settings)
    try:
        if drained:
            await redis.sadd(edge.DRAINED_KEY, node_id)
        else:
            await redis.srem(edge.DRAINED_KEY, node_id)
    finally:
        await redis.aclose()
    await edge.set_node_state(settings.edge_rpc_port, rows[node_id].uri, drained)
    after = {row.node_id: row for row in await list_nodes(settings)}
    return after[node_id]
