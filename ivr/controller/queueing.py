"""A call waiting for an agent: the skill queue, music and announcements of the place in line,
the offer to an agent's phone and its answer or miss, and the callback that keeps the place."""

from __future__ import annotations

import logging
import math
import uuid

from ivr.ari import AriError, ChannelGone, Event, unless_gone
from ivr.controller.base import (
    ANNOUNCE,
    CALLBACK_CHOICE,
    CALLBACK_CONFIRM,
    CALLBACK_OFFER,
    CONNECTING,
    HOLDING,
    NO_AGENTS,
    QUEUE_ANNOUNCE,
    CallBase,
    now,
)
from ivr.controller.callback import CALLBACK_PREFIX
from ivr.controller.state import CallState
from ivr.models import CallOutcome

log = logging.getLogger(__name__)


class Queueing(CallBase):
    # --- Queues and agents --------------------------------------------------------------------

    async def _enqueue(self, topic: str) -> None:
        self.data.queue = f"{topic}:{self.data.language}"
        self.data.queued_at = now().isoformat()
        await self._move(CallState.QUEUED)
        if not await self.services.acd.staffed(topic, self.data.language):
            await self.services.acd.enqueue(self.channel_id, topic, self.data.language)
            await self._nobody_staffed()
            return
        # In line from the moment of the choice: "connecting you" plays while agents are sought.
        await self.services.acd.enqueue(self.channel_id, topic, self.data.language)
        await self._timeline("queued", detail=self.data.queue)
        await self._play(CONNECTING, ["connecting_agent"])
        self.services.dispatch()

    async def _hold(self) -> None:
        self.data.step = HOLDING
        self.data.timer_token += 1
        await self._save()
        await self._start_music()
        self.services.start_timer(self.channel_id, self.services.settings.queue_announce_seconds,
                                  {"type": QUEUE_ANNOUNCE, "token": self.data.timer_token})

    async def _nobody_staffed(self) -> None:
        """No agent with the skill is logged in: a callback keeps the place, or the caller is
        told and the call ends, rather than waiting for nobody."""
        await self._timeline("no_agents", detail=self.data.queue)
        if self._callbacks_possible():
            self.data.callback_reason = NO_AGENTS
            await self._offer_callback()
        else:
            await self._play(NO_AGENTS, ["no_agents"])

    async def _announce_position(self, event: Event) -> None:
        if self.data.step != HOLDING or event.get("token") != self.data.timer_token:
            return
        acd = self.services.acd
        topic, _, language = self.data.queue.partition(":")
        if not await acd.staffed(topic, language):  # the last agent of the skill logged out
            await self._stop_music()
            await self._nobody_staffed()
            return
        position = await acd.position(self.channel_id)
        wait = await acd.estimated_wait(topic, language, max(position, 1),
                                        self.services.settings.default_handle_seconds)
        minutes = max(1, math.ceil(wait / 60))
        await self._timeline("position", detail=f"{position}, about {minutes} min")
        media = await self._speak("queue_position", position=position, minutes=minutes)
        await self._stop_music()
        await self._play_media(ANNOUNCE, [media])

    async def _assigned(self, event: Event) -> None:
        """The match reserved an agent for this caller: ring the agent's phone."""
        agent = str(event["agent"])
        self.data.agent = agent
        self.data.agent_channel = f"agent-{uuid.uuid4().hex}"
        await self._move(CallState.OFFERED)
        self.services.watch_leg(self.data.agent_channel, self.channel_id)
        await self._timeline("offered", agent)
        try:
            await self._dial(f"PJSIP/{agent}", "agent", self.data.agent_channel,
                             self.services.settings.ring_seconds)
        except AriError as exc:  # the phone cannot be reached at all: as if it rang out
            log.warning("call %s: agent %s not reachable: %s", self.channel_id, agent, exc)
            await self._agent_missed()

    async def _agent_leg(self, event: Event) -> None:
        kind = event["type"]
        state = self.data.state
        if kind == "StasisStart" and state == CallState.OFFERED:
            await self._agent_answered()
        elif kind in ("ChannelDestroyed", "StasisEnd") and state == CallState.OFFERED:
            await self._agent_missed()
        elif kind in ("ChannelDestroyed", "StasisEnd") and state == CallState.TALKING:
            # The agent hung up: the consultation is over for the caller too.
            self._leg_gone()
            await self._end(CallOutcome.ANSWERED)

    async def _agent_answered(self) -> None:
        await self._stop_prompt()  # "connecting you" may still be playing
        try:
            self.data.bridge_id = await self.services.bridge(
                self.channel_id, [self.channel_id, self.data.agent_channel])
        except ChannelGone:  # the caller gave up (or the agent hung up) as the agent answered
            log.info("call %s: a leg left as agent %s answered", self.channel_id,
                     self.data.agent)
            return
        await self._stop_music()
        await self.services.acd.answered(self.data.agent, self.channel_id)
        await self.services.acd.leave(self.channel_id)
        self.data.talk_started_at = now().isoformat()
        self.data.path.append(f"agent:{self.data.agent}")
        await self._move(CallState.TALKING)
        await self._timeline("answered", self.data.agent)

    async def _agent_missed(self) -> None:
        """The agent's phone rang out (or could not ring): next agent, same place in line."""
        agent = self.data.agent
        self._leg_gone()
        self.data.agent = ""
        acd = self.services.acd
        await acd.requeue(self.channel_id)
        paused = await acd.missed(agent, self.channel_id, self.services.settings.missed_calls_pause)
        await self._timeline("no_answer", agent, "agent paused" if paused else "")
        await self._move(CallState.QUEUED)
        self.services.dispatch()

    def _leg_gone(self) -> None:
        self.services.forget_leg(self.data.agent_channel)
        self.data.agent_channel = ""

    async def _leave_queue_or_agent(self) -> None:
        """The caller hung up: whatever they waited for, or talked with, is set free."""
        acd = self.services.acd
        state = self.data.state
        if state in (CallState.QUEUED, CallState.OFFERED):
            await acd.leave(self.channel_id)  # a callback's entry has another id: it stays
            if not self.data.outcome:
                self.data.outcome = CallOutcome.ABANDONED
                await self._timeline("abandoned", self.data.agent)
        if self.data.agent_channel:
            with unless_gone():
                await self.ari.hangup(self.data.agent_channel)
            self._leg_gone()
        if self.data.outside_channel:
            with unless_gone():
                await self.ari.hangup(self.data.outside_channel)
            self.services.forget_leg(self.data.outside_channel)
        if state == CallState.OFFERED and self.data.agent:
            await acd.release(self.data.agent)
        if self.data.talk_started_at and self.data.agent:
            await self.services.talk_ended(self.data, self.channel_id)
            self.data.outcome = self.data.outcome or CallOutcome.ANSWERED
            await self._timeline("wrap_up", self.data.agent)
        elif self.data.bridge_id:  # with a department outside
            with unless_gone():
                await self.ari.destroy_bridge(self.data.bridge_id)

    # --- Callbacks: "we call you back when it is your turn" ----------------------------------

    def _callbacks_possible(self) -> bool:
        return bool(self.services.settings.trunk_contact and self.data.caller)

    async def _wait_is_long(self) -> bool:
        topic, _, language = self.data.queue.partition(":")
        acd = self.services.acd
        position = max(1, await acd.position(self.channel_id))
        wait = await acd.estimated_wait(topic, language, position,
                                        self.services.settings.default_handle_seconds)
        return wait > self.services.settings.callback_offer_seconds

    async def _offer_callback(self) -> None:
        await self._timeline("callback_offered")
        await self._play(CALLBACK_OFFER, ["callback_offer"])

    async def _queue_digit(self, event: Event) -> None:
        if self.data.step not in (CALLBACK_OFFER, CALLBACK_CHOICE):
            return
        await self._stop_prompt()
        if str(event.get("digit")) == "1":
            await self._accept_callback()
        else:
            await self._decline_callback()

    async def _callback_timeout(self, event: Event) -> None:
        if self.data.step == CALLBACK_CHOICE and event.get("token") == self.data.timer_token:
            await self._decline_callback()

    async def _accept_callback(self) -> None:
        callback_id = f"{CALLBACK_PREFIX}{uuid.uuid4().hex}"
        if not await self.services.acd.to_callback(self.channel_id, callback_id,
                                                   self.data.caller):
            await self._hold()  # an agent was found that very moment: the offer is moot
            return
        await self.services.records.callback_requested(self.data, callback_id)
        self.data.path.append("callback")
        await self._timeline("callback", detail=callback_id)
        self.data.callback_reason = ""
        await self._play(CALLBACK_CONFIRM, ["callback_confirm"])

    async def _decline_callback(self) -> None:
        if self.data.callback_reason == NO_AGENTS:
            self.data.callback_reason = ""
            await self._play(NO_AGENTS, ["no_agents"])
        else:
            await self._hold()
