"""One call from its first event to its last: the call state machine.

Read it top to bottom. ``start`` (StasisStart) takes the live dialplan, looks up the dialled
number and either refuses it (not in service) or answers: emergency announcement, greeting,
then the line's start, usually a menu. ``handle`` sends every later ARI event to the handler of
the call's state. In a menu, digits interrupt prompts (type-ahead); wrong digits and silence are
said and repeated up to the menu's retries, then the call goes to an agent queue. ``_finish``
(StasisEnd) writes the record. ``resume`` picks a call up again after a controller restart.

What a call is doing inside its state is its *step* (which prompt plays, or that it waits for a
digit); everything is saved in Redis before it is done, so that a restart knows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from ivr.ari import AriError, Event, unless_gone
from ivr.controller.base import (
    AGENT_ASSIGNED,
    ANNOUNCE,
    CALLBACK_CHOICE,
    CALLBACK_CONFIRM,
    CALLBACK_OFFER,
    CALLBACK_TIMEOUT,
    CONNECTING,
    EMERGENCY,
    GOODBYE,
    HOLDING,
    INFO,
    INTRO,
    MENU_TIMEOUT,
    NO_AGENTS,
    NOT_IN_SERVICE_STEP,
    PROMPT,
    QUEUE_ANNOUNCE,
    TRANSFER,
    TRANSFER_CANCEL,
    TRANSFER_COMPLETE,
    WAITING,
    CallServices,
    now,
)
from ivr.controller.bot import (
    BOT_ANSWER,
    BOT_GOODBYE,
    BOT_HANDOFF,
    BOT_HEARD,
    BOT_PAUSE,
    BOT_PROMPT,
    BOT_SILENCE,
    BOT_SPEECH,
    BOT_THINKING,
    FRONT_DOOR_LISTENING,
)
from ivr.controller.front_door import FrontDoor
from ivr.controller.listen import LISTEN, Listening
from ivr.controller.menus import Menus
from ivr.controller.state import CallState
from ivr.controller.store import CallData
from ivr.controller.transfers import Transfers
from ivr.dialplan.check import NOT_IN_SERVICE
from ivr.dialplan.model import Action, LineKind
from ivr.dialplan.schedule import entry, line_mode
from ivr.models import CallOutcome

log = logging.getLogger(__name__)

BOT_STEPS = (BOT_PROMPT, BOT_ANSWER, BOT_HANDOFF, BOT_GOODBYE)


class Call(Listening, Menus, FrontDoor, Transfers):
    """A call: its menus (``menus.py``), the callbot (``bot.py``), its wait for an agent
    (``queueing.py``), its transfers (``transfers.py``) and supervisors listening in
    (``listen.py``) are the steps it inherits."""

    # --- The call's first event ---------------------------------------------------------------

    @classmethod
    async def from_stasis_start(cls, event: Event, services: CallServices) -> Call:
        channel = event["channel"]
        args = event.get("args") or [channel.get("dialplan", {}).get("exten", "")]
        plan = await services.dialplans.live()
        data = CallData(
            channel_id=channel["id"],
            record_id=uuid.uuid4().hex,
            did=str(args[0]),
            caller=str(channel.get("caller", {}).get("number", "")),
            started_at=now().isoformat(),
            language=plan.default_language,
            dialplan_version=plan.version,
        )
        return cls(data, services, plan)

    @classmethod
    async def restore(cls, data: CallData, services: CallServices) -> Call:
        return cls(data, services, await services.dialplans.get(data.dialplan_version))

    async def start(self) -> None:
        """A new call: refuse a number not in service, or answer and begin the line."""
        did = self.plan.did(self.data.did)
        if did is not None:
            self.data.line = did.line
            self.data.district = did.district
            self.data.mode = line_mode(self.plan, did.line, now())
        await self._save()
        await self._record("started")
        log.info("call %s from %r to %s: line %s (%s), dialplan v%d", self.channel_id,
                 self.data.caller, self.data.did, self.data.line or "not in service",
                 self.data.mode or "-", self.plan.version)
        if did is None:
            # Early media (183) and then 404: the caller hears why, and is not charged.
            await self.ari.progress(self.channel_id)
            await self._play(NOT_IN_SERVICE_STEP, list(NOT_IN_SERVICE))
            return
        await self.ari.answer(self.channel_id)
        self.data.answered_at = now().isoformat()
        await self._move(CallState.IN_MENU)
        await self._record("answered")
        emergency = self.plan.emergency
        if emergency.enabled and did.line in emergency.lines:
            self.data.path.append("emergency")
            await self._play(EMERGENCY, list(emergency.prompt))
        else:
            await self._begin_line()

    def _line_entry(self) -> tuple[list[str], Action]:
        line = self.plan.lines[LineKind(self.data.line or LineKind.MAIN)]
        notices, start = entry(line, self.data.mode)
        return [*line.greeting, *notices], start

    async def _begin_line(self) -> None:
        intro, start = self._line_entry()
        if start.menu is not None and start.language is None:
            # Greeting, notices and the menu's prompt play as one: a digit skips them all.
            await self._enter_menu(start.menu, intro)
        else:
            await self._play(INTRO, intro)

    # --- Later events, by state ---------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        kind = event["type"]
        leg = event.get("channel", {}).get("id")
        if leg and leg != self.channel_id:
            if leg == self.data.agent_channel:
                await self._agent_leg(event)
            elif leg == self.data.outside_channel:
                await self._outside_leg(event)
            elif leg == self.data.consult_channel:
                await self._consult_leg(event)
            return  # an older leg, already dealt with
        if kind == "StasisEnd":
            await self._finish()
            return
        if kind == "ChannelHangupRequest":
            self.data.hangup_cause = str(event.get("cause", ""))
            return
        handler = HANDLERS.get(self.data.state, {}).get(kind)
        if handler is None and kind == AGENT_ASSIGNED:
            # The caller is no longer waiting (a callback took their place, say): never keep
            # an agent reserved for nobody.
            await self.services.acd.release(str(event["agent"]))
            return
        if handler is None:
            log.debug("call %s: %s ignored in state %s", self.channel_id, kind, self.data.state)
            return
        await handler(self, event)

    async def _prompt_finished(self, event: Event) -> None:
        if event.get("playback", {}).get("id", "") != self.data.playback_id:
            return  # an older prompt, already stopped or replaced
        self.data.playback_id = ""
        step = self.data.step
        if step == NOT_IN_SERVICE_STEP:
            await self._end(CallOutcome.NOT_IN_SERVICE, reason="unallocated")
        elif step == EMERGENCY:
            await self._begin_line()
        elif step == INTRO:
            await self._run(self._line_entry()[1])
        elif step == PROMPT:
            await self._wait_for_digit()
        elif step == INFO:
            then = Action.model_validate_json(self.data.pending) if self.data.pending else None
            self.data.pending = ""
            if then is None:
                await self._enter_menu(self.data.menu)
            else:
                await self._run(then)
        elif step == CONNECTING:
            if self._callbacks_possible() and await self._wait_is_long():
                await self._offer_callback()
            else:
                await self._hold()
        elif step == ANNOUNCE:
            await self._hold()
        elif step == CALLBACK_OFFER:
            self.data.step = CALLBACK_CHOICE
            self.data.timer_token += 1
            await self._save()
            self.services.start_timer(self.channel_id, 6.0, {
                "type": CALLBACK_TIMEOUT, "token": self.data.timer_token})
        elif step == CALLBACK_CONFIRM:
            await self._end(CallOutcome.CALLBACK)
        elif step == GOODBYE:
            await self._end(CallOutcome.COMPLETED)
        elif step in BOT_STEPS:
            await self._bot_prompt_finished()
        elif step == NO_AGENTS:
            await self.services.acd.leave(self.channel_id)
            await self._end(CallOutcome.NO_AGENTS)

    # --- After a controller restart -----------------------------------------------------------

    async def resume(self) -> None:
        """Carry on with a call whose events were missed while no controller listened."""
        log.info("call %s resumed in state %s, step %s", self.channel_id, self.data.state,
                 self.data.step)
        for leg in (self.data.agent_channel, self.data.outside_channel,
                    self.data.consult_channel):
            if leg:
                self.services.watch_leg(leg, self.channel_id)
        if self.data.state == CallState.WITH_BOT:
            await self._bot_interrupted()  # the bot's ears died with the old controller
            return
        if self.data.bot.snoop_channel:
            # At a front door: its ears died with the old controller; new ones, and what the
            # caller was saying is asked again.
            await self._close_ears()
            await self._open_front_door(self.data.menu)
            if self.data.step in (FRONT_DOOR_LISTENING, BOT_THINKING):
                await self._front_door_again()
                return
        if self.data.state == CallState.QUEUED:
            self.services.dispatch()
        if self.data.playback_id:
            with unless_gone():  # a 404: it ended while nobody listened, so go on from there
                await self.ari.playback(self.data.playback_id)
                return  # still playing: its PlaybackFinished will come
            await self._prompt_finished({"playback": {"id": self.data.playback_id}})
        elif self.data.step == WAITING:
            await self._wait_for_digit()  # the timer died with the old controller
        elif self.data.step == HOLDING:
            await self._hold()  # music again, and the announcement timer
        elif self.data.state == CallState.RINGING:
            await self.start()

    async def fail(self, error: BaseException) -> None:
        """An error in this call's handling: end it cleanly, never leave the caller in silence."""
        log.error("call %s failed in state %s: %s", self.channel_id, self.data.state, error)
        try:
            await self._end(CallOutcome.FAILED)
        except AriError as exc:
            log.error("call %s could not be hung up: %s", self.channel_id, exc)

    async def _finish(self) -> None:
        if self.data.state == CallState.ENDED:
            return
        try:
            await self._leave_queue_or_agent()
        except (AriError, RedisError) as exc:
            log.error("call %s: queue or agent not released: %s", self.channel_id, exc)
        if not self.data.outcome:
            self.data.outcome = CallOutcome.CALLER_HUNG_UP
        await self._move(CallState.ENDED)
        await self._record("ended")
        try:
            await self.services.store.count_ended(self.data.line, self.data.outcome)
            await self.services.store.remove(self.channel_id)
        except RedisError as exc:
            log.error("call %s: live state not cleared: %s", self.channel_id, exc)
        log.info("call %s ended: %s, path %s", self.channel_id, self.data.outcome,
                 " ".join(self.data.path) or "-")

    async def vanished(self, cut: bool = False) -> None:
        """The call ended while no controller was listening: close its record. ``cut``: it
        ended because its Asterisk died (and started again), not because anyone hung up."""
        if cut:
            self.data.outcome = CallOutcome.CUT
        elif not self.data.outcome:
            self.data.outcome = CallOutcome.UNOBSERVED_END
        await self._finish()


Handler = Callable[["Call", Event], Awaitable[None]]

HANDLERS: dict[CallState, dict[str, Handler]] = {
    CallState.RINGING: {"PlaybackFinished": Call._prompt_finished},
    CallState.IN_MENU: {
        "PlaybackFinished": Call._prompt_finished,
        "ChannelDtmfReceived": Call._digit,
        MENU_TIMEOUT: Call._timeout,
        # At a front door (front_door.py): the caller's voice.
        BOT_SPEECH: Call._front_door_speech,
        BOT_PAUSE: Call._paused,
        BOT_HEARD: Call._front_door_heard,
    },
    CallState.WITH_BOT: {
        "PlaybackFinished": Call._prompt_finished,
        "PlaybackStarted": Call._answer_started,
        "ChannelDtmfReceived": Call._bot_digit,
        BOT_SPEECH: Call._speech_started,
        BOT_PAUSE: Call._paused,
        BOT_HEARD: Call._heard,
        BOT_SILENCE: Call._bot_silence,
    },
    CallState.QUEUED: {
        "PlaybackFinished": Call._prompt_finished,
        "ChannelDtmfReceived": Call._queue_digit,
        AGENT_ASSIGNED: Call._assigned,
        QUEUE_ANNOUNCE: Call._announce_position,
        CALLBACK_TIMEOUT: Call._callback_timeout,
    },
    CallState.OFFERED: {"PlaybackFinished": Call._prompt_finished},
    CallState.TALKING: {
        TRANSFER: Call._transfer,
        TRANSFER_COMPLETE: Call._transfer_complete,
        TRANSFER_CANCEL: Call._transfer_cancel,
        LISTEN: Call._listen_in,
    },
}
