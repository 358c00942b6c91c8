"""Where each part of a cluster on one machine listens, from the one settings object.

Node N (1, 2, ...) takes SIP on ``sip_port + N`` behind the edge on ``sip_port``, ARI on
``ari_port + N - 1``, and the N-th share of the RTP range; its Asterisk keeps its folders in
``asterisk-nodeN`` of the cluster's data folder. Every process of the cluster gets the same
data folder, Redis and SQL; a node's processes get its own ports and name on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ivr.settings import Settings


@dataclass(frozen=True)
class Node:
    node_id: str
    settings: Settings  # as the node's own processes see them
    env: dict[str, str]  # what makes a process one of this node's

    @property
    def sip_address(self) -> str:
        return f"127.0.0.1:{self.settings.sip_port}"


def cluster_data_path(settings: Settings) -> Path:
    """The cluster keeps its own data folder, so that `ivr run` and `ivr cluster` never mix."""
    return settings.data_path / "cluster"


def nodes(settings: Settings) -> list[Node]:
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
