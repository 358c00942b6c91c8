"""The supervisors' wallboard: a live call appears and leaves, pushed over a WebSocket; queue
figures come from the real queue; agents may not watch."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ivr.models import Role
from tests.conftest import Server, audio_for, call_record, caller_number, wait_for
from tests.support.sip import SippCall
from tests.support.users import signed_in


async def pushed(server: Server, token: str) -> dict[str, Any]:
    url = server.settings.api_base_url.replace("http", "ws") + f"/api/wallboard/live?token={token}"
    async with websockets.connect(url) as socket:
        return dict(json.loads(await socket.recv()))


async def test_a_live_call_appears_on_the_wallboard_and_leaves(
        server: Server, api: httpx.AsyncClient) -> None:
    token = api.headers["Authorization"].removeprefix("Bearer ")
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    await audio_for(call, 0.5)

    async def on_board() -> dict[str, Any] | None:
        board = await pushed(server, token)
        return next((c for c in board["live_calls"] if c["caller"] == caller), None)

    seen = await wait_for(on_board, 20, what="the call on the wallboard")
    assert seen["line"] == "main" and seen["state"] == "in_menu"
    listed = (await api.get("/api/calls/live")).json()
    assert any(c["caller"] == caller for c in listed)

    await call.rtp.press("4")  # welfare: nobody is logged in, the call ends
    assert (await call.finished()).ok
    await call_record(api, caller)

    async def gone() -> bool:
        return await on_board() is None

    await wait_for(gone, 20, what="the call gone from the wallboard")
    board = (await api.get("/api/wallboard")).json()
    assert {"queues", "agents", "agents_by_state", "bot", "today", "live_calls"} <= set(board)
    assert board["today"]["calls"] >= 1 and board["today"]["by_hour"]
    assert "welfare:ko" in board["queues"] or board["today"]["by_topic"].get("welfare")


async def test_agents_may_not_watch_the_wallboard(server: Server) -> None:
    async with signed_in(server, Role.AGENT) as agent:
        assert (await agent.get("/api/wallboard")).status_code == 403
        assert (await agent.get("/api/calls/live")).status_code == 403
        token = agent.headers["Authorization"].removeprefix("Bearer ")
        with pytest.raises((ConnectionClosed, InvalidStatus)):
            await pushed(server, token)
    with pytest.raises((ConnectionClosed, InvalidStatus)):
        await pushed(server, "not-a-token")
