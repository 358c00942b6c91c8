"""Live calls: what agents and supervisors see of a call in progress and do to it (transfers).

Orders go to the controller that runs the call, over Redis pub/sub; they are carried out in
the call's own event queue, so they never race with its ARI events.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from ivr.acd.core import Acd, AgentState
from ivr.api.auth import Principal, require_roles
from ivr.ari import AriError
from ivr.controller.base import TRANSFER, TRANSFER_CANCEL, TRANSFER_COMPLETE
from ivr.controller.listen import LISTEN
from ivr.controller.state import CallState
from ivr.controller.store import CallData, CallStore, commands_channel
from ivr.controller.transfers import CONSULTING
from ivr.models import Role

router = APIRouter(prefix="/api/calls/live", tags=["live calls"])

AnyRole = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.SUPERVISOR, Role.ADMIN))]
Supervisor = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR, Role.ADMIN))]


class LiveCall(BaseModel):
    channel_id: str
    record_id: str
    caller: str
    did: str
    line: str | None
    district: str | None
    language: str
    state: str
    queue: str
    agent: str
    path: list[str]
    consultation: str = Field(description="the consultation going on: target, or ''")
    consultation_answered: bool
    bot: dict[str, Any] = Field(description="what the callbot learnt: transcript, question "
                                "type, confidence, why it handed over")


class TransferIn(BaseModel):
    to: Literal["queue", "agent", "number"]
    mode: Literal["blind", "consult"] = "blind"
    queue: str | None = Field(default=None, description="topic:language, e.g. water:en")
    agent: str | None = Field(default=None, description="the username of another agent")
    number: str | None = Field(default=None, description="a department's number (allowed list)")


class TransferOut(BaseModel):
    channel_id: str
    to: str
    value: str
    mode: str
    status: str


async def _call(request: Request, channel_id: str) -> CallData:
    call = await CallStore(request.app.state.redis).load(channel_id)
    if call is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no live call on that channel")
    return call


async def _order(request: Request, call: CallData, order: dict[str, Any]) -> None:
    order = {**order, "channel": {"id": call.channel_id}}
    delivered = await request.app.state.redis.publish(commands_channel(call.controller),
                                                      json.dumps(order))
    if not delivered:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the controller of this call is not listening")


def _check_own_call(principal: Principal, call: CallData) -> None:
    if call.state != CallState.TALKING or not call.agent:
        raise HTTPException(status.HTTP_409_CONFLICT, "no call with an agent on that channel")
    if principal.role == Role.AGENT and principal.username != call.agent:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the agent on the call transfers it")


@router.get("/{channel_id}", response_model=LiveCall, summary="A call in progress")
async def live_call(request: Request, channel_id: str, principal: AnyRole) -> LiveCall:
    call = await _call(request, channel_id)
    return LiveCall(
        channel_id=call.channel_id, record_id=call.record_id, caller=call.caller, did=call.did,
        line=call.line, district=call.district, language=call.language, state=call.state,
        queue=call.queue, agent=call.agent, path=call.path,
        consultation=call.consult_target, consultation_answered=call.step == CONSULTING,
        bot=call.bot.summary() if call.bot.topic else {})


async def _target(request: Request, call: CallData, body: TransferIn) -> str:
    """The transfer's target, checked: a known queue, a free agent, or an allowed number."""
    state = request.app.state
    plan = await state.dialplans.live()
    if body.to == "queue":
        topic, _, language = (body.queue or "").partition(":")
        if topic not in plan.topics or language not in plan.languages:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                                f"unknown queue {body.queue!r}: topic:language, e.g. water:en")
        return f"{topic}:{language}"
    if body.to == "agent":
        agent = body.agent or ""
        live = await Acd(state.redis).agent(agent)
        if not live:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent!r}")
        if agent == call.agent:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                                "the agent is already on the call")
        if live.get("state") != AgentState.AVAILABLE or live.get("registered") != "1":
            raise HTTPException(status.HTTP_409_CONFLICT,
                                f"agent {agent!r} is not available ({live.get('state')})")
        return agent
    number = body.number or ""
    if not plan.transfers.allows(number):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"number {number!r} is not allowed for transfers "
                            "(dialplans/transfers.yaml)")
    return number


@router.post("/{channel_id}/transfer", response_model=TransferOut, status_code=202,
             summary="Transfer a call an agent is talking on: blind, or consulting first")
async def transfer(request: Request, channel_id: str, body: TransferIn,
                   principal: AnyRole) -> TransferOut:
    call = await _call(request, channel_id)
    _check_own_call(principal, call)
    if call.consult_target:
        raise HTTPException(status.HTTP_409_CONFLICT, "a consultation is already going on")
    value = await _target(request, call, body)
    await _order(request, call, {"type": TRANSFER, "to": body.to, "value": value,
                                 "mode": body.mode, "by": principal.username})
    return TransferOut(channel_id=channel_id, to=body.to, value=value, mode=body.mode,
                       status="consulting" if body.mode == "consult" else "transferring")


async def _end_consultation(request: Request, channel_id: str, principal: Principal,
                            order: str, status_now: str) -> TransferOut:
    """Complete or cancel the consultation going on: the order goes to the call's
    controller, which carries it out (checks first, so a wrong moment changes nothing)."""
    call = await _call(request, channel_id)
    _check_own_call(principal, call)
    if order == TRANSFER_COMPLETE and call.step != CONSULTING:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            "no consultation with an answer on this call")
    if not call.consult_target:
        raise HTTPException(status.HTTP_409_CONFLICT, "no consultation on this call")
    await _order(request, call, {"type": order, "by": principal.username})
    to, _, value = call.consult_target.partition(":")
    return TransferOut(channel_id=channel_id, to=to, value=value, mode="consult",
                       status=status_now)


@router.post("/{channel_id}/transfer/complete", response_model=TransferOut, status_code=202,
             summary="After consulting: the other party takes the call, the agent leaves")
async def complete_transfer(request: Request, channel_id: str,
                            principal: AnyRole) -> TransferOut:
    return await _end_consultation(request, channel_id, principal, TRANSFER_COMPLETE,
                                   "transferring")


@router.post("/{channel_id}/transfer/cancel", response_model=TransferOut, status_code=202,
             summary="After consulting: no transfer, the agent goes back to the caller")
async def cancel_transfer(request: Request, channel_id: str,
                          principal: AnyRole) -> TransferOut:
    return await _end_consultation(request, channel_id, principal, TRANSFER_CANCEL,
                                   "cancelling")


class ListenIn(BaseModel):
    endpoint: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                          description="the SIP account (softphone) that listens, e.g. the "
                          "supervisor's own")


@router.post("/{channel_id}/listen", status_code=202,
             summary="Listen in on a call from a softphone (supervisors)")
async def listen_in(request: Request, channel_id: str, body: ListenIn,
                    principal: Supervisor) -> dict[str, str]:
    call = await _call(request, channel_id)
    if call.state != CallState.TALKING:
        raise HTTPException(status.HTTP_409_CONFLICT, "only a call with an agent is listened to")
    try:
        endpoint = await request.app.state.ari.request("GET",
                                                       f"/endpoints/PJSIP/{body.endpoint}")
    except AriError as exc:
        if exc.not_found:
            raise HTTPException(status.HTTP_404_NOT_FOUND,
                                f"no SIP account {body.endpoint!r}") from exc
        raise
    if endpoint.get("state") != "online":
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"the softphone of {body.endpoint!r} is not registered")
    await _order(request, call, {"type": LISTEN, "endpoint": body.endpoint,
                                 "by": principal.username})
    return {"channel_id": channel_id, "endpoint": body.endpoint, "status": "ringing"}
