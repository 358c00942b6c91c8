"""Agents through the API: admins create, change and remove them (with their SIP accounts in
Asterisk, made through ARI), supervisors watch the floor, and agents set their own state.

The SQL record, the PJSIP account and the Redis profile are kept by ``ivr.acd.agents.Agents``
(as ``ivr agent`` does); states change through the ACD's atomic steps, so an agent made
available here is offered calls by the next match.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from ivr.acd.agents import USERNAME, AgentError, Agents
from ivr.acd.core import Acd, AgentProfile, AgentState, acd_for, agent_key
from ivr.api.audit import record_change
from ivr.api.auth import Principal, require_roles
from ivr.api.errors import field_errors
from ivr.ari import AriError
from ivr.dialplan.model import Dialplan
from ivr.models import Agent, Role

router = APIRouter(prefix="/api/agents", tags=["agents"])

AnyRole = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.SUPERVISOR, Role.ADMIN))]
Staff = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SUPERVISOR))]
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
AgentRole = Annotated[Principal, Depends(require_roles(Role.AGENT))]

Proficiency = Annotated[int, Field(ge=1, le=5)]


class NewAgentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME.pattern, examples=["kim"],
                          description="the SIP user too: lower-case letters, digits, . _ -")
    name: str = Field(default="", max_length=128, examples=["Kim Example"],
                      description="shown to colleagues (default: the username)")
    skills: dict[str, Proficiency] = Field(min_length=1, examples=[{"water": 5, "traffic": 3}],
                                           description="topic -> proficiency 1-5")
    languages: list[str] = Field(min_length=1, examples=[["ko", "en"]])


class AgentChange(BaseModel):
    """What to change; what is left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=128)
    skills: dict[str, Proficiency] | None = Field(default=None, min_length=1)
    languages: list[str] | None = Field(default=None, min_length=1)


class StateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["available", "paused", "logged_out"]
    reason: str = Field(default="", max_length=64, examples=["lunch"],
                        description="why the agent pauses (default: break)")


class AgentOut(BaseModel):
    username: str
    name: str
    skills: dict[str, int]
    languages: list[str]
    state: str = Field(description="logged_out, available, reserved, on_call, wrap_up, paused")
    pause_reason: str
    since: datetime | None = Field(description="when the agent came to this state")
    registered: bool = Field(description="the softphone is registered (only then are calls "
                             "offered)")
    call: str = Field(default="", description="the channel of the call offered, talking or in "
                      "wrap-up (GET /api/calls/live/{channel} for its context)")


class NewAgentOut(BaseModel):
    username: str
    name: str
    skills: dict[str, int]
    languages: list[str]
    sip_password: str = Field(description="shown this once only: it is not kept")
    sip_server: str = Field(description="where the softphone registers (host:port)")
    sip_transport: str = "udp"


def _acd(request: Request) -> Acd:
    return acd_for(request.app.state.settings, request.app.state.redis)


def _agents(request: Request, acd: Acd) -> Agents:
    state = request.app.state
    settings = state.settings
    return Agents(state.sessions, state.ari, acd, settings.stasis_apps, settings.edge_address,
                  settings.agent_qualify_seconds)


def _out(agent: Agent, live: dict[str, str]) -> AgentOut:
    state = live.get("state", AgentState.LOGGED_OUT)
    since_ms = live.get("state_since_ms")
    return AgentOut(
        username=agent.username, name=agent.name, skills=agent.skills,
        languages=agent.languages, state=state,
        pause_reason=live.get("pause_reason", "") if state == AgentState.PAUSED else "",
        since=datetime.fromtimestamp(int(float(since_ms)) / 1000, UTC) if since_ms else None,
        registered=live.get("registered") == "1",
        call=live.get("call", "") if state in (AgentState.RESERVED, AgentState.ON_CALL,
                                               AgentState.WRAP_UP) else "")


def _sip_server(request: Request) -> str:
    settings = request.app.state.settings
    host = settings.sip_bind
    if host in ("0.0.0.0", "::", ""):
        # Listening on every address: the one the admin reached the API at is the best guess.
        host = request.url.hostname or host
    return f"[{host}]:{settings.sip_port}" if ":" in host else f"{host}:{settings.sip_port}"


async def _live_plan(request: Request) -> Dialplan:
    try:
        plan: Dialplan = await request.app.state.dialplans.live()
    except LookupError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return plan


async def _check(request: Request, skills: dict[str, int] | None,
                 languages: list[str] | None) -> None:
    """Skills and languages must be those of the live dialplan: the queues callers reach."""
    plan = await _live_plan(request)
    problems: list[tuple[Sequence[str | int], str]] = []
    for topic in skills or {}:
        if topic not in plan.topics:
            problems.append((("skills", topic), f"'{topic}' is not a topic of the live dialplan "
                             f"({', '.join(plan.topics)})"))
    for index, language in enumerate(languages or []):
        if language not in plan.languages:
            problems.append((("languages", index), f"'{language}' is not a language of the "
                             f"live dialplan ({', '.join(plan.languages)})"))
    if problems:
        raise field_errors(problems)


async def _agent(request: Request, username: str) -> Agent:
    async with request.app.state.sessions() as session:
        agent: Agent | None = await session.get(Agent, username)
    if agent is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {username!r}")
    return agent


async def _exists(request: Request, username: str) -> bool:
    async with request.app.state.sessions() as session:
        return await session.get(Agent, username) is not None


async def _live(acd: Acd, agent: Agent) -> dict[str, str]:
    """The agent's state in Redis; their profile is put back if Redis lost it (the
    controller's sync does the same at its start)."""
    live = await acd.agent(agent.username)
    if not live:
        await acd.save_agent(AgentProfile(agent.username, agent.name, agent.skills,
                                          agent.languages))
        live = await acd.agent(agent.username)
    return live


@router.get("", response_model=list[AgentOut],
            summary="Every agent with their state (admins, supervisors)")
async def list_agents(request: Request, principal: Staff) -> list[AgentOut]:
    acd = _acd(request)
    agents = await _agents(request, acd).list()
    async with request.app.state.redis.pipeline(transaction=False) as pipe:
        for agent in agents:
            pipe.hgetall(agent_key(agent.username))
        lives: list[dict[str, str]] = await pipe.execute()
    return [_out(agent, live) for agent, live in zip(agents, lives, strict=True)]


@router.get("/me", response_model=AgentOut, summary="The signed-in agent's own state")
async def my_state(request: Request, principal: AgentRole) -> AgentOut:
    agent = await _agent(request, principal.username)
    return _out(agent, await _live(_acd(request), agent))


@router.post("", response_model=NewAgentOut, status_code=status.HTTP_201_CREATED,
             summary="Create an agent and their SIP account (admin); the password is shown once")
async def create_agent(request: Request, body: NewAgentIn, principal: Admin) -> NewAgentOut:
    languages = list(dict.fromkeys(body.languages))
    await _check(request, body.skills, languages)
    name = body.name or body.username
    acd = _acd(request)
    agents = _agents(request, acd)
    exists = HTTPException(status.HTTP_409_CONFLICT, f"agent {body.username!r} exists already")
    if await _exists(request, body.username):
        raise exists
    try:
        made = await agents.create(body.username, name, body.skills, languages)
    except AgentError as exc:
        if await _exists(request, body.username):  # made by another admin at the same moment
            raise exists from exc
        raise field_errors([(("username",), str(exc))]) from exc
    except AriError as exc:
        # The password is shown only now: an account Asterisk did not take is removed, so
        # that the admin can simply try again.
        try:
            await agents.remove(body.username)
        except (AgentError, AriError):
            pass
        raise HTTPException(status.HTTP_502_BAD_GATEWAY,
                            f"Asterisk did not take the SIP account: {exc}") from exc
    await record_change(request, principal, "agent.create", body.username,
                        {"name": name, "skills": body.skills, "languages": languages})
    return NewAgentOut(username=made.username, name=name, skills=body.skills,
                       languages=languages, sip_password=made.sip_password,
                       sip_server=_sip_server(request))


@router.patch("/{username}", response_model=AgentOut,
              summary="Change an agent's name, skills or languages (admin)")
async def change_agent(request: Request, username: str, body: AgentChange,
                       principal: Admin) -> AgentOut:
    languages = list(dict.fromkeys(body.languages)) if body.languages is not None else None
    await _check(request, body.skills, languages)
    async with request.app.state.sessions() as session, session.begin():
        agent = await session.get(Agent, username)
        if agent is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {username!r}")
        before: dict[str, Any] = {"name": agent.name, "skills": agent.skills,
                                  "languages": agent.languages}
        # New objects, not changes in place: SQLAlchemy sees a JSON column change that way.
        if body.name is not None:
            agent.name = body.name
        if body.skills is not None:
            agent.skills = dict(body.skills)
        if languages is not None:
            agent.languages = languages
        after: dict[str, Any] = {"name": agent.name, "skills": agent.skills,
                                 "languages": agent.languages}
    changes = {field: {"from": before[field], "to": after[field]}
               for field in before if before[field] != after[field]}
    acd = _acd(request)
    if changes:
        # Re-indexed at once: the next match uses the new skills, whatever the agent's state.
        await acd.save_agent(AgentProfile(agent.username, agent.name, agent.skills,
                                          agent.languages))
    if "name" in changes:
        # Only the caller ID changes; the rest of the endpoint stays as it is.
        try:
            await request.app.state.ari.request(
                "PUT", f"/asterisk/config/dynamic/res_pjsip/endpoint/{username}",
                body={"fields": [{"attribute": "callerid",
                                  "value": f"{agent.name} <{username}>"}]})
        except AriError as exc:
            raise HTTPException(status.HTTP_502_BAD_GATEWAY,
                                f"saved, but Asterisk did not take the new name: {exc}"
                                ) from exc
        await _agents(request, acd).announce(username)  # the other nodes' Asterisk too
    if changes:
        await record_change(request, principal, "agent.update", username, changes)
    return _out(agent, await _live(acd, agent))


@router.delete("/{username}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove an agent and their SIP account (admin)")
async def remove_agent(request: Request, username: str, principal: Admin) -> Response:
    try:
        await _agents(request, _acd(request)).remove(username)
    except AgentError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    await record_change(request, principal, "agent.delete", username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{username}/state", response_model=AgentOut,
             summary="Log in, pause or log out an agent (the agent, a supervisor or an admin)")
async def set_state(request: Request, username: str, body: StateIn,
                    principal: AnyRole) -> AgentOut:
    if principal.role == Role.AGENT and principal.username != username:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "an agent changes only their own state")
    agent = await _agent(request, username)
    acd = _acd(request)
    before = (await _live(acd, agent)).get("state", "")
    reason = (body.reason or "break") if body.state == "paused" else ""
    if body.state == "paused":
        done = await acd.pause(username, reason)
    elif body.state == "available":
        done = await acd.log_in(username) or await acd.ready(username)
    else:
        done = await acd.log_out(username)
    live = await acd.agent(username)
    if not done and live.get("state") != body.state:
        # On a call, or offered one: the ACD moves them on when the call allows it.
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"agent {username!r} is {live.get('state')}: cannot be "
                            f"{body.state} now")
    if done:
        await record_change(request, principal, "agent.state", username,
                            {"from": before, "to": body.state, "reason": reason})
    return _out(agent, live)
