"""Kamailio at the SIP edge: its configuration, rendered from kamailio/kamailio.cfg, checked
with ``kamailio -c`` before it starts, and the JSON-RPC that drains and lists the nodes.

The edge keeps no call state of its own: every INVITE goes to a live node and every in-dialog
request follows the Record-Route back to the node that has the call. What a node is (its SIP
address, whether it is drained) lives in the dispatcher's list, which is rendered from the
cluster's layout and from Redis (where draining is kept, so that it survives a restart). The
edge itself reads only PostgreSQL: the agents' digests and the live dialplan's numbers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.acd.agents import REALM
from ivr.pbx.asterisk import render_template

TEMPLATE = Path(__file__).resolve().parents[2] / "kamailio" / "kamailio.cfg"
NODE_SET = 1  # the dispatcher set of the Asterisk nodes
DRAINED_KEY = "ivr:edge:drained"  # node ids an operator drained


class EdgeSetupError(Exception):
    """The edge cannot start as configured; the message says where and why."""


@dataclass(frozen=True)
class EdgeNode:
    node_id: str
    sip_address: str  # host:port of the node's Asterisk


@dataclass(frozen=True)
class EdgeConfig:
    bind: str
    port: int
    rpc_port: int
    run_dir: Path
    nodes: list[EdgeNode]
    trusted_networks: list[str]  # the carrier's addresses, never counted as a flood
    db_url: str  # postgres://...: the agents' digests (REGISTER) and the center's numbers
    children: int = 4
    probe_seconds: int = 1
    node_reply_ms: int = 1000
    pike_requests: int = 60
    debug_level: int = 1

    @property
    def config_file(self) -> Path:
        return self.run_dir / "kamailio.cfg"

    @property
    def dispatcher_list(self) -> Path:
        return self.run_dir / "dispatcher.list"


def kamailio_binary() -> str:
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    if not Path(binary).exists():
        raise EdgeSetupError("kamailio is not installed: run `make install` (Debian's kamailio "
                             "and kamailio-postgres-modules)")
    return binary


def _module_path() -> Path:
    """Debian's, under the machine's multiarch folder (x86_64-linux-gnu, aarch64-linux-gnu)."""
    for candidate in sorted(Path("/usr/lib").glob("*/kamailio/modules")):
        if (candidate / "dispatcher.so").exists():
            return candidate
    raise EdgeSetupError("Kamailio's modules are not in /usr/lib/*/kamailio/modules: is "
                         "kamailio installed?")


def _check_values(config: EdgeConfig) -> None:
    if not config.nodes:
        raise EdgeSetupError("the edge has no nodes to send calls to")
    if not config.trusted_networks:
        raise EdgeSetupError("no carrier address (IVR_TRUNK_MATCH): the edge would refuse "
                             "every call")
    for network in config.trusted_networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise EdgeSetupError(f"IVR_TRUNK_MATCH: {network!r} is not an address or network "
                                 "(e.g. 192.0.2.10 or 192.0.2.0/24)") from None


def render(config: EdgeConfig, drained: set[str]) -> Path:
    """Write kamailio.cfg and the dispatcher's list into the run folder; returns the config."""
    _check_values(config)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "debug_level": str(config.debug_level),
        "children": str(config.children),
        "run_dir": str(config.run_dir),
        "module_path": str(_module_path()),
        "edge_bind": config.bind,
        "edge_port": str(config.port),
        "rpc_port": str(config.rpc_port),
        "node_reply_ms": str(config.node_reply_ms),
        "probe_seconds": str(config.probe_seconds),
        "pike_requests": str(config.pike_requests),
        "dispatcher_list": str(config.dispatcher_list),
        "trusted_networks": ",".join(str(ipaddress.ip_network(item, strict=False))
                                     for item in config.trusted_networks),
        "db_url": config.db_url,
        "realm": REALM,
    }
    config.config_file.write_text(render_template(TEMPLATE.read_text(), values, TEMPLATE.name))
    config.config_file.chmod(0o600)  # it holds the database password
    lines = ["# setid destination flags priority attributes (rendered; `ivr node` changes it)"]
    for node in config.nodes:
        # Flags: 8 probes the node from the start; 4 (disabled) keeps a drained node out.
        flags = 4 if node.node_id in drained else 8
        lines.append(f"{NODE_SET} sip:{node.sip_address} {flags} 0 node={node.node_id}")
    config.dispatcher_list.write_text("\n".join(lines) + "\n")
    return config.config_file


def check(config: EdgeConfig) -> None:
    """``kamailio -c``: a configuration Kamailio would refuse stops the start, with its words."""
    result = subprocess.run([kamailio_binary(), "-c", "-f", str(config.config_file)],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        errors = [line for line in (result.stderr + result.stdout).splitlines()
                  if "ERROR" in line or "CRITICAL" in line or "error" in line]
        raise EdgeSetupError(f"{config.config_file}: Kamailio refuses it:\n  "
                             + "\n  ".join(errors[-8:] or [result.stderr.strip()[-500:]]))


def command(config: EdgeConfig) -> list[str]:
    """Kamailio in the foreground (-DD), logging to its output (-E)."""
    return [kamailio_binary(), "-DD", "-E", "-f", str(config.config_file)]


# --- JSON-RPC (loopback UDP) ------------------------------------------------------------------


class EdgeRpcError(Exception):
    pass


async def rpc(port: int, method: str, *params: Any, timeout: float = 2.0) -> Any:
    """One JSON-RPC request to the edge; its result, or EdgeRpcError with the edge's words."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Reply(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not answer.done():
                answer.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not answer.done():
                answer.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Reply, remote_addr=("127.0.0.1", port))
    try:
        request = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
        transport.sendto(json.dumps(request).encode())
        try:
            reply = json.loads(await asyncio.wait_for(answer, timeout))
        except (TimeoutError, OSError) as exc:
            raise EdgeRpcError(f"the edge does not answer on 127.0.0.1:{port}") from exc
    finally:
        transport.close()
    if "error" in reply:
        raise EdgeRpcError(f"{method}: {reply['error'].get('message', reply['error'])}")
    return reply.get("result")


@dataclass(frozen=True)
class NodeState:
    node_id: str
    uri: str
    flags: str  # the dispatcher's: A active, I inactive, D disabled (drained), P probing

    @property
    def state(self) -> str:
        if "D" in self.flags:
            return "drained"
        if "I" in self.flags:
            return "down"
        return "up"


async def node_states(port: int) -> list[NodeState]:
    result = await rpc(port, "dispatcher.list")
    states = []
    for record in result.get("RECORDS", []):
        for target in record.get("SET", {}).get("TARGETS", []):
            dest = target.get("DEST", {})
            attrs = str(dest.get("ATTRS", {}).get("BODY", ""))
            node_id = attrs.removeprefix("node=") if attrs.startswith("node=") else dest["URI"]
            states.append(NodeState(node_id, str(dest["URI"]), str(dest.get("FLAGS", ""))))
    return states


async def set_node_state(port: int, uri: str, drained: bool) -> None:
    # "d" disables the node (no new calls, no probes); "p" puts it back under probing, so
    # that it takes calls again as soon as it answers.
    await rpc(port, "dispatcher.set_state", "d" if drained else "ap", NODE_SET, uri)
