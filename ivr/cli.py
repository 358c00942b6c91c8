"""The ``ivr`` command: ``ivr run`` starts everything; the other verbs run one part."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ivr.logs import setup_logging
from ivr.secrets import load_settings

log = logging.getLogger("ivr")


def _run(_: argparse.Namespace) -> int:
    from ivr.stack import run_stack

    asyncio.run(run_stack(load_settings()))
    return 0


def _controller(_: argparse.Namespace) -> int:
    from ivr.controller.app import run_controller

    asyncio.run(run_controller(load_settings()))
    return 0


def _api(_: argparse.Namespace) -> int:
    import uvicorn

    from ivr.api.app import create_app

    settings = load_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port,
                log_level=settings.log_level.lower(), access_log=False)
    return 0


def _prepare(_: argparse.Namespace) -> int:
    from ivr.stack import prepare_files, publish_dialplan

    settings = load_settings()
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ivr", description="The 120 telephony and IVR server.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for name, handler, text in (
        ("run", _run, "start everything in the foreground (Redis, Asterisk, controller, API)"),
        ("controller", _controller, "run the ARI controller only"),
        ("api", _api, "run the HTTP API only"),
        ("prepare", _prepare, "render Asterisk's configuration and publish the dialplan"),
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
    args = parser.parse_args(argv)
    setup_logging(load_settings().log_level)
    try:
        sys.exit(args.handler(args))
    except KeyboardInterrupt:
        sys.exit(130)
