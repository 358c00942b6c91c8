"""A callback's turn: the server phones the agent, then the citizen, and connects them.

The match gives a callback (``cb-...`` in the queue, at the place its caller had) a free agent,
so callbacks never start faster than agents are free. The agent's phone rings first; when the
agent answers, the citizen is dialled through the carrier trunk; when the citizen answers, both
are bridged. An agent who lets it ring out is handled like any missed offer; a citizen who does
not answer is tried again later (``MAX_ATTEMPTS`` in all), keeping the same place.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from ivr.acd.core import call_key
from ivr.ari import AriError, ChannelGone, Event, unless_gone
from ivr.controller.base import CallServices, now
from ivr.controller.state import CallState
from ivr.controller.store import CallData
from ivr.models import CallOutcome

log = logging.getLogger(__name__)

CALLBACK_PREFIX = "cb-"  # a callback's id, in the queue where its caller waited
MAX_ATTEMPTS = 3
CITIZEN_RING_SECONDS = 30


class CallbackRun:
    def __init__(self, callback_id: str, entry: dict[str, str], services: CallServices) -> None:
        self.callback_id = callback_id
        self.services = services
        self.ari = services.ari
        self.attempts = int(entry.get("attempts", 0))
        self.data = CallData(
            channel_id=callback_id, record_id=uuid.uuid4().hex, did="callback",
            caller=entry.get("number", ""), language=entry.get("language", "ko"),
            queue=entry.get("queue", ""), state=CallState.OFFERED,
            started_at=now().isoformat())
        self.done = False

    # The citizen's leg is kept where a call keeps its outside leg, so that it is saved too.
    @property
    def citizen_channel(self) -> str:
        return self.data.outside_channel

    @citizen_channel.setter
    def citizen_channel(self, channel: str) -> None:
        self.data.outside_channel = channel

    @classmethod
    def restore(cls, data: CallData, entry: dict[str, str],
                services: CallServices) -> CallbackRun:
        run = cls(data.channel_id, entry, services)
        run.data = data
        return run

    async def _save(self) -> None:
        """Saved in Redis like a call, so that a restarted controller finds the run."""
        await self.services.store.save(self.data)

    async def _done(self) -> None:
        self.done = True
        await self.services.store.remove(self.callback_id)

    async def start(self, agent: str) -> None:
        """Ring the agent first: the citizen is only dialled for an agent who is there."""
        settings = self.services.settings
        self.data.callback_of = await self.services.records.callback_call(self.callback_id) or ""
        self.data.agent = agent
        self.data.agent_channel = f"agent-{uuid.uuid4().hex}"
        self.services.watch_leg(self.data.agent_channel, self.callback_id)
        log.info("callback %s to %s: ringing agent %s", self.callback_id, self.data.caller, agent)
        await self._save()
        try:
            await self.ari.request("POST", "/channels", params={
                "endpoint": f"PJSIP/{agent}", "app": settings.stasis_app,
                "appArgs": f"agent,{self.callback_id}", "channelId": self.data.agent_channel,
                "callerId": f"callback <{self.data.caller}>", "timeout": settings.ring_seconds})
        except AriError as exc:
            log.warning("callback %s: agent %s not reachable: %s", self.callback_id, agent, exc)
            await self._agent_missed()

    async def handle(self, event: Event) -> None:
        leg = event.get("channel", {}).get("id")
        kind = event["type"]
        gone = kind in ("ChannelDestroyed", "StasisEnd")
        state = self.data.state
        if leg == self.data.agent_channel:
            if kind == "StasisStart" and state == CallState.OFFERED:
                await self._dial_citizen()
            elif gone and state == CallState.OFFERED:
                await self._agent_missed()
            elif gone and state == CallState.TRANSFERRING:  # the agent gave up waiting
                await self._hang_up(self.citizen_channel)
                await self._citizen_missed()
            elif gone and state == CallState.TALKING:
                await self._hang_up(self.citizen_channel)
                await self._finish(CallOutcome.ANSWERED)
        elif leg and leg == self.citizen_channel:
            if kind == "StasisStart" and state == CallState.TRANSFERRING:
                await self._connect()
            elif gone and state == CallState.TRANSFERRING:
                await self._hang_up(self.data.agent_channel)
                await self._citizen_missed()
            elif gone and state == CallState.TALKING:
                await self._hang_up(self.data.agent_channel)
                await self._finish(CallOutcome.ANSWERED)

    async def _dial_citizen(self) -> None:
        settings = self.services.settings
        self.data.state = CallState.TRANSFERRING  # the agent waits while the citizen is rung
        self.attempts += 1
        self.citizen_channel = f"citizen-{uuid.uuid4().hex}"
        self.services.watch_leg(self.citizen_channel, self.callback_id)
        await self._save()
        await self._status("dialing")
        await self.ari.ring(self.data.agent_channel)
        try:
            await self.ari.request("POST", "/channels", params={
                "endpoint": f"PJSIP/{self.data.caller}@trunk", "app": settings.stasis_app,
                "appArgs": f"citizen,{self.callback_id}", "channelId": self.citizen_channel,
                "callerId": "120", "timeout": CITIZEN_RING_SECONDS})
        except AriError as exc:
            log.warning("callback %s: cannot dial %s: %s", self.callback_id, self.data.caller,
                        exc)
            await self._hang_up(self.data.agent_channel)
            await self._citizen_missed()

    async def _connect(self) -> None:
        try:
            self.data.bridge_id = await self.services.bridge(
                self.callback_id, [self.data.agent_channel, self.citizen_channel])
        except ChannelGone:  # a hang-up crossed the answer: its event settles the callback
            return
        acd = self.services.acd
        await acd.answered(self.data.agent, self.callback_id)
        await acd.leave(self.callback_id)
        self.data.state = CallState.TALKING
        self.data.answered_at = self.data.talk_started_at = now().isoformat()
        self.data.path = ["callback", f"agent:{self.data.agent}"]
        records = self.services.records
        await records.started(self.data, datetime.fromisoformat(self.data.started_at))
        await records.answered(self.data, now())
        await records.event(self.data, "answered", self.data.agent, self.callback_id)
        await self._save()
        await self._status("connected")
        log.info("callback %s: %s and agent %s connected", self.callback_id, self.data.caller,
                 self.data.agent)

    async def _agent_missed(self) -> None:
        acd = self.services.acd
        self._forget_legs()
        await acd.requeue(self.callback_id)
        await acd.missed(self.data.agent, self.callback_id,
                         self.services.settings.missed_calls_pause)
        await self._done()
        self.services.dispatch()

    async def _citizen_missed(self) -> None:
        acd = self.services.acd
        self._forget_legs()
        await acd.release(self.data.agent)
        if self.attempts >= MAX_ATTEMPTS:
            await acd.leave(self.callback_id)
            await self._status("failed", done=True)
            log.info("callback %s: %s did not answer %d times", self.callback_id,
                     self.data.caller, self.attempts)
        else:
            await acd.redis.hset(call_key(self.callback_id), "attempts", self.attempts)
            await acd.requeue(self.callback_id)
            await self._status("waiting")
        await self._done()
        self.services.dispatch()

    async def _finish(self, outcome: CallOutcome) -> None:
        self._forget_legs()
        self.data.outcome = outcome
        await self.services.talk_ended(self.data, self.callback_id)
        await self.services.records.ended(self.data, now())
        await self._status("done", done=True)
        await self._done()
        log.info("callback %s ended", self.callback_id)

    async def resume(self, in_stasis: set[str]) -> None:
        """After a controller restart: a connected callback goes on; one that was ringing
        cannot (its ring timers are gone), so its legs are hung up and it waits again in its
        place."""
        legs = [leg for leg in (self.data.agent_channel, self.citizen_channel) if leg]
        if self.data.state == CallState.TALKING and all(leg in in_stasis for leg in legs):
            for leg in legs:
                self.services.watch_leg(leg, self.callback_id)
            log.info("callback %s resumed: still connected", self.callback_id)
            return
        for leg in legs:
            await self._hang_up(leg)
        if self.data.state == CallState.TALKING:
            await self._finish(CallOutcome.ANSWERED)
        else:
            log.info("callback %s: interrupted while ringing; back in line", self.callback_id)
            await self._citizen_missed()

    async def _hang_up(self, channel: str) -> None:
        if not channel:
            return
        with unless_gone():
            await self.ari.hangup(channel)

    def _forget_legs(self) -> None:
        for leg in (self.data.agent_channel, self.citizen_channel):
            if leg:
                self.services.forget_leg(leg)

    async def _status(self, status: str, done: bool = False) -> None:
        values: dict[str, object] = {"status": status, "attempts": self.attempts,
                                     "agent": self.data.agent}
        if done:
            values["done_at"] = now()
        await self.services.records.callback_status(self.callback_id, **values)
