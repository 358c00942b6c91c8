"""The supervisors' wallboard: the figures now (``GET /api/wallboard``), and the same pushed
over a WebSocket every couple of seconds (``/api/wallboard/live``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect, status

from ivr.api.auth import Principal, read_token, require_roles
from ivr.models import Role
from ivr.wallboard import live_calls, snapshot

log = logging.getLogger(__name__)

router = APIRouter(tags=["wallboard"])

Supervisor = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR, Role.ADMIN))]
PUSH_SECONDS = 2.0
SESSION_COOKIE = "ivr_session"


@router.get("/api/wallboard", summary="Queues, agents, the callbot and today's calls, now")
async def wallboard(request: Request, principal: Supervisor) -> dict[str, Any]:
    return await snapshot(request.app.state.redis, request.app.state.sessions)


@router.get("/api/calls/live", summary="Every call in progress")
async def calls_in_progress(request: Request, principal: Supervisor) -> list[dict[str, Any]]:
    return await live_calls(request.app.state.redis)


@router.websocket("/api/wallboard/live")
async def wallboard_live(websocket: WebSocket) -> None:
    """Signed in by the page's session cookie, or ``?token=`` (a bearer token)."""
    token = websocket.query_params.get("token") or websocket.cookies.get(SESSION_COOKIE)
    try:
        principal = read_token(token or "", websocket.app.state.settings.jwt_secret())
    except (jwt.PyJWTError, KeyError, ValueError):
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="not signed in")
        return
    if principal.role not in (Role.SUPERVISOR, Role.ADMIN):
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION,
                              reason="supervisors and admins only")
        return
    await websocket.accept()
    state = websocket.app.state
    try:
        while True:
            await websocket.send_json(await snapshot(state.redis, state.sessions))
            await asyncio.sleep(PUSH_SECONDS)
    except WebSocketDisconnect:
        return
    except Exception as exc:  # Redis away, say: the page reconnects
        log.warning("wallboard push stopped: %s", exc)
        await websocket.close(code=status.WS_1011_INTERNAL_ERROR)
