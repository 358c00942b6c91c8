"""The cluster's layout without a running cluster: the one-machine port layout as it always
was, the layout of docker/compose.yaml (a host per node, by name), the edge's configuration
for it checked by the real ``kamailio -c``, and the compose file agreeing with the layout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from ivr.cluster import edge
from ivr.cluster.layout import nodes
from ivr.cluster.stack import edge_config
from ivr.pbx.asterisk import config_file, template_values
from ivr.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]
COMPOSE = PROJECT / "docker" / "compose.yaml"
DATABASE = "postgresql://ivr:pw@postgres:5432/ivr"


@pytest.fixture(autouse=True)
def _no_ivr_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test gives: not the IVR_ variables a test stack left in the environment."""
    for name in [name for name in os.environ if name.startswith("IVR_")]:
        monkeypatch.delenv(name)


def _settings(**values: Any) -> Settings:
    return Settings(project_dir=PROJECT, ari_password=SecretStr("ari"), **values)


def test_one_machine_layout_is_unchanged(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path, sip_port=5060, ari_port=8088, rtp_start=10000,
                         rtp_end=20000, sip_bind="127.0.0.1", trunk_match="192.0.2.10",
                         database_url=DATABASE)
    layout = nodes(settings)
    assert [node.env for node in layout] == [
        {"IVR_NODE_ID": "node1", "IVR_SIP_PORT": "5061", "IVR_ARI_PORT": "8088",
         "IVR_RTP_START": "10000", "IVR_RTP_END": "14999", "IVR_ASTERISK_DIR": "asterisk-node1",
         "IVR_TRUNK_MATCH": "127.0.0.1", "IVR_SIP_BIND": "127.0.0.1"},
        {"IVR_NODE_ID": "node2", "IVR_SIP_PORT": "5062", "IVR_ARI_PORT": "8089",
         "IVR_RTP_START": "15000", "IVR_RTP_END": "19999", "IVR_ASTERISK_DIR": "asterisk-node2",
         "IVR_TRUNK_MATCH": "127.0.0.1", "IVR_SIP_BIND": "127.0.0.1"},
    ]
    assert [node.settings.ari_base_url for node in layout] == [
        "http://127.0.0.1:8088", "http://127.0.0.1:8089"]
    assert edge_config(settings).nodes == [edge.EdgeNode("node1", "127.0.0.1:5061"),
                                           edge.EdgeNode("node2", "127.0.0.1:5062")]


def test_node_addresses_are_checked() -> None:
    assert _settings(cluster_node_addresses=" node1=a:5060, node2=b:5070 ").node_addresses() == {
        "node1": ("a", 5060), "node2": ("b", 5070)}
    for wrong in ("node1=a", "a:5060", "node1=a:x", "node1=a:5060,node1=b:5060"):
        with pytest.raises(ValueError, match="node"):
            _settings(cluster_node_addresses=wrong)


def _compose_text(values: dict[str, str]) -> str:
    """compose.yaml with its ${NAME:-default} and ${NAME:?message} filled as compose does."""
    def fill(match: re.Match[str]) -> str:
        name, kind, default = match.group(1), match.group(2), match.group(3)
        if name in values:
            return values[name]
        assert kind == ":-", f"compose.yaml needs {name}"
        return default

    return re.sub(r"\$\{(\w+)(:-|:\?)([^}]*)\}", fill, COMPOSE.read_text())


def _compose() -> dict[str, Any]:
    text = _compose_text({"IVR_POSTGRES_PASSWORD": "pw", "IVR_TRUNK_MATCH": "192.0.2.10"})
    compose: dict[str, Any] = yaml.safe_load(text)
    return compose


def _prepare_settings(compose: dict[str, Any], **values: Any) -> Settings:
    """The settings `ivr --cluster prepare` sees in its container."""
    env = compose["services"]["prepare"]["environment"]
    fields = {name.removeprefix("IVR_").lower(): value for name, value in env.items()}
    return _settings(**{**fields, **values})


def test_container_layout_renders_an_edge_kamailio_accepts(tmp_path: Path) -> None:
    settings = _prepare_settings(_compose(), data_dir=tmp_path)
    assert settings.cluster_node_addresses == "node1=node1:5060,node2=node2:5060"
    layout = nodes(settings)
    for node, first_port in zip(layout, (10000, 10200), strict=True):
        number = node.node_id.removeprefix("node")
        assert node.sip_address == f"node{number}:5060"
        assert node.settings.ari_base_url == f"http://node{number}:8088"
        assert (node.settings.rtp_start, node.settings.rtp_end) == (first_port, first_port + 199)
        values = template_values(node.settings)
        # Every address of its own host; calls only from the edge, by its fixed address.
        assert (values["sip_bind"], values["sip_port"], values["ari_bind"]) == (
            "0.0.0.0", "5060", "0.0.0.0")
        assert values["trunk_match_lines"] == "match = 172.30.120.10"
        assert node.env["IVR_NODE_ID"] == node.node_id
        assert node.env["IVR_ASTERISK_DIR"] == f"asterisk-{node.node_id}"

    config = edge_config(settings)
    assert (config.bind, config.port, config.trusted_networks) == (
        "172.30.120.10", 5060, ["192.0.2.10"])
    edge.render(config, drained={"node2"})
    edge.check(config)  # kamailio -c, the real one
    assert config.dispatcher_list.read_text().splitlines()[1:] == [
        "1 sip:node1:5060 8 0 node=node1", "1 sip:node2:5060 4 0 node=node2"]
    assert "postgres://ivr:pw@postgres:5432/ivr" in config.config_file.read_text()


def test_one_machine_edge_renders_as_before(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path, trunk_match="192.0.2.10", database_url=DATABASE)
    config = edge_config(settings)
    edge.render(config, drained=set())
    edge.check(config)
    text = config.config_file.read_text()
    assert "listen=udp:127.0.0.1:5060" in text
    assert 'dgram_socket", "udp:127.0.0.1:5069"' in text
    assert config.dispatcher_list.read_text().splitlines()[1:] == [
        "1 sip:127.0.0.1:5061 8 0 node=node1", "1 sip:127.0.0.1:5062 8 0 node=node2"]


def test_compose_agrees_with_the_layout() -> None:
    compose = _compose()
    services = compose["services"]
    settings = _prepare_settings(compose)  # its data folder: the volume, /var/lib/ivr
    config = edge_config(settings)
    kamailio = services["kamailio"]
    assert kamailio["command"] == ["kamailio", *edge.command(config)[1:]]
    assert kamailio["networks"]["default"]["ipv4_address"] == config.bind
    assert kamailio["ports"] == [f"{config.port}:{config.port}/udp"]
    for node in nodes(settings):
        number = node.node_id.removeprefix("node")
        host = services[node.node_id]  # the node's network address, by the name the edge knows
        assert node.sip_address == f"{node.node_id}:5060"
        rtp = f"{node.settings.rtp_start}-{node.settings.rtp_end}"
        assert host["ports"] == [f"{rtp}:{rtp}/udp"]
        asterisk = services[f"asterisk{number}"]
        assert asterisk["command"][-1] == str(config_file(node.settings))
        controller = services[f"controller{number}"]
        assert asterisk["network_mode"] == controller["network_mode"] == f"service:{node.node_id}"
        assert controller["environment"]["IVR_NODE_ID"] == node.node_id
        assert controller["environment"]["IVR_ASTERISK_DIR"] == node.settings.asterisk_dir
    assert settings.edge_address == f"{config.bind}:{config.port}"


def test_compose_runs_only_ivr_commands_that_exist() -> None:
    commands = [service["command"] for service in _compose()["services"].values()
                if service.get("command", [""])[0] == "ivr"]
    assert ["ivr", "--cluster", "prepare"] in commands
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "ivr", *command[1:], "--help"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)


def test_compose_takes_secrets_from_the_environment_only() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())  # before compose fills anything in
    required = "${IVR_POSTGRES_PASSWORD:?"
    assert raw["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(required)
    assert required in raw["x-ivr-env"]["IVR_DATABASE_URL"]
    with pytest.raises(AssertionError, match="IVR_POSTGRES_PASSWORD"):
        _compose_text({"IVR_TRUNK_MATCH": "192.0.2.10"})
