"""What every part of a call shares: its live data, the services it uses, and the actions all
steps are made of (play, stop, move, save, write the timeline, end).

A call is one ``Call`` object (``call.py``); its steps are grouped by concern in ``menus.py``,
``bot.py``, ``queueing.py``, ``transfers.py`` and ``listen.py``, each a class the call inherits
from this one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from callbot.service import Callbot
from ivr.acd.core import Acd
from ivr.ari import AriClient, Event, unless_gone
from ivr.controller.records import CallRecords
from ivr.controller.state import CallState, check_move
from ivr.controller.store import CallData, CallStore
from ivr.dialplan.model import Action, Dialplan, Menu
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
TRANSFER_COMPLETE = "TransferComplete"  # ... after consulting: the other party takes the call
TRANSFER_CANCEL = "TransferCancel"  # ... or not: the agent goes back to the caller
TRANSFER_PRIORITY = 5  # a transferred caller has waited once already: ahead of new callers

MENU_TIMEOUT = "MenuTimeout"  # a synthetic event: the caller pressed nothing in time

BRIDGE_PREFIX = "ivr:"  # bridges the controllers make: "ivr:<stasis app>:<call>"

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
    callbot: Callbot
    post: Callable[[str, Event], None]  # (channel id, event): into the call's queue, in order

    async def bridge(self, owner: str, channels: list[str]) -> str:
        """A new mixing bridge with these channels in it; its name tells which controller made
        it (``ivr:<stasis app>:<call>``), so that a restart removes only its own empty ones."""
        return await self.ari.bridge_channels(
            f"{BRIDGE_PREFIX}{self.settings.stasis_app}:{owner}", channels)

    async def talk_ended(self, data: CallData, call_id: str, keep_bridge: bool = False) -> None:
        """An agent stopped talking with a caller: handle time, the agent's wrap-up, and the
        bridge gone too (unless the caller stays in it with someone else)."""
        talk = (now() - datetime.fromisoformat(data.talk_started_at)).total_seconds()
        await self.acd.handled(data.queue, talk)
        await self.acd.wrap_up(data.agent, call_id)
        self.start_wrap_up(data.agent)
        if data.bridge_id and not keep_bridge:
            with unless_gone():
                await self.ari.destroy_bridge(data.bridge_id)


def now() -> datetime:
    return datetime.now(UTC)


class CallBase:
    def __init__(self, data: CallData, services: CallServices, plan: Dialplan) -> None:
        self.data = data
        self.services = services
        self.ari = services.ari
        self.plan = plan  # the version the call started with, for all of its life

    @property
    def channel_id(self) -> str:
        return self.data.channel_id

    async def _enqueue(self, topic: str) -> None:
        """Put the caller in the queue of a topic (``queueing.py``)."""
        raise NotImplementedError

    async def _leave_queue_or_agent(self) -> None:
        """The caller hung up: set free what the call held (``queueing.py`` and the steps
        that add to it)."""

    async def _start_bot(self, topic: str) -> None:
        """Hand the caller to the callbot for a topic (``bot.py``)."""
        raise NotImplementedError

    def _menu(self) -> Menu:
        """The menu the caller is in (``menus.py``)."""
        raise NotImplementedError

    async def _run(self, action: Action) -> None:
        """Carry out a menu option, a line's start or a failure (``menus.py``)."""
        raise NotImplementedError

    async def _retry(self, menu: Menu, explanation: list[str]) -> None:
        """The menu once more after ``explanation``, or its failure action (``menus.py``)."""
        raise NotImplementedError

    async def _open_front_door(self, menu_id: str) -> bool:
        """Listen for speech at this menu if its line has it as a front door
        (``front_door.py``); False if callers only press keys there."""
        raise NotImplementedError

    async def _close_front_door(self) -> None:
        """A key was pressed at the front door: stop listening."""
        raise NotImplementedError

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
            await write(self.data, now())
        except SQLAlchemyError as exc:
            log.error("call %s: record not written (%s): %s", self.channel_id, what, exc)

    async def _dial(self, endpoint: str, leg: str, channel_id: str, timeout: int) -> None:
        """Ring a leg of this call; its events come back here (``LEGS`` in ``app.py``)."""
        await self.ari.request("POST", "/channels", params={
            "endpoint": endpoint, "app": self.services.settings.stasis_app,
            "appArgs": f"{leg},{self.channel_id}", "channelId": channel_id,
            "callerId": self.data.caller, "timeout": timeout})

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

    async def _start_music(self) -> None:
        await self.ari.request("POST", f"/channels/{self.channel_id}/moh",
                               params={"mohClass": self.services.settings.moh_class})

    async def _stop_music(self) -> None:
        with unless_gone():
            await self.ari.request("DELETE", f"/channels/{self.channel_id}/moh")

