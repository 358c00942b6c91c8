"""A thin, typed async client for the Asterisk REST Interface (the REST half).

Every call has a timeout and turns a failure into an :class:`AriError` that says which request
failed and why, so that one call's error can be logged and handled without guessing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import aiohttp

Json = dict[str, Any]


class AriError(Exception):
    """A failed ARI request: the method, path, HTTP status (0 when unreachable) and reason."""

    def __init__(self, method: str, path: str, status: int, reason: str) -> None:
        super().__init__(f"ARI {method} {path} failed: {status or 'unreachable'} {reason}")
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404


class ChannelGone(AriError):
    """A channel hung up just before it was to be bridged. Its hang-up event is on its way to
    the call's queue and settles the call, so whoever meets this only stops."""


# addChannel's answers when a channel hung up a moment ago: 400 "Channel not found",
# 422 "Channel not in Stasis application" (its StasisEnd is on its way).
CHANNEL_LEFT = (400, 422)


@contextmanager
def unless_gone() -> Iterator[None]:
    """Ignore ARI's 404: the channel, bridge or playback is gone already, as was wanted."""
    try:
        yield
    except AriError as exc:
        if not exc.not_found:
            raise


class AriClient:
    """REST calls to one Asterisk. Use as ``async with AriClient(...) as ari``."""

    def __init__(self, base_url: str, user: str, password: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.password = password
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None  # made in the event loop, when used
        # Called as each request goes out (the controller times its reactions with it).
        self.on_request: Callable[[], None] | None = None

    async def __aenter__(self) -> AriClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx: a call makes dozens of requests, and aiohttp costs the
        # controller a fraction of the CPU per request (measured with `make bench`).
        if self._session is None or self._session.closed:
            credentials = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            self._session = aiohttp.ClientSession(
                base_url=f"{self.base_url}/ari/",
                headers={"Authorization": f"Basic {credentials}"}, timeout=self._timeout)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Json | None = None,
    ) -> Any:
        if self.on_request is not None:
            self.on_request()
        query = {key: str(value) for key, value in (params or {}).items()}
        try:
            async with self._http().request(method, path.lstrip("/"), params=query,
                                            json=body) as response:
                status, content = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AriError(method, path, 0, f"{type(exc).__name__}: {exc}") from exc
        if status >= 400:
            text = content.decode(errors="replace")
            try:
                reason = str(json.loads(text).get("message", text))
            except (ValueError, AttributeError):
                reason = text.strip()[:200]
            raise AriError(method, path, status, reason)
        if status == 204 or not content:
            return None
        return json.loads(content)

    # --- Asterisk ---------------------------------------------------------------------------

    async def asterisk_info(self) -> Json:
        result: Json = await self.request("GET", "/asterisk/info")
        return result

    async def ping(self) -> Json:
        result: Json = await self.request("GET", "/asterisk/ping")
        return result

    async def application(self, name: str) -> Json:
        result: Json = await self.request("GET", f"/applications/{name}")
        return result

    async def allow_events(self, app: str, types: Sequence[str]) -> None:
        """Only these event types reach the application: Asterisk sends the others (variables
        set, dialplan steps, bridge moves...) to nobody instead of to a controller that
        ignores them."""
        await self.request("PUT", f"/applications/{app}/eventFilter",
                           body={"allowed": [{"type": kind} for kind in types]})

    # --- Channels ---------------------------------------------------------------------------

    async def channels(self) -> list[Json]:
        result: list[Json] = await self.request("GET", "/channels")
        return result

    async def channel(self, channel_id: str) -> Json:
        result: Json = await self.request("GET", f"/channels/{channel_id}")
        return result

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/answer")

    async def ring(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/ring")

    async def progress(self, channel_id: str) -> None:
        """Send 183 Session Progress, so that early media (an announcement) reaches the caller."""
        await self.request("POST", f"/channels/{channel_id}/progress")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        """Hang up; ``reason`` is ARI's name of the cause (normal, busy, unallocated, ...)."""
        await self.request("DELETE", f"/channels/{channel_id}", params={"reason": reason})

    async def play(
        self,
        channel_id: str,
        media: str | Sequence[str],
        playback_id: str | None = None,
        lang: str | None = None,
    ) -> Json:
        """Start playing one or several media URIs (``sound:/path/without/extension``)."""
        # ARI takes several media as one comma-separated value (a repeated key keeps the last).
        params: dict[str, Any] = {"media": media if isinstance(media, str) else ",".join(media)}
        if lang:
            params["lang"] = lang
        path = f"/channels/{channel_id}/play"
        if playback_id:
            path = f"{path}/{playback_id}"
        result: Json = await self.request("POST", path, params=params)
        return result

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        await self.request(
            "POST", f"/channels/{channel_id}/variable", params={"variable": name, "value": value}
        )

    # --- Playbacks and bridges --------------------------------------------------------------

    async def playback(self, playback_id: str) -> Json:
        result: Json = await self.request("GET", f"/playbacks/{playback_id}")
        return result

    async def stop_playback(self, playback_id: str) -> None:
        await self.request("DELETE", f"/playbacks/{playback_id}")

    async def bridges(self) -> list[Json]:
        result: list[Json] = await self.request("GET", "/bridges")
        return result

    async def create_bridge(self, name: str, bridge_type: str = "mixing") -> Json:
        result: Json = await self.request("POST", "/bridges",
                                          params={"type": bridge_type, "name": name})
        return result

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self.request("DELETE", f"/bridges/{bridge_id}")

    async def bridge_channels(self, name: str, channels: Sequence[str]) -> str:
        """A new mixing bridge with these channels in it, or none at all: if a channel cannot
        join, the bridge is removed again and :class:`ChannelGone` says a channel has left."""
        bridge_id = str((await self.create_bridge(name))["id"])
        try:
            await self.request("POST", f"/bridges/{bridge_id}/addChannel",
                               params={"channel": ",".join(channels)})
        except AriError as exc:
            with unless_gone():
                await self.destroy_bridge(bridge_id)
            if exc.status in CHANNEL_LEFT:
                raise ChannelGone(exc.method, exc.path, exc.status, exc.reason) from exc
            raise
        return bridge_id
