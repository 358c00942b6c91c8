"""One call from its first event to its last: the call state machine.

Read it top to bottom: ``start`` (StasisStart) decides whether the dialled number is in service,
answers and greets; ``handle`` sends each later ARI event to the handler of the call's current
state; ``_end`` hangs up with a cause; ``_finish`` (StasisEnd) writes the record and forgets the
call. ``resume`` picks a call up again after the controller restarted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ivr.ari import AriClient, AriError, Event
from ivr.controller.records import CallRecords
from ivr.controller.state import CallState, check_move
from ivr.controller.store import CallData, CallStore
from ivr.lines import DidTable
from ivr.models import CallOutcome
from ivr.prompts import media_uri

log = logging.getLogger(__name__)

# Steps: what a call is doing inside its state, kept in Redis so a restart knows.
STEP_NOT_IN_SERVICE = "not_in_service"
STEP_GREETING = "greeting"


@dataclass
class CallServices:
    """What every call uses: Asterisk, live state, records, the DID table, the prompts."""

    ari: AriClient
    store: CallStore
    records: CallRecords
    dids: DidTable
    prompts_dir: Path


def _now() -> datetime:
    return datetime.now(UTC)


Handler = Callable[["Call", Event], Awaitable[None]]


class Call:
    def __init__(self, data: CallData, services: CallServices) -> None:
        self.data = data
        self.services = services
        self.ari = services.ari

    @property
    def channel_id(self) -> str:
        return self.data.channel_id

    # --- The call's first event ---------------------------------------------------------------

    @classmethod
    def from_stasis_start(cls, event: Event, services: CallServices) -> Call:
        channel = event["channel"]
        args = event.get("args") or [channel.get("dialplan", {}).get("exten", "")]
        data = CallData(
            channel_id=channel["id"],
            record_id=uuid.uuid4().hex,
            did=str(args[0]),
            caller=str(channel.get("caller", {}).get("number", "")),
            started_at=_now().isoformat(),
        )
        return cls(data, services)

    async def start(self) -> None:
        """A new call: look up the dialled number, then greet or refuse it."""
        did = self.services.dids.lookup(self.data.did)
        if did is not None:
            self.data.line = did.line
            self.data.district = did.district
        await self._save()
        await self._record("started", _now())
        log.info("call %s from %r to %s: line %s", self.channel_id, self.data.caller,
                 self.data.did, self.data.line or "not in service")
        if did is None:
            await self._announce_not_in_service()
        else:
            await self._answer_and_greet()

    async def _announce_not_in_service(self) -> None:
        # Early media (183) and then a 404: the carrier and the caller both learn that the
        # number does not exist, and the caller is not charged for an answered call.
        await self.ari.progress(self.channel_id)
        await self._play(STEP_NOT_IN_SERVICE, ["ko", "en"])

    async def _answer_and_greet(self) -> None:
        await self.ari.answer(self.channel_id)
        self.data.answered_at = _now().isoformat()
        await self._move(CallState.IN_MENU)
        await self._record("answered", datetime.fromisoformat(self.data.answered_at))
        await self._play(STEP_GREETING, [self.data.language])

    # --- Later events, by state ---------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        kind = event["type"]
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
        playback_id = event.get("playback", {}).get("id", "")
        if playback_id != self.data.playback_id:
            return  # an older prompt, already stopped or replaced
        self.data.playback_id = ""
        if self.data.step == STEP_NOT_IN_SERVICE:
            await self._end(CallOutcome.NOT_IN_SERVICE, reason="unallocated")
        elif self.data.step == STEP_GREETING:
            # The menus (a later capability) take over here; until then the call is complete.
            await self._end(CallOutcome.COMPLETED)

    async def _digit(self, event: Event) -> None:
        log.info("call %s: digit %s in step %s", self.channel_id, event.get("digit"),
                 self.data.step)

    # --- After a controller restart -----------------------------------------------------------

    async def resume(self) -> None:
        """Carry on with a call whose events were missed while no controller listened."""
        log.info("call %s resumed in state %s, step %s", self.channel_id, self.data.state,
                 self.data.step)
        if self.data.playback_id:
            try:
                await self.ari.playback(self.data.playback_id)
                return  # still playing: its PlaybackFinished will come
            except AriError as exc:
                if not exc.not_found:
                    raise
            await self._prompt_finished({"playback": {"id": self.data.playback_id}})
        elif self.data.state == CallState.RINGING:
            await self.start()

    # --- Actions ------------------------------------------------------------------------------

    async def _play(self, step: str, languages: list[str]) -> None:
        self.data.step = step
        self.data.playback_id = uuid.uuid4().hex
        await self._save()  # saved first: a restart in between still knows what plays
        media = [media_uri(self.services.prompts_dir, step, language) for language in languages]
        await self.ari.play(self.channel_id, media, playback_id=self.data.playback_id)

    async def _end(self, outcome: CallOutcome, reason: str = "normal") -> None:
        self.data.outcome = outcome
        await self._save()
        try:
            await self.ari.hangup(self.channel_id, reason=reason)
        except AriError as exc:
            if not exc.not_found:
                raise
            # Already gone: StasisEnd follows or has come.

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
        if not self.data.outcome:
            self.data.outcome = CallOutcome.CALLER_HUNG_UP
        await self._move(CallState.ENDED)
        await self._record("ended", _now())
        try:
            await self.services.store.count_ended(self.data.line, self.data.outcome)
            await self.services.store.remove(self.channel_id)
        except RedisError as exc:
            log.error("call %s: live state not cleared: %s", self.channel_id, exc)
        log.info("call %s ended: %s", self.channel_id, self.data.outcome)

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

    async def _record(self, what: str, at: datetime) -> None:
        records = self.services.records
        write = {"started": records.started, "answered": records.answered,
                 "ended": records.ended}[what]
        try:
            await write(self.data, at)
        except SQLAlchemyError as exc:
            log.error("call %s: record not written (%s): %s", self.channel_id, what, exc)


HANDLERS: dict[CallState, dict[str, Handler]] = {
    CallState.RINGING: {"PlaybackFinished": Call._prompt_finished},
    CallState.IN_MENU: {
        "PlaybackFinished": Call._prompt_finished,
        "ChannelDtmfReceived": Call._digit,
    },
}
