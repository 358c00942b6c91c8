"""Transfers by the agent: to another queue, to a named agent or to an allowed department
number through the trunk; blind, or with a consultation first.

Blind: the agent leaves at once (wrap-up) and the caller goes on to the target, ahead of new
callers. With consultation: the caller hears music alone in the call's bridge while the agent
talks with the other party in a second bridge; the agent then completes the transfer (the other
party joins the caller, the agent leaves) or cancels it (the agent returns to the caller). If
the other party does not answer or hangs up, the agent is back with the caller; if the agent
hangs up once the other party has answered, that completes the transfer.
"""

from __future__ import annotations

import logging
import uuid

from ivr.ari import AriError, ChannelGone, Event, unless_gone
from ivr.controller.base import TRANSFER_PRIORITY, now
from ivr.controller.queueing import Queueing
from ivr.controller.state import CallState
from ivr.models import CallOutcome

log = logging.getLogger(__name__)


CONSULT_RINGING = "consult_ringing"  # the other party's phone rings; the caller hears music
CONSULTING = "consulting"  # the agent and the other party talk; the caller hears music


class Transfers(Queueing):
    # --- Blind: the agent leaves, the caller goes on ------------------------------------------

    async def _transfer(self, event: Event) -> None:
        target, value = str(event["to"]), str(event["value"])
        if self.data.consult_channel:
            log.warning("call %s: transfer refused, a consultation is going on", self.channel_id)
            return
        if event.get("mode") == "consult":
            await self._consult(target, value)
            return
        self.data.path.append(f"transfer:{target}:{value}")
        await self._timeline("transfer", self.data.agent, f"{target} {value}")
        leg = self.data.agent_channel
        self._leg_gone()
        with unless_gone():
            await self.ari.hangup(leg)
        await self.services.talk_ended(self.data, self.channel_id)  # the agent's wrap-up
        self.data.agent = self.data.bridge_id = self.data.talk_started_at = ""
        await self._move(CallState.TRANSFERRING)
        topic, _, language = self.data.queue.partition(":")
        if target == "number" and self.plan.transfers.allows(value):
            await self._dial_outside(value)
        elif target == "agent":
            await self._offer_to_agent(value, topic, language)
        elif target == "queue":
            topic, _, language = value.partition(":")
            await self._requeue_transferred(topic, language or self.data.language)
        else:  # not allowed after all (the API checks first): back to this call's own queue
            await self._requeue_transferred(topic, language)

    async def _requeue_transferred(self, topic: str, language: str) -> None:
        self.data.queue = f"{topic}:{language}"
        self.data.queued_at = now().isoformat()
        await self._move(CallState.QUEUED)
        await self.services.acd.enqueue(self.channel_id, topic, language, TRANSFER_PRIORITY)
        await self._timeline("queued", detail=self.data.queue)
        await self._hold()
        self.services.dispatch()

    async def _offer_to_agent(self, agent: str, topic: str, language: str) -> None:
        """Ring one named agent; if they are not free, or do not answer, the caller waits in
        their queue ahead of new callers."""
        acd = self.services.acd
        if not await acd.offer_to(agent, self.channel_id, topic, language, TRANSFER_PRIORITY):
            await self._timeline("transfer_failed", agent, "agent not available")
            await self._requeue_transferred(topic, language)
            return
        self.data.queued_at = now().isoformat()
        await self._move(CallState.QUEUED)
        await self._hold()  # music while the agent's phone rings
        await self._assigned({"agent": agent})

    async def _dial_outside(self, number: str) -> None:
        self.data.outside_channel = f"outside-{uuid.uuid4().hex}"
        self.services.watch_leg(self.data.outside_channel, self.channel_id)
        await self._save()
        await self._start_music()
        await self._dial(f"PJSIP/{number}@trunk", "outside", self.data.outside_channel, 30)

    async def _outside_leg(self, event: Event) -> None:
        kind = event["type"]
        gone = kind in ("ChannelDestroyed", "StasisEnd")
        if kind == "StasisStart" and self.data.state == CallState.TRANSFERRING:
            try:
                self.data.bridge_id = await self.services.bridge(
                    self.channel_id, [self.channel_id, self.data.outside_channel])
            except ChannelGone:  # a hang-up crossed the answer: its event settles the call
                return
            await self._stop_music()
            self.data.outcome = CallOutcome.TRANSFERRED
            await self._move(CallState.TALKING)
            await self._timeline("answered", detail="outside")
        elif gone and self.data.state == CallState.TRANSFERRING:
            # The department did not answer: back to the agents, ahead of new callers.
            self.services.forget_leg(self.data.outside_channel)
            self.data.outside_channel = ""
            await self._timeline("no_answer", detail="outside")
            topic, _, language = self.data.queue.partition(":")
            await self._requeue_transferred(topic, language)
        elif gone and self.data.state == CallState.TALKING:
            self.services.forget_leg(self.data.outside_channel)
            self.data.outside_channel = ""
            await self._end(CallOutcome.TRANSFERRED)

    # --- With consultation: the agent talks with the other party first -----------------------

    async def _consult(self, target: str, value: str) -> None:
        acd = self.services.acd
        agent = ""
        if target == "agent":
            agent = value if await acd.reserve(value, self.channel_id) else ""
        elif target == "queue":
            topic, _, language = value.partition(":")
            agent = await acd.reserve_best(topic, language, self.channel_id) or ""
        if not agent and not (target == "number" and self.plan.transfers.allows(value)):
            await self._timeline("transfer_failed", self.data.agent, f"consult {target} {value}")
            return  # nothing changed: the agent still talks with the caller
        self.data.consult_target = f"{target}:{value}"
        self.data.consult_agent = agent
        self.data.consult_channel = f"consult-{uuid.uuid4().hex}"
        self.services.watch_leg(self.data.consult_channel, self.channel_id)
        self.data.step = CONSULT_RINGING
        self.data.path.append(f"consult:{target}:{value}")
        await self._save()
        await self._timeline("consult", self.data.agent, f"{target} {value}")
        # The agent leaves the caller's bridge for the consultation; the caller hears music.
        await self.ari.request("POST", f"/bridges/{self.data.bridge_id}/removeChannel",
                               params={"channel": self.data.agent_channel})
        await self.ari.request("POST", f"/bridges/{self.data.bridge_id}/moh",
                               params={"mohClass": self.services.settings.moh_class})
        self.data.consult_bridge_id = await self.services.bridge(
            f"consult:{self.channel_id}", [self.data.agent_channel])
        await self._save()
        endpoint = f"PJSIP/{agent}" if agent else f"PJSIP/{value}@trunk"
        try:
            await self._dial(endpoint, "consult", self.data.consult_channel,
                             self.services.settings.ring_seconds)
        except AriError as exc:
            log.warning("call %s: consultation with %s not dialled: %s", self.channel_id,
                        endpoint, exc)
            await self._consult_over("not reachable")

    async def _consult_leg(self, event: Event) -> None:
        kind = event["type"]
        if kind == "StasisStart" and self.data.step == CONSULT_RINGING:
            await self.ari.request("POST", f"/bridges/{self.data.consult_bridge_id}/addChannel",
                                   params={"channel": self.data.consult_channel})
            if self.data.consult_agent:
                await self.services.acd.answered(self.data.consult_agent, self.channel_id)
            self.data.step = CONSULTING
            self.data.consult_started_at = now().isoformat()
            await self._save()
            await self._timeline("consult_answered", self.data.consult_agent,
                                 self.data.consult_target)
        elif kind in ("ChannelDestroyed", "StasisEnd"):
            # Declined, rang out or hung up: the agent is back with the caller.
            await self._consult_over("the other party left")

    async def _transfer_complete(self, event: Event) -> None:
        if self.data.step != CONSULTING:
            log.warning("call %s: nothing to complete (step %s)", self.channel_id,
                        self.data.step)
            return
        await self._timeline("transfer", self.data.agent, self.data.consult_target.replace(
            ":", " ", 1))
        self.data.path.append(f"transfer:{self.data.consult_target}")
        first_agent_leg = self.data.agent_channel
        self._leg_gone()
        with unless_gone():
            await self.ari.hangup(first_agent_leg)
        await self.services.talk_ended(self.data, self.channel_id, keep_bridge=True)
        other, agent = self.data.consult_channel, self.data.consult_agent
        talk_started = self.data.consult_started_at
        await self._close_consultation()  # the other party's leg stays watched: it is the call's
        await self.ari.request("POST", f"/bridges/{self.data.bridge_id}/addChannel",
                               params={"channel": other})
        with unless_gone():
            await self.ari.request("DELETE", f"/bridges/{self.data.bridge_id}/moh")
        if agent:  # the consulted agent now has the call
            self.data.agent, self.data.agent_channel = agent, other
            self.data.talk_started_at = talk_started
            self.data.path.append(f"agent:{agent}")
        else:  # a department: the call is theirs, the center's part is over
            self.data.agent = self.data.talk_started_at = ""
            self.data.outside_channel = other
            self.data.outcome = CallOutcome.TRANSFERRED
        await self._save()
        await self._timeline("answered", agent, "" if agent else "outside")

    async def _transfer_cancel(self, event: Event) -> None:
        if self.data.consult_channel:
            await self._consult_over("cancelled by the agent")

    async def _consult_over(self, reason: str) -> None:
        """The consultation ends without a transfer: the agent is back with the caller."""
        agent = await self._drop_consultation()
        with unless_gone():
            await self.ari.request("POST", f"/bridges/{self.data.bridge_id}/addChannel",
                                   params={"channel": self.data.agent_channel})
        with unless_gone():
            await self.ari.request("DELETE", f"/bridges/{self.data.bridge_id}/moh")
        await self._save()
        await self._timeline("consult_ended", agent, reason)

    async def _drop_consultation(self) -> str:
        """Hang up the other party and set a consulted agent free (wrap-up if they talked);
        returns that agent, or ''."""
        other, agent = self.data.consult_channel, self.data.consult_agent
        answered = self.data.step == CONSULTING
        self.services.forget_leg(other)
        await self._close_consultation()
        with unless_gone():
            await self.ari.hangup(other)
        if agent and answered:
            await self.services.acd.wrap_up(agent, self.channel_id)
            self.services.start_wrap_up(agent)
        elif agent:
            await self.services.acd.release(agent)
        return agent

    async def _close_consultation(self) -> None:
        """Remove the consultation's bridge (its channels stay up) and forget it."""
        bridge = self.data.consult_bridge_id
        self.data.consult_channel = self.data.consult_agent = self.data.consult_target = ""
        self.data.consult_bridge_id = self.data.step = self.data.consult_started_at = ""
        if bridge:
            with unless_gone():
                await self.ari.destroy_bridge(bridge)

    async def _agent_leg(self, event: Event) -> None:
        gone = event["type"] in ("ChannelDestroyed", "StasisEnd")
        if gone and self.data.consult_channel and self.data.state == CallState.TALKING:
            await self._agent_left_consultation()
        else:
            await super()._agent_leg(event)

    async def _agent_left_consultation(self) -> None:
        """The first agent hung up during the consultation: once the other party answered,
        that completes the transfer; before, the caller goes back to their queue."""
        if self.data.step == CONSULTING:
            await self._transfer_complete({})
            return
        await self._timeline("consult_ended", self.data.consult_agent, "the agent left")
        await self._drop_consultation()
        self._leg_gone()
        await self.services.talk_ended(self.data, self.channel_id)
        self.data.agent = self.data.bridge_id = self.data.talk_started_at = ""
        await self._move(CallState.TRANSFERRING)
        topic, _, language = self.data.queue.partition(":")
        await self._requeue_transferred(topic, language)

    async def _leave_queue_or_agent(self) -> None:
        """The caller hung up: a consultation going on ends with them."""
        if self.data.consult_channel:
            await self._drop_consultation()
        await super()._leave_queue_or_agent()
