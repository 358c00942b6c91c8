"""Live calls: what agents and supervisors do to a call in progress (transfers, for now)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from ivr.api.auth import Principal, require_roles
from ivr.controller.call import TRANSFER
from ivr.controller.state import CallState
from ivr.controller.store import COMMANDS, CallStore
from ivr.models import Role

router = APIRouter(prefix="/api/calls/live", tags=["live calls"])


class TransferIn(BaseModel):
    to: Literal["queue", "number"]
    queue: str | None = Field(default=None, description="topic:language, e.g. water:en")
    number: str | None = Field(default=None, description="a department's number (allowed list)")


class TransferOut(BaseModel):
    channel_id: str
    to: str
    value: str
    status: str = "transferring"


@router.post("/{channel_id}/transfer", response_model=TransferOut, status_code=202,
             summary="Blind transfer of a call an agent is talking on")
async def transfer(
    request: Request,
    channel_id: str,
    body: TransferIn,
    principal: Annotated[Principal, Depends(require_roles(Role.AGENT, Role.SUPERVISOR,
                                                          Role.ADMIN))],
) -> TransferOut:
    state = request.app.state
    call = await CallStore(state.redis, state.settings.node_id).load(channel_id)
    if call is None or call.state != CallState.TALKING or not call.agent:
        raise HTTPException(status.HTTP_409_CONFLICT, "no call with an agent on that channel")
    if principal.role == Role.AGENT and principal.username != call.agent:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the agent on the call transfers it")
    plan = await state.dialplans.live()
    if body.to == "queue":
        topic, _, language = (body.queue or "").partition(":")
        if topic not in plan.topics or language not in plan.languages:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                                f"unknown queue {body.queue!r}: topic:language, e.g. water:en")
        value = f"{topic}:{language}"
    else:
        value = body.number or ""
        if not plan.transfers.allows(value):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"number {value!r} is not allowed for transfers "
                                "(dialplans/transfers.yaml)")
    order = {"type": TRANSFER, "channel": {"id": channel_id}, "to": body.to, "value": value,
             "by": principal.username}
    if not await state.redis.publish(COMMANDS, json.dumps(order)):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no controller is listening")
    return TransferOut(channel_id=channel_id, to=body.to, value=value)
