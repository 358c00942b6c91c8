"""Agents' accounts: the record in SQL, the SIP account in Asterisk, the profile in Redis.

Creating an agent makes their PJSIP endpoint, auth and AOR through ARI's dynamic configuration
(kept in Asterisk's database, see asterisk/templates/sorcery.conf): no Asterisk file is edited
and nothing restarts. ``sync`` puts every agent of SQL back into Asterisk and Redis, at each
start of the controller, so SQL stays the one record of who the agents are.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ivr.acd.core import Acd, AgentProfile, acd_for
from ivr.ari import AriClient, unless_gone
from ivr.db import create_engine, init_schema, sessionmaker
from ivr.models import Agent
from ivr.redis_client import connect_redis
from ivr.settings import Settings

log = logging.getLogger(__name__)

REALM = "asterisk"  # PJSIP's default realm, which softphones are challenged with
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
AGENT_CONTEXT = "agents"  # what an agent's phone dials lands here (transfers: later)
AGENTS_CHANGED = "ivr:agents:changed"  # Redis channel: an agent's user name, when it changed


class AgentError(Exception):
    """An agent that cannot be made or found, with the reason."""


@dataclass(frozen=True)
class NewAgent:
    username: str
    sip_password: str  # shown once


def sip_digest(username: str, password: str) -> str:
    # MD5 is what SIP digest authentication itself uses (RFC 2617); no other hash fits here.
    return hashlib.md5(f"{username}:{REALM}:{password}".encode()).hexdigest()


def _fields(values: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    return {"fields": [{"attribute": key, "value": value} for key, value in values.items()]}


class Agents:
    """``edge_address``: in a cluster, agents register to the SIP edge, not to Asterisk: each
    node's account then reaches the phone through the edge and checks it is there every
    ``qualify_seconds`` (the edge checks the password)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ari: AriClient,
                 acd: Acd, apps: list[str], edge_address: str = "",
                 qualify_seconds: int = 10) -> None:
        self._sessions = sessions
        self.ari = ari
        self.acd = acd
        self._apps = apps  # the Stasis apps that hear agents' registrations
        self._edge_address = edge_address
        self._qualify_seconds = qualify_seconds

    async def create(self, username: str, name: str, skills: dict[str, int],
                     languages: list[str]) -> NewAgent:
        if not USERNAME.match(username):
            raise AgentError(f"user name {username!r}: lower-case letters, digits, . _ - "
                             "(2-63 characters)")
        profile = AgentProfile(username, name, skills, languages)  # checks proficiencies
        if not languages:
            raise AgentError("an agent speaks at least one language")
        password = secrets.token_urlsafe(18)
        agent = Agent(username=username, name=name, skills=skills, languages=languages,
                      sip_digest=sip_digest(username, password))
        async with self._sessions() as session, session.begin():
            if await session.get(Agent, username) is not None:
                raise AgentError(f"agent {username!r} exists already")
            session.add(agent)
        await self._provision(agent)
        await self.acd.save_agent(profile)
        await self._watch_registration(username)
        await self.announce(username)
        log.info("agent %s created (%s)", username, ", ".join(
            f"{topic} {level}" for topic, level in skills.items()))
        return NewAgent(username, password)

    async def remove(self, username: str) -> None:
        async with self._sessions() as session, session.begin():
            agent = await session.get(Agent, username)
            if agent is None:
                raise AgentError(f"no agent {username!r}")
            await session.delete(agent)
        await self._unprovision(username)
        await self.acd.remove_agent(username)
        await self.announce(username)
        log.info("agent %s removed", username)

    async def announce(self, username: str) -> None:
        """In a cluster, tell every controller this agent changed: each brings its own
        Asterisk in line (this process reached one node's only). One node has one Asterisk,
        which this process has just changed itself."""
        if self._edge_address:
            await self.acd.redis.publish(AGENTS_CHANGED, username)

    async def refresh(self, username: str) -> None:
        """The agent changed elsewhere: this Asterisk's account follows SQL."""
        async with self._sessions() as session:
            agent = await session.get(Agent, username)
        if agent is None:
            await self._unprovision(username)
            return
        await self._provision(agent)
        await self._watch_registration(username)

    async def _unprovision(self, username: str) -> None:
        for object_type in ("endpoint", "aor", "auth"):
            with unless_gone():
                await self.ari.request(
                    "DELETE", f"/asterisk/config/dynamic/res_pjsip/{object_type}/{username}")

    async def list(self) -> list[Agent]:
        async with self._sessions() as session:
            return list(await session.scalars(select(Agent).order_by(Agent.username)))

    async def sync(self) -> int:
        """Every agent of SQL into Asterisk and Redis, with their registration state."""
        agents = await self.list()
        for agent in agents:
            await self._provision(agent)
            await self.acd.save_agent(
                AgentProfile(agent.username, agent.name, agent.skills, agent.languages))
            endpoint = await self.ari.request("GET", f"/endpoints/PJSIP/{agent.username}")
            await self.acd.set_registered(agent.username, endpoint.get("state") == "online")
            await self._watch_registration(agent.username)
        return len(agents)

    async def _watch_registration(self, username: str) -> None:
        """The controller hears DeviceStateChanged when the agent's softphone comes and goes."""
        for app in self._apps:
            with unless_gone():  # a controller that is not connected subscribes when it comes
                await self.ari.request("POST", f"/applications/{app}/subscription",
                                        params={"eventSource": f"deviceState:PJSIP/{username}"})

    async def _provision(self, agent: Agent) -> None:
        base = "/asterisk/config/dynamic/res_pjsip"
        name = agent.username
        endpoint = {
            "transport": "transport-udp", "context": AGENT_CONTEXT, "disallow": "all",
            "allow": "alaw,ulaw", "aors": name, "direct_media": "no",
            "rtp_symmetric": "yes", "force_rport": "yes", "rewrite_contact": "yes",
            "dtmf_mode": "rfc4733", "callerid": f"{agent.name} <{name}>"}
        if self._edge_address:
            # The phone registered at the edge; the node calls it there, and its checks
            # (OPTIONS) say whether the agent's phone is on, as a registration would.
            await self.ari.request("PUT", f"{base}/aor/{name}", body=_fields({
                "contact": f"sip:{name}@{self._edge_address}", "max_contacts": "1",
                "qualify_frequency": str(self._qualify_seconds)}))
        else:
            await self.ari.request("PUT", f"{base}/auth/{name}", body=_fields({
                "auth_type": "digest", "username": name, "realm": REALM,
                "password_digest": f"MD5:{agent.sip_digest}"}))
            await self.ari.request("PUT", f"{base}/aor/{name}", body=_fields({
                "max_contacts": "1", "remove_existing": "yes", "qualify_frequency": "0"}))
            endpoint["auth"] = name
        await self.ari.request("PUT", f"{base}/endpoint/{name}", body=_fields(endpoint))


@asynccontextmanager
async def open_agents(settings: Settings) -> AsyncIterator[Agents]:
    """The agents' accounts for a tool outside the server processes (the `ivr agent` command,
    the benchmark): SQL, Redis and ARI opened for it and closed afterwards."""
    engine = create_engine(settings.sql_url)
    redis = connect_redis(settings)
    ari = AriClient(settings.ari_base_url, settings.ari_user, settings.ari_secret())
    try:
        await init_schema(engine)
        yield Agents(sessionmaker(engine), ari, acd_for(settings, redis), settings.stasis_apps,
                     settings.edge_address, settings.agent_qualify_seconds)
    finally:
        await ari.close()
        await redis.aclose()
        await engine.dispose()
