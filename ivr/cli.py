"""The ``ivr`` command: ``ivr run`` starts everything; the other verbs run one part."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ivr.logs import setup_logging
from ivr.secrets import load_settings

if TYPE_CHECKING:
    from ivr.acd.agents import Agents
    from ivr.acd.core import Acd

log = logging.getLogger("ivr")


def _as_cluster() -> None:
    """From here on, this process sees the settings of the cluster's own processes."""
    import os

    from ivr.cluster.layout import cluster_settings, shared_env

    os.environ.update(shared_env(cluster_settings(load_settings())))


def _run(_: argparse.Namespace) -> int:
    from ivr.stack import run_stack

    asyncio.run(run_stack(load_settings()))
    return 0


def _cluster(_: argparse.Namespace) -> int:
    from ivr.cluster.edge import EdgeSetupError
    from ivr.cluster.postgres import PostgresSetupError
    from ivr.cluster.stack import ClusterStack
    from ivr.stack import run_stack

    settings = load_settings()  # the cluster's: see main()
    try:
        asyncio.run(run_stack(settings, ClusterStack(settings)))
    except (EdgeSetupError, PostgresSetupError) as exc:  # a setting to fix: say which
        print(f"ivr cluster: {exc}", file=sys.stderr)
        return 2
    return 0


def _node(args: argparse.Namespace) -> int:
    from ivr.cluster.edge import EdgeRpcError
    from ivr.cluster.nodes import NodeError, list_nodes, set_drained

    settings = load_settings()
    try:
        if args.action == "list":
            rows = asyncio.run(list_nodes(settings))
        else:
            rows = [asyncio.run(set_drained(settings, args.node, args.action == "drain",
                                            force=args.force))]
    except (NodeError, EdgeRpcError) as exc:
        print(f"refused: {exc}")
        return 1
    for row in rows:
        calls = "?" if row.calls is None else str(row.calls)
        print(f"{row.node_id:<8} {row.state:<8} {calls:>4} channels   {row.uri}")
    return 0


def _controller(_: argparse.Namespace) -> int:
    from callbot.recognizers import RecognizerError
    from ivr.controller.app import run_controller

    try:
        asyncio.run(run_controller(load_settings()))
    except RecognizerError as exc:  # a setting to fix, not a crash: say which
        print(f"ivr controller: the callbot cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def _api(_: argparse.Namespace) -> int:
    import uvicorn

    from ivr.api.app import create_app

    settings = load_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port,
                log_level=settings.log_level.lower(), access_log=False)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from ivr.stack import prepare_files, publish_dialplan

    settings = load_settings()
    if args.cluster:  # every node's Asterisk and the edge's Kamailio (see main())
        from ivr.cluster.edge import EdgeSetupError
        from ivr.cluster.stack import prepare_cluster

        try:
            asyncio.run(prepare_cluster(settings))
        except EdgeSetupError as exc:  # a setting to fix: say which
            print(f"ivr --cluster prepare: {exc}", file=sys.stderr)
            return 2
        return 0
    prepare_files(settings)
    asyncio.run(publish_dialplan(settings))
    return 0


def _dialplan_check(_: argparse.Namespace) -> int:
    from ivr.dialplan.versions import check_files

    settings = load_settings()
    result = check_files(settings)
    for problem in result.problems:
        print(problem)
    for warning in result.warnings:
        print(f"warning: {warning}")
    if not result.ok:
        print(f"dialplan refused: {len(result.problems)} problem(s) in {settings.dialplans_path}")
        return 1
    print(f"dialplan ok: {settings.dialplans_path}")
    return 0


def _dialplan_publish(args: argparse.Namespace) -> int:
    from ivr.dialplan.versions import DialplanRefused, publish_from_files

    settings = load_settings()
    try:
        published = asyncio.run(publish_from_files(settings, author=args.author, note=args.note))
    except DialplanRefused as refused:
        for problem in refused.problems:
            print(problem)
        print("dialplan refused: the live version stays live")
        return 1
    for warning in published.warnings:
        print(f"warning: {warning}")
    state = "published" if published.created else "unchanged, still live"
    print(f"dialplan version {published.dialplan.version}: {state}")
    return 0


async def _with_agents(action: Callable[[Agents, Acd], Awaitable[int]]) -> int:
    from ivr.acd.agents import open_agents

    async with open_agents(load_settings()) as agents:
        return await action(agents, agents.acd)


def _agent(args: argparse.Namespace) -> int:
    from ivr.acd.agents import AgentError

    async def run(agents: Agents, acd: Acd) -> int:
        if args.action == "add":
            skills = {}
            for item in args.skills.split(","):
                topic, _, level = item.partition("=")
                skills[topic.strip()] = int(level or 3)
            languages = [code.strip() for code in args.languages.split(",") if code.strip()]
            made = await agents.create(args.username, args.name or args.username, skills,
                                       languages)
            print(f"agent {made.username} created; SIP password (shown once): "
                  f"{made.sip_password}")
        elif args.action == "remove":
            await agents.remove(args.username)
            print(f"agent {args.username} removed")
        elif args.action == "list":
            for agent in await agents.list():
                live = await acd.agent(agent.username)
                skill_text = " ".join(f"{t}={p}" for t, p in agent.skills.items())
                registered = "registered" if live.get("registered") == "1" else "unregistered"
                print(f"{agent.username:<16} {live.get('state', '?'):<11} {registered:<13} "
                      f"{','.join(agent.languages):<12} {skill_text}")
        else:
            if args.state == "paused":
                done = await acd.pause(args.username, args.reason or "break")
            elif args.state == "available":
                done = await acd.log_in(args.username) or await acd.ready(args.username)
            elif args.state == "logged_out":
                done = await acd.log_out(args.username)
            else:
                print(f"unknown state {args.state!r}: available, paused or logged_out")
                return 2
            state = (await acd.agent(args.username)).get("state")
            print(f"agent {args.username}: {state}" + ("" if done else " (unchanged)"))
            return 0 if done else 1
        return 0

    try:
        return asyncio.run(_with_agents(run))
    except (AgentError, ValueError) as exc:
        print(f"refused: {exc}")
        return 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ivr", description="The 120 telephony and IVR server.")
    parser.add_argument("--cluster", action="store_true",
                        help="act on the cluster of `ivr cluster` (its data, Redis and SQL), "
                        "e.g. ivr --cluster agent add ...")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for name, handler, text in (
        ("run", _run, "start everything in the foreground (Redis, Asterisk, controller, API)"),
        ("controller", _controller, "run the ARI controller only"),
        ("api", _api, "run the HTTP API only"),
        ("prepare", _prepare, "render Asterisk's configuration and publish the dialplan "
         "(ivr --cluster prepare: every node's and the edge's, checked by kamailio -c)"),
    ):
        verbs.add_parser(name, help=text).set_defaults(handler=handler)
    dialplan = verbs.add_parser("dialplan", help="check or publish dialplans/").add_subparsers(
        dest="action", required=True)
    dialplan.add_parser("check", help="check dialplans/ and the prompts; exit 1 if refused"
                        ).set_defaults(handler=_dialplan_check)
    publish = dialplan.add_parser("publish", help="check, render the prompts, make it live")
    publish.add_argument("--author", default="")
    publish.add_argument("--note", default="")
    publish.set_defaults(handler=_dialplan_publish)
    agent = verbs.add_parser("agent", help="agents: add, remove, list, state").add_subparsers(
        dest="action", required=True)
    add = agent.add_parser("add", help="create an agent and their SIP account")
    add.add_argument("username")
    add.add_argument("--name", default="")
    add.add_argument("--skills", required=True, help="topic=proficiency,... e.g. water=5,traffic=3")
    add.add_argument("--languages", default="ko", help="e.g. ko,en")
    agent.add_parser("remove").add_argument("username")
    agent.add_parser("list")
    state = agent.add_parser("state", help="available, paused or logged_out")
    state.add_argument("username")
    state.add_argument("state")
    state.add_argument("--reason", default="")
    for agent_verb in agent.choices.values():
        agent_verb.set_defaults(handler=_agent)
    verbs.add_parser("cluster", help="start a cluster on this machine: the SIP edge, "
                     "Asterisk nodes, Redis, SQL, controllers, API").set_defaults(handler=_cluster)
    node = verbs.add_parser("node", help="the cluster's nodes: list, drain, undrain"
                            ).add_subparsers(dest="action", required=True)
    node.add_parser("list", help="each node's state at the edge and its channels")
    for verb, text in (("drain", "no new calls; the node finishes those it has"),
                       ("undrain", "the node takes new calls again")):
        change = node.add_parser(verb, help=text)
        change.add_argument("node", help="node1, node2, ...")
        change.add_argument("--force", action="store_true",
                            help="drain even the last node that is up")
    for node_verb in node.choices.values():
        node_verb.set_defaults(handler=_node, force=False)
    args = parser.parse_args(argv)
    if args.cluster or args.verb in ("cluster", "node"):
        _as_cluster()
    setup_logging(load_settings().log_level)
    try:
        sys.exit(args.handler(args))
    except KeyboardInterrupt:
        sys.exit(130)
