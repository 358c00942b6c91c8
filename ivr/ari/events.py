"""The events half of ARI: one WebSocket, kept open for as long as the controller runs.

When the socket closes or cannot be opened, it is opened again with a growing pause (backoff),
and ``on_connected`` runs after each (re)connection so that the controller can rebuild its view
of the calls that went on while it was not listening.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import websockets

log = logging.getLogger(__name__)

Event = dict[str, Any]


class EventStream:
    def __init__(
        self,
        base_url: str,
        app: str,
        user: str,
        password: str,
        on_event: Callable[[Event], Awaitable[None]],
        on_connected: Callable[[], Awaitable[None]],
        min_backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        query = urlencode({"app": app, "api_key": f"{user}:{password}", "subscribeAll": "false"})
        ws_base = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self._url = f"{ws_base}/ari/events?{query}"
        self._safe_url = f"{ws_base}/ari/events?app={app}"
        self._on_event = on_event
        self._on_connected = on_connected
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.connections = 0

    async def run(self) -> None:
        """Listen forever; returns only when cancelled."""
        backoff = self._min_backoff
        while True:
            try:
                async with websockets.connect(
                    self._url, ping_interval=10, ping_timeout=10, max_size=None
                ) as ws:
                    self.connections += 1
                    log.info("ARI events connected (%s, connection %d)", self._safe_url,
                             self.connections)
                    self.connected.set()
                    backoff = self._min_backoff
                    await self._on_connected()
                    async for message in ws:
                        await self._dispatch(message)
                log.warning("ARI events socket closed by Asterisk; reconnecting")
            except asyncio.CancelledError:
                raise
            except (OSError, websockets.WebSocketException) as exc:
                log.warning("ARI events unavailable (%s); retrying in %.1f s", exc, backoff)
            except Exception:
                log.exception("ARI events loop failed; retrying in %.1f s", backoff)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _dispatch(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            log.warning("ignoring a malformed ARI event: %.200r", message)
            return
        await self._on_event(event)
