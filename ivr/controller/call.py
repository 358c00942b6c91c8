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

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ivr.acd.core import Acd
from ivr.ari import AriClient, AriError, Event, unless_gone
from ivr.controller.records import CallRecords
from ivr.controller.state import CallState, check_move
from ivr.controller.store import CallData, CallStore
from ivr.dialplan.check import NOT_IN_SERVICE
from ivr.dialplan.model import AGENT, BACK, Action, Dialplan, LineKind, Menu
from ivr.dialplan.schedule import entry, line_mode
from ivr.dialplan.versions import DialplanVersions
from ivr.models import CallOutcome
from ivr.prompts import Prompt, render
from ivr.settings import Settings

log = logging.getLogger(__name__)

# Steps.
NOT_IN_SERVICE_STEP = "not_in_service"  # early-media announcement, then 404
EMERGENCY = "emergency"  # the emergency announcement: digits pressed now wait for the menu
INTRO = "intro"  # greeting and notices before a start that is not a menu
PROMPT = "prompt"  # a menu's prompt plays: a digit interrupts it
WAITING = "waiting"  # the prompt ended: waiting for a digit until the menu's timeout
INFO = "info"  # an information message: a digit interrupts it and counts for the menu
CONNECTING = "connecting"  # "connecting you to an agent", then the queue
GOODBYE = "goodbye"
HOLDING = "holding"  # music on hold while waiting for an agent
NO_AGENTS = "no_agents"  # nobody with the skill is logged in: said, then the call ends
CALLBACK_OFFER = "callback_offer"  # "press 1 to be called back, keeping your place"
CALLBACK_CHOICE = "callback_choice"  # the offer was said: waiting for the key
CALLBACK_CONFIRM = "callback_confirm"  # "we will call you back", then the call ends

ANNOUNCE = "announce"  # position in line and estimated wait, between music
AGENT_ASSIGNED = "AgentAssigned"  # a synthetic event: the match gave this caller an agent
QUEUE_ANNOUNCE = "QueueAnnounce"  # a synthetic event: time to tell the caller their place
CALLBACK_TIMEOUT = "CallbackTimeout"  # a synthetic event: no key pressed after the offer
TRANSFER = "Transfer"  # a command from the API: an agent passes the call on
TRANSFER_PRIORITY = 5  # a transferred caller has waited once already: ahead of new callers

MENU_TIMEOUT = "MenuTimeout"  # a synthetic event: the caller pressed nothing in time

Timer = Callable[[str, float, Event], None]


@dataclass
class CallServices:
    """What every call uses: Asterisk, live state, records, dialplans, queues, timers."""

    settings: Settings
    ari: AriClient
    store: CallStore
    records: CallRecords
    dialplans: DialplanVersions
    acd: Acd
    start_timer: Timer  # (channel id, seconds, event): the event comes back in order
    dispatch: Callable[[], None]  # look for free agents for the waiting callers now
    watch_leg: Callable[[str, str], None]  # (agent leg, caller): route the leg's events here
    forget_leg: Callable[[str], None]
    start_wrap_up: Callable[[str], None]  # the agent's wrap-up time begins

    async def talk_ended(self, data: CallData, call_id: str) -> None:
        """A caller and an agent stopped talking: handle time, the agent's wrap-up, bridge."""
        talk = (_now() - datetime.fromisoformat(data.talk_started_at)).total_seconds()
        await self.acd.handled(data.queue, talk)
        await self.acd.wrap_up(data.agent, call_id)
        self.start_wrap_up(data.agent)
        if data.bridge_id:
            with unless_gone():
                await self.ari.destroy_bridge(data.bridge_id)


def _now() -> datetime:
    return datetime.now(UTC)


Handler = Callable[["Call", Event], Awaitable[None]]


class Call:
    def __init__(self, data: CallData, services: CallServices, plan: Dialplan) -> None:
        self.data = data
        self.services = services
        self.ari = services.ari
        self.plan = plan  # the version the call started with, for all of its life

    @property
    def channel_id(self) -> str:
        return self.data.channel_id

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
            started_at=_now().isoformat(),
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
            self.data.mode = line_mode(self.plan, did.line, _now())
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
        self.data.answered_at = _now().isoformat()
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
            return  # an older leg, already dealt with
        if kind == "StasisEnd":
            await self._finish()
            return
        if kind == "ChannelHangupRequest":
            self.data.hangup_cause = str(event.get("cause", ""))
            return
        handler = HANDLERS.get(self.data.state, {}).get(kind)
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
        elif step == NO_AGENTS:
            await self.services.acd.leave(self.channel_id)
            await self._end(CallOutcome.NO_AGENTS)

    async def _digit(self, event: Event) -> None:
        digit = str(event.get("digit", ""))
        if not digit:
            return
        step = self.data.step
        log.info("call %s: digit %s (%s ms, %s) in %s/%s", self.channel_id, digit,
                 event.get("duration_ms"), event.get("timestamp"), self.data.menu or "-", step)
        if step in (EMERGENCY, INTRO):
            self.data.digits += digit  # typed ahead: kept for the menu that follows
            await self._save()
        elif step in (PROMPT, WAITING, INFO):
            await self._stop_prompt()
            self.data.pending = ""
            await self._menu_digit(digit)

    async def _timeout(self, event: Event) -> None:
        if self.data.step != WAITING or event.get("token") != self.data.timer_token:
            return  # a digit came first, or an older timer
        menu = self._menu()
        self.data.path.append(f"{self.data.menu}:timeout")
        await self._retry(menu, menu.timeout_prompt)

    # --- Menus --------------------------------------------------------------------------------

    def _menu(self) -> Menu:
        return self.plan.menus[self.data.menu]

    async def _enter_menu(self, menu_id: str, before: list[str] | None = None) -> None:
        self.data.menu = menu_id
        self.data.retries = 0
        if self.data.digits:
            # Digits typed ahead choose at once: the caller knows the way.
            digit, self.data.digits = self.data.digits[0], self.data.digits[1:]
            await self._menu_digit(digit)
            return
        await self._play(PROMPT, [*(before or []), *self._menu().prompt])

    async def _menu_digit(self, digit: str) -> None:
        menu = self._menu()
        self.data.path.append(f"{self.data.menu}:{digit}")
        if digit == BACK:
            await self._back()
        elif digit in menu.options:
            await self._run(menu.options[digit])
        elif digit == AGENT:
            await self._run(menu.agent_action())
        else:
            await self._retry(menu, menu.invalid_prompt)

    async def _retry(self, menu: Menu, explanation: list[str]) -> None:
        self.data.retries += 1
        if self.data.retries >= menu.retries:
            self.data.path.append(f"{self.data.menu}:failure")
            await self._run(menu.failure_action())
            return
        await self._play(PROMPT, [*explanation, *menu.prompt])

    async def _back(self) -> None:
        if not self.data.menu_stack:
            await self._enter_menu(self.data.menu)  # the first menu: say it again
            return
        menu_id, _, language = self.data.menu_stack.pop().partition("@")
        self.data.language = language or self.data.language
        await self._enter_menu(menu_id)

    async def _wait_for_digit(self) -> None:
        self.data.step = WAITING
        self.data.timer_token += 1
        await self._save()
        self.services.start_timer(self.channel_id, self._menu().timeout,
                                  {"type": MENU_TIMEOUT, "token": self.data.timer_token})

    async def _run(self, action: Action) -> None:
        """Carry out a menu option, a line's start or a failure."""
        if action.menu is not None:
            if self.data.menu:
                self.data.menu_stack.append(f"{self.data.menu}@{self.data.language}")
            if action.language is not None:
                self.data.language = action.language
            await self._enter_menu(action.menu)
        elif action.queue is not None or action.bot is not None:
            # The callbot is a later capability: until then its topic's agents take the call.
            topic = action.queue or action.bot or "general"
            self.data.path.append(f"{action.kind}:{topic}")
            await self._enqueue(topic)
        elif action.info is not None:
            self.data.pending = action.then.model_dump_json() if action.then else ""
            await self._play(INFO, list(action.info))
        elif action.hangup:
            await self._play(GOODBYE, ["goodbye"])

    # --- Queues and agents --------------------------------------------------------------------

    async def _enqueue(self, topic: str) -> None:
        self.data.queue = f"{topic}:{self.data.language}"
        self.data.queued_at = _now().isoformat()
        await self._move(CallState.QUEUED)
        if not await self.services.acd.staffed(topic, self.data.language):
            # Nobody could answer now: a callback keeps the place, or the caller is told.
            await self._timeline("no_agents", detail=self.data.queue)
            await self.services.acd.enqueue(self.channel_id, topic, self.data.language)
            if self._callbacks_possible():
                self.data.callback_reason = NO_AGENTS
                await self._offer_callback()
            else:
                await self._play(NO_AGENTS, ["no_agents"])
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
        await self.ari.request("POST", f"/channels/{self.channel_id}/moh",
                               params={"mohClass": self.services.settings.moh_class})
        self.services.start_timer(self.channel_id, self.services.settings.queue_announce_seconds,
                                  {"type": QUEUE_ANNOUNCE, "token": self.data.timer_token})

    async def _announce_position(self, event: Event) -> None:
        if self.data.step != HOLDING or event.get("token") != self.data.timer_token:
            return
        acd = self.services.acd
        topic, _, language = self.data.queue.partition(":")
        position = await acd.position(self.channel_id)
        wait = await acd.estimated_wait(topic, language, max(position, 1),
                                        self.services.settings.default_handle_seconds)
        minutes = max(1, math.ceil(wait / 60))
        await self._timeline("position", detail=f"{position}, about {minutes} min")
        media = await self._speak("queue_position", position=position, minutes=minutes)
        await self._stop_music()
        await self._play_media(ANNOUNCE, [media])

    async def _speak(self, prompt_id: str, **values: object) -> str:
        """A prompt with figures of the moment, rendered now (and cached by its words)."""
        dynamic = self.plan.dynamic_prompts
        key = f"{prompt_id}/{self.data.language}"
        if key not in dynamic:
            key = f"{prompt_id}/en"
        entry = dynamic[key]
        language = key.rpartition("/")[2]
        prompt = Prompt(prompt_id, language, entry["text"], entry.get("speak", ""),
                        entry.get("voice", "")).fill(**values)
        settings = self.services.settings
        path = await asyncio.to_thread(render, prompt, settings.rendered_prompts_path,
                                       settings.tts_engine)
        return f"sound:{path}"

    async def _stop_music(self) -> None:
        with unless_gone():
            await self.ari.request("DELETE", f"/channels/{self.channel_id}/moh")

    async def _assigned(self, event: Event) -> None:
        """The match reserved an agent for this caller: ring the agent's phone."""
        agent = str(event["agent"])
        self.data.agent = agent
        self.data.agent_channel = f"agent-{uuid.uuid4().hex}"
        await self._move(CallState.OFFERED)
        self.services.watch_leg(self.data.agent_channel, self.channel_id)
        await self._timeline("offered", agent)
        settings = self.services.settings
        try:
            await self.ari.request("POST", "/channels", params={
                "endpoint": f"PJSIP/{agent}", "app": settings.ari_app,
                "appArgs": f"agent,{self.channel_id}", "channelId": self.data.agent_channel,
                "callerId": self.data.caller, "timeout": settings.ring_seconds})
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
        bridge = await self.ari.create_bridge(f"ivr:{self.channel_id}")
        self.data.bridge_id = str(bridge["id"])
        await self.ari.request("POST", f"/bridges/{self.data.bridge_id}/addChannel",
                               params={"channel": f"{self.channel_id},{self.data.agent_channel}"})
        await self._stop_music()
        await self.services.acd.answered(self.data.agent, self.channel_id)
        await self.services.acd.leave(self.channel_id)
        self.data.talk_started_at = _now().isoformat()
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
        callback_id = f"cb-{uuid.uuid4().hex}"
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

    # --- Transfers (blind): the agent leaves, the caller goes on ---------------------------

    async def _transfer(self, event: Event) -> None:
        target, value = str(event["to"]), str(event["value"])
        self.data.path.append(f"transfer:{target}:{value}")
        await self._timeline("transfer", self.data.agent, f"{target} {value}")
        leg = self.data.agent_channel
        self._leg_gone()
        with unless_gone():
            await self.ari.hangup(leg)
        await self.services.talk_ended(self.data, self.channel_id)  # the agent's wrap-up
        self.data.agent = self.data.bridge_id = self.data.talk_started_at = ""
        await self._move(CallState.TRANSFERRING)
        if target == "number" and self.plan.transfers.allows(value):
            await self._dial_outside(value)
            return
        # To a queue (the API checked it), or back to this call's own queue.
        queue = value if target == "queue" else self.data.queue
        topic, _, language = queue.partition(":")
        await self._requeue_transferred(topic, language or self.data.language)

    async def _requeue_transferred(self, topic: str, language: str) -> None:
        self.data.queue = f"{topic}:{language}"
        self.data.queued_at = _now().isoformat()
        await self._move(CallState.QUEUED)
        await self.services.acd.enqueue(self.channel_id, topic, language, TRANSFER_PRIORITY)
        await self._timeline("queued", detail=self.data.queue)
        await self._hold()
        self.services.dispatch()

    async def _dial_outside(self, number: str) -> None:
        self.data.outside_channel = f"outside-{uuid.uuid4().hex}"
        self.services.watch_leg(self.data.outside_channel, self.channel_id)
        await self._save()
        await self.ari.request("POST", f"/channels/{self.channel_id}/moh",
                               params={"mohClass": self.services.settings.moh_class})
        await self.ari.request("POST", "/channels", params={
            "endpoint": f"PJSIP/{number}@trunk", "app": self.services.settings.ari_app,
            "appArgs": f"outside,{self.channel_id}", "channelId": self.data.outside_channel,
            "callerId": self.data.caller, "timeout": 30})

    async def _outside_leg(self, event: Event) -> None:
        kind = event["type"]
        gone = kind in ("ChannelDestroyed", "StasisEnd")
        if kind == "StasisStart" and self.data.state == CallState.TRANSFERRING:
            await self._stop_music()
            bridge = await self.ari.create_bridge(f"ivr:{self.channel_id}")
            self.data.bridge_id = str(bridge["id"])
            await self.ari.request("POST", f"/bridges/{self.data.bridge_id}/addChannel", params={
                "channel": f"{self.channel_id},{self.data.outside_channel}"})
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

    # --- After a controller restart -----------------------------------------------------------

    async def resume(self) -> None:
        """Carry on with a call whose events were missed while no controller listened."""
        log.info("call %s resumed in state %s, step %s", self.channel_id, self.data.state,
                 self.data.step)
        if self.data.agent_channel:
            self.services.watch_leg(self.data.agent_channel, self.channel_id)
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

    # --- Actions ------------------------------------------------------------------------------

    async def _play(self, step: str, refs: list[str]) -> None:
        await self._play_media(step, [self.plan.media(ref, self.data.language, self.data.did)
                                      for ref in refs])

    async def _play_media(self, step: str, media: list[str]) -> None:
        self.data.step = step
        self.data.playback_id = uuid.uuid4().hex
        await self._save()  # saved first: a restart in between still knows what plays
        await self.ari.play(self.channel_id, media, playback_id=self.data.playback_id)

    async def _stop_prompt(self) -> None:
        playback_id, self.data.playback_id = self.data.playback_id, ""
        self.data.timer_token += 1  # any running timer is now stale
        if playback_id:
            with unless_gone():
                await self.ari.stop_playback(playback_id)

    async def _end(self, outcome: CallOutcome, reason: str = "normal") -> None:
        self.data.outcome = outcome
        await self._save()
        with unless_gone():  # already gone: its StasisEnd follows or has come
            await self.ari.hangup(self.channel_id, reason=reason)

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

    async def vanished(self) -> None:
        """The call ended while no controller was listening: close its record."""
        if not self.data.outcome:
            self.data.outcome = CallOutcome.UNOBSERVED_END
        await self._finish()

    async def _move(self, target: CallState) -> None:
        check_move(self.data.state, target)
        self.data.state = target
        if target != CallState.ENDED:
            await self._save()

    async def _save(self) -> None:
        try:
            await self.services.store.save(self.data)
        except RedisError as exc:
            # The call goes on from memory; the next save writes everything again.
            log.warning("call %s: live state not saved: %s", self.channel_id, exc)

    async def _timeline(self, kind: str, agent: str = "", detail: str = "") -> None:
        try:
            await self.services.records.event(self.data, kind, agent, detail)
        except SQLAlchemyError as exc:
            log.error("call %s: timeline not written (%s): %s", self.channel_id, kind, exc)

    async def _record(self, what: str) -> None:
        records = self.services.records
        write = {"started": records.started, "answered": records.answered,
                 "ended": records.ended}[what]
        try:
            await write(self.data, _now())
        except SQLAlchemyError as exc:
            log.error("call %s: record not written (%s): %s", self.channel_id, what, exc)


HANDLERS: dict[CallState, dict[str, Handler]] = {
    CallState.RINGING: {"PlaybackFinished": Call._prompt_finished},
    CallState.IN_MENU: {
        "PlaybackFinished": Call._prompt_finished,
        "ChannelDtmfReceived": Call._digit,
        MENU_TIMEOUT: Call._timeout,
    },
    CallState.QUEUED: {
        "PlaybackFinished": Call._prompt_finished,
        "ChannelDtmfReceived": Call._queue_digit,
        AGENT_ASSIGNED: Call._assigned,
        QUEUE_ANNOUNCE: Call._announce_position,
        CALLBACK_TIMEOUT: Call._callback_timeout,
    },
    CallState.OFFERED: {"PlaybackFinished": Call._prompt_finished},
    CallState.TALKING: {TRANSFER: Call._transfer},
}
