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
    from ivr.stack import prepare_files

    prepare_files(load_settings())
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ivr", description="The 120 telephony and IVR server.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for name, handler, text in (
        ("run", _run, "start everything in the foreground (Redis, Asterisk, controller, API)"),
        ("controller", _controller, "run the ARI controller only"),
        ("api", _api, "run the HTTP API only"),
        ("prepare", _prepare, "render the prompts that changed and Asterisk's configuration"),
    ):
        verbs.add_parser(name, help=text).set_defaults(handler=handler)
    args = parser.parse_args(argv)
    setup_logging(load_settings().log_level)
    try:
        sys.exit(args.handler(args))
    except KeyboardInterrupt:
        sys.exit(130)
