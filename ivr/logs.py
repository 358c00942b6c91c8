"""Readable, one-line logs for every process of the server."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    # Quiet the per-request chatter of the HTTP libraries.
    for noisy in ("httpx", "httpcore", "websockets", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
