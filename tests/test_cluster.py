"""The cluster (`ivr cluster`): Kamailio at the edge in front of two Asterisk nodes.

A cluster of this module's own, on its own ports: real Kamailio, two real Asterisk nodes with
their controllers, the API, Redis with Sentinel, PostgreSQL. Callers are SIPp calls to the
edge, agents baresip phones registered to it; faults are real processes killed, stopped or
drained.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ivr.acd.core import Acd
from ivr.cluster import edge
from ivr.cluster.layout import Node, nodes, redis_ports
from ivr.cluster.postgres import postgres_ready
from ivr.cluster.redis_ha import replicated
from ivr.controller.app import PEER_SILENCE
from ivr.redis_client import connect_redis
from tests.conftest import (
    Server,
    admin_client,
    another_stack,
    audio_for,
    call_record,
    caller_number,
    run_ivr,
    wait_for,
)
from tests.support.scenario import Press, info_caller
from tests.support.sip import SippCall
from tests.support.stack import open_to_postgres
from tests.support.team import team_of

SHIFT = 600  # this cluster's ports: the session stack's plus this


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[Server]:
    settings = {"IVR_TRUNK_CONTACT": "",  # no calls out
                "IVR_RECOGNIZER_WORKERS": "1",  # two nodes' callbots on a small machine
                "IVR_AGENT_QUALIFY_SECONDS": "2"}  # nodes see a phone come and go sooner
    base = tmp_path_factory.mktemp("cluster")
    open_to_postgres(base)
    with another_stack(base, SHIFT, settings,
                       lambda: bool(request.session.testsfailed), verb="cluster") as server:
        asyncio.run(_all_nodes_up(server))
        yield server


async def _all_nodes_up(server: Server) -> None:
    async def up() -> bool:
        try:
            states = await edge.node_states(server.settings.edge_rpc_port)
        except edge.EdgeRpcError:
            return False
        return len(states) == 2 and all(state.state == "up" for state in states)

    await wait_for(up, 60, what="both nodes up at the edge")


def cluster_nodes(server: Server) -> list[Node]:
    return nodes(server.settings)


async def channel_of(server: Server, caller: str) -> tuple[str, str] | None:
    """The node whose Asterisk has a channel from this caller now, and the channel's id."""
    for node in cluster_nodes(server):
        settings = node.settings
        try:
            async with httpx.AsyncClient(timeout=2, auth=(settings.ari_user,
                                                          settings.ari_secret())) as http:
                response = await http.get(f"{settings.ari_base_url}/ari/channels")
        except httpx.HTTPError:
            continue
        if response.status_code != 200:
            continue
        for channel in response.json():
            if channel["caller"]["number"] == caller:
                return node.node_id, str(channel["id"])
    return None


async def node_of(server: Server, caller: str) -> str | None:
    found = await channel_of(server, caller)
    return found[0] if found else None


async def answered_on(server: Server, call: SippCall) -> str:
    """Wait until the call is answered with audio; the node that took it."""
    await audio_for(call, 0.3, timeout=30)

    async def where() -> str | None:
        return await node_of(server, call.caller)

    node: str = await wait_for(where, 10, what=f"the node of {call.caller}")
    return node


def caller_hangs_up(server: Server, after: float) -> str:
    return info_caller(server.workdir, f"hangs-up-{int(after)}", [], hang_up_after=after)


async def test_calls_reach_both_nodes_and_the_caller_hangs_up_through_the_edge(
        cluster: Server) -> None:
    scenario = caller_hangs_up(cluster, 6)
    calls = [await SippCall(scenario, "120", cluster.sip_target, cluster.workdir,
                            caller_number()).start() for _ in range(4)]
    try:
        where = [await answered_on(cluster, call) for call in calls]
        assert set(where) == {"node1", "node2"}, where
        for call in calls:  # the caller's BYE went through the edge to the node, and back
            result = await call.finished(60)
            assert result.ok, result.errors or result.output
        async with admin_client(cluster) as api:
            for call in calls:
                record = await call_record(api, call.caller)
                assert record["outcome"] == "caller_hung_up"
    finally:
        for call in calls:
            await call.stop()


async def test_an_agent_registered_once_at_the_edge_takes_calls_of_both_nodes(
        cluster: Server) -> None:
    """The agent's phone registers to the edge only; made while the cluster runs (no
    restart), the agent gets callers whichever node holds them."""
    async with team_of(cluster) as team:
        agent = await team.agent("edge", "water=5")
        seen: set[str] = set()
        for _ in range(6):
            caller = caller_number()
            scenario = info_caller(cluster.workdir, f"water-{caller}", [Press("1", 2.0)],
                                   hang_up_after=4)
            call = await SippCall(scenario, "121", cluster.sip_target, cluster.workdir,
                                  caller).start()
            try:
                seen.add(await answered_on(cluster, call))
                result = await call.finished(90)
                assert result.ok, result.errors or result.output
            finally:
                await call.stop()
            async with admin_client(cluster) as api:
                record = await call_record(api, caller)
            assert (record["agent"], record["outcome"]) == (agent, "answered"), record

            async def available() -> bool:
                return (await team.state(agent)).get("state") == "available"

            await wait_for(available, 20, what="the end of wrap-up")
            if seen == {"node1", "node2"}:
                break
        assert seen == {"node1", "node2"}


def _sip_request(method: str, number: str, port: int, source: str = "127.0.0.1",
                 broken: bool = False) -> str:
    """Send one request to the edge from ``source``; the first line and Server of the reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(5)
        local = sock.getsockname()
        branch = f"z9hG4bK-{time.monotonic_ns()}"
        lines = [
            f"{method} sip:{number}@127.0.0.1:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport",
            f"From: <sip:0299990000@{local[0]}>;tag=test",
            f"To: <sip:{number}@127.0.0.1>",
            f"Call-ID: {branch}@test",
            "CSeq: one INVITE" if broken else f"CSeq: 1 {method}",
            f"Contact: <sip:0299990000@{local[0]}:{local[1]}>",
            "Max-Forwards: 70",
            "Content-Length: 0",
            "", "",
        ]
        sock.sendto("\r\n".join(lines).encode(), ("127.0.0.1", port))
        while True:
            reply = sock.recv(65535).decode(errors="replace")
            status = reply.split("\r\n", 1)[0]
            if not status.startswith("SIP/2.0 100"):
                server = next((line for line in reply.split("\r\n")
                               if line.lower().startswith("server:")), "")
                return f"{status} | {server}"


async def test_bad_requests_are_answered_by_the_edge(cluster: Server) -> None:
    port = cluster.settings.sip_port
    unknown = _sip_request("INVITE", "0299998888", port)
    assert unknown.startswith("SIP/2.0 404") and "120 IVR edge" in unknown, unknown
    malformed = _sip_request("INVITE", "120", port, broken=True)
    assert malformed.startswith("SIP/2.0 400") and "120 IVR edge" in malformed, malformed
    # 127.0.0.2 is on the loopback too, but is not the carrier (IVR_TRUNK_MATCH).
    stranger = _sip_request("INVITE", "120", port, source="127.0.0.2")
    assert stranger.startswith("SIP/2.0 403") and "120 IVR edge" in stranger, stranger
    register = _sip_request("REGISTER", "nobody", port, source="127.0.0.2")
    assert register.split()[1].startswith("4"), register


def test_a_bad_edge_setting_stops_the_start_with_a_clear_message(cluster: Server,
                                                                 tmp_path: Path) -> None:
    env = {**cluster.env, "IVR_TRUNK_MATCH": "192.0.2.300", "IVR_DATA_DIR": str(tmp_path)}
    result = run_ivr("cluster", server=Server(cluster.settings, cluster.process,
                                              cluster.log_path, "", tmp_path, env))
    assert result.returncode == 2
    assert "IVR_TRUNK_MATCH" in result.stderr and "192.0.2.300" in result.stderr


async def test_supervisors_see_the_nodes_and_admins_drain_them_through_the_api(
        cluster: Server) -> None:
    async with admin_client(cluster) as api:
        listed = await api.get("/api/nodes")
        assert listed.status_code == 200, listed.text
        assert [(node["node"], node["state"]) for node in listed.json()] == [
            ("node1", "up"), ("node2", "up")]
        drained = await api.post("/api/nodes/node2/drain")
        assert drained.status_code == 200 and drained.json()["state"] == "drained"
        last = await api.post("/api/nodes/node1/drain")
        assert last.status_code == 409 and "only node up" in last.json()["detail"]
        unknown = await api.post("/api/nodes/node9/drain")
        assert unknown.status_code == 404 and "no node 'node9'" in unknown.json()["detail"]
        back = await api.post("/api/nodes/node2/undrain")
        assert back.status_code == 200 and back.json()["state"] == "up"
        audit = (await api.get("/api/audit")).json()
        assert {"node.drain", "node.undrain"} <= {entry["action"] for entry in audit}


async def test_a_killed_node_loses_no_new_call_and_comes_back(cluster: Server) -> None:
    long_call = caller_hangs_up(cluster, 40)
    before = [await SippCall(long_call, "120", cluster.sip_target, cluster.workdir,
                             caller_number()).start() for _ in range(4)]
    after: list[SippCall] = []
    try:
        where = {call.caller: await answered_on(cluster, call) for call in before}
        on_node1 = [call for call in before if where[call.caller] == "node1"]
        on_node2 = [call for call in before if where[call.caller] == "node2"]
        assert on_node1 and on_node2, where

        killed_at = time.monotonic()
        os.kill(cluster.pid("asterisk-node1"), signal.SIGKILL)
        # New calls at once, while the edge still believes node1 lives: none may fail.
        for _ in range(6):
            after.append(await SippCall(long_call, "120", cluster.sip_target,
                                        cluster.workdir, caller_number()).start())
            await asyncio.sleep(0.3)
        # Every one is answered: on node2, or on node1 once the supervisor has brought it
        # back and the edge has seen it answer again.
        landed = [await answered_on(cluster, call) for call in after]
        print(f"\nnode1 killed: {len(after)} new calls in the next "
              f"{time.monotonic() - killed_at:.1f} s, all answered "
              f"({landed.count('node2')} on node2, {landed.count('node1')} on node1 back)")

        # node2's calls go on: they still hear the server after the kill.
        heard = {call.caller: call.rtp.audio_seconds for call in on_node2}
        for call in on_node2:
            await audio_for(call, heard[call.caller] + 2.0)

        # The supervisor brings node1 back; the edge uses it again.
        async def node1_up() -> bool:
            states = await edge.node_states(cluster.settings.edge_rpc_port)
            return any(s.node_id == "node1" and s.state == "up" for s in states)

        await wait_for(node1_up, 90, what="node1 up again at the edge")
        print(f"node1 back at the edge {time.monotonic() - killed_at:.1f} s after the kill")
        again = [await SippCall(long_call, "120", cluster.sip_target, cluster.workdir,
                                caller_number()).start() for _ in range(2)]
        after += again
        assert {await answered_on(cluster, call) for call in again} == {"node1", "node2"}

        async with admin_client(cluster) as api:
            # node1's calls died with it: recorded as cut, not left live.
            for call in on_node1:
                record = await call_record(api, call.caller, timeout=60)
                assert record["outcome"] == "cut", record
            # node2's calls end as their callers hang up.
            for call in on_node2:
                result = await call.finished(90)
                assert result.ok, result.errors or result.output
                assert (await call_record(api, call.caller))["outcome"] == "caller_hung_up"
    finally:
        for call in before + after:
            await call.stop()


async def test_a_drained_node_finishes_its_calls_and_takes_no_new_ones(
        cluster: Server) -> None:
    scenario = caller_hangs_up(cluster, 12)
    first = [await SippCall(scenario, "120", cluster.sip_target, cluster.workdir,
                            caller_number()).start() for _ in range(4)]
    later: list[SippCall] = []
    try:
        where = {call.caller: await answered_on(cluster, call) for call in first}
        assert set(where.values()) == {"node1", "node2"}, where
        drained = run_ivr("node", "drain", "node2", server=cluster)
        assert drained.returncode == 0, drained.stdout + drained.stderr
        assert "drained" in drained.stdout
        refused = run_ivr("node", "drain", "node1", server=cluster)
        assert refused.returncode == 1 and "only node up" in refused.stdout

        later = [await SippCall(scenario, "120", cluster.sip_target, cluster.workdir,
                                caller_number()).start() for _ in range(4)]
        assert {await answered_on(cluster, call) for call in later} == {"node1"}
        for call in first + later:  # 0 dropped: every call ends as its caller hangs up
            result = await call.finished(60)
            assert result.ok, result.errors or result.output
        async with admin_client(cluster) as api:
            for call in first + later:
                assert (await call_record(api, call.caller))["outcome"] == "caller_hung_up"
    finally:
        undrained = run_ivr("node", "undrain", "node2", server=cluster)
        for call in first + later:
            await call.stop()
    assert undrained.returncode == 0, undrained.stdout + undrained.stderr
    listed = run_ivr("node", "list", server=cluster)
    assert "node2" in listed.stdout and "drained" not in listed.stdout


async def test_the_redis_primary_lost_no_queued_caller_loses_their_place(
        cluster: Server) -> None:
    """Three callers wait for a paused agent; the Redis primary stops answering; Sentinel
    promotes the replica: each caller keeps their place, and the first is answered when the
    agent is back."""
    redis = connect_redis(cluster.settings)
    acd = Acd(redis)
    async with team_of(cluster) as team:
        agent = await team.agent("sentinel", "water=5")
        paused = run_ivr("agent", "state", agent, "paused", "--reason", "test", server=cluster)
        assert paused.returncode == 0, paused.stdout
        calls = []
        try:
            for _ in range(3):
                caller = caller_number()
                scenario = info_caller(cluster.workdir, f"wait-{caller}", [Press("1", 2.0)],
                                       hang_up_after=60)
                calls.append(await SippCall(scenario, "121", cluster.sip_target,
                                            cluster.workdir, caller).start())
                await asyncio.sleep(3.0)  # one after the other: their order is known
            channels = [await wait_for(lambda call=call: channel_of(cluster, call.caller), 20,
                                       what="the caller's channel") for call in calls]

            async def all_queued() -> list[int] | None:
                places = [await acd.position(channel) for _, channel in channels]
                return places if all(place > 0 for place in places) else None

            before = await wait_for(all_queued, 30, what="three callers in the queue")
            assert before == sorted(before), before
            # What the callers were told is on the replica too (asynchronous replication).
            assert await replicated(redis) == 1

            ports = redis_ports(cluster.settings)
            primary_port = int((await redis.config_get("port"))["port"])
            # Stopped, not killed: the supervisor would start a killed primary again within
            # a second, before Sentinel calls it down. A primary that hangs (or whose machine
            # is gone) is what Sentinel is for.
            primary_pid = cluster.pid(f"redis-{primary_port}")
            killed_at = time.monotonic()
            os.kill(primary_pid, signal.SIGSTOP)

            async def promoted() -> bool:
                try:
                    port = int((await redis.config_get("port"))["port"])
                except RedisError:
                    return False
                return port != primary_port

            await wait_for(promoted, 30, what="Sentinel to promote the replica")
            print(f"\nRedis primary {primary_port} stopped: the replica "
                  f"{ports.replica if primary_port == ports.primary else ports.primary} "
                  f"took writes {time.monotonic() - killed_at:.1f} s later")
            after = [await acd.position(channel) for _, channel in channels]
            assert after == before
            # The old primary, ended and started again by the supervisor, asks the Sentinels
            # and comes back as a replica of the new one.
            os.kill(primary_pid, signal.SIGKILL)
            old_primary = Redis(port=primary_port, decode_responses=True)

            async def replica_again() -> bool:
                try:
                    return (await old_primary.info("replication"))["role"] == "slave"
                except RedisError:
                    return False

            await wait_for(replica_again, 30, what="the old primary back as a replica")
            await old_primary.aclose()
            for call in calls:  # nobody was dropped meanwhile
                assert call.running

            ready = run_ivr("agent", "state", agent, "available", server=cluster)
            assert ready.returncode == 0, ready.stdout
            async with admin_client(cluster) as api:
                record = await call_record(api, calls[0].caller, ended=False, timeout=5)

                async def first_answered() -> bool:
                    response = await api.get(f"/api/calls/{record['id']}")
                    return any(event["kind"] == "answered"
                               for event in response.json()["events"])

                await wait_for(first_answered, 30, what="the first caller answered")
        finally:
            for call in calls:
                await call.stop()
    await redis.aclose()


async def test_records_of_calls_during_a_postgresql_restart_are_kept(cluster: Server) -> None:
    """PostgreSQL stopped (fast shutdown; the supervisor starts it again): calls go on
    meanwhile, and their records are written once it is back."""
    scenario = caller_hangs_up(cluster, 3)
    os.kill(cluster.pid("postgres"), signal.SIGINT)
    calls = [await SippCall(scenario, "120", cluster.sip_target, cluster.workdir,
                            caller_number()).start() for _ in range(4)]
    try:
        for call in calls:
            result = await call.finished(60)
            assert result.ok, result.errors or result.output

        async def back() -> bool:
            return await postgres_ready(cluster.settings.sql_url)

        await wait_for(back, 60, what="PostgreSQL back")
        async with admin_client(cluster) as api:
            for call in calls:
                record = await call_record(api, call.caller, timeout=60)
                assert record["outcome"] == "caller_hung_up"
    finally:
        for call in calls:
            await call.stop()


async def test_a_node_gone_whole_has_its_calls_recorded_as_cut_by_the_other(
        cluster: Server) -> None:
    """node2's Asterisk and controller stop at once, as when its machine is gone: the other
    node's controller notices its silence and records its calls as cut; node1's go on."""
    long_call = caller_hangs_up(cluster, 120)
    calls = [await SippCall(long_call, "120", cluster.sip_target, cluster.workdir,
                            caller_number()).start() for _ in range(4)]
    stopped = [cluster.pid("asterisk-node2"), cluster.pid("controller-node2")]
    try:
        where = {call.caller: await answered_on(cluster, call) for call in calls}
        on_node2 = [call for call in calls if where[call.caller] == "node2"]
        assert on_node2 and len(on_node2) < len(calls), where
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        gone_at = time.monotonic()
        async with admin_client(cluster) as api:
            for call in on_node2:
                record = await call_record(api, call.caller, timeout=PEER_SILENCE + 60)
                assert record["outcome"] == "cut", record
            print(f"\nnode2 gone whole: its {len(on_node2)} calls recorded as cut "
                  f"{time.monotonic() - gone_at:.0f} s later")
            for call in calls:
                if call not in on_node2:
                    assert call.running
                    assert (await call_record(api, call.caller, ended=False))["ended_at"] is None
    finally:
        for pid in stopped:  # the supervisor starts them afresh
            os.kill(pid, signal.SIGKILL)
        for call in calls:
            await call.stop()

    async def node2_up() -> bool:
        states = await edge.node_states(cluster.settings.edge_rpc_port)
        return any(s.node_id == "node2" and s.state == "up" for s in states)

    await wait_for(node2_up, 90, what="node2 up again at the edge")


async def test_the_edge_killed_its_calls_go_on_and_agents_register_again(
        cluster: Server) -> None:
    """The edge keeps no call state: killed, and started again by the supervisor, it routes
    the calls' requests by their Record-Route as before; phones register again."""
    async with team_of(cluster) as team:
        agent = await team.agent("again", "water=5")
        calls = [await SippCall(caller_hangs_up(cluster, 15), "120", cluster.sip_target,
                                cluster.workdir, caller_number()).start() for _ in range(2)]
        try:
            for call in calls:
                await answered_on(cluster, call)
            os.kill(cluster.pid("edge"), signal.SIGKILL)
            await _all_nodes_up(cluster)  # the supervisor started it again
            for call in calls:  # their BYEs went through the new edge
                result = await call.finished(60)
                assert result.ok, result.errors or result.output
            async with admin_client(cluster) as api:
                for call in calls:
                    assert (await call_record(api, call.caller))["outcome"] == "caller_hung_up"
        finally:
            for call in calls:
                await call.stop()
        # The phone's next REGISTER (at most a minute later) reaches the new edge, the nodes
        # find the phone again, and a caller for the agent is answered.
        async def registered_again() -> bool:
            try:
                await edge.rpc(cluster.settings.edge_rpc_port, "ul.lookup", "location", agent)
            except edge.EdgeRpcError:
                return False
            return (await team.state(agent)).get("registered") == "1"

        await wait_for(registered_again, 90, what="the phone registered at the new edge")
        caller = caller_number()
        scenario = info_caller(cluster.workdir, f"again-{caller}", [Press("1", 2.0)],
                               hang_up_after=4)
        call = await SippCall(scenario, "121", cluster.sip_target, cluster.workdir,
                              caller).start()
        try:
            result = await call.finished(90)
        finally:
            await call.stop()
        assert result.ok, result.errors or result.output
        async with admin_client(cluster) as api:
            record = await call_record(api, caller)
        assert (record["agent"], record["outcome"]) == (agent, "answered"), record
