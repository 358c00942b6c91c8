"""Live state of calls in Redis: the single source of live truth.

Each call in progress is a hash ``ivr:call:<channel id>``; the set ``ivr:calls:<controller>``
lists the calls one controller runs (``<node>/<Stasis app>``), so that it finds them again after
a restart. Orders for a call (from the API, or a match made by another controller) go to the
pub/sub channel of the controller that runs it: ``ivr:commands:<controller>``.
Counters for /metrics live in the hash ``ivr:metrics:calls``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

from ivr.controller.state import CallState

CALL_TTL_SECONDS = 24 * 3600  # a call's live state outlives no call by more than a day
METRICS_KEY = "ivr:metrics:calls"


def commands_channel(controller: str) -> str:
    """Pub/sub channel of one controller: orders for its calls, as JSON events."""
    return f"ivr:commands:{controller}"


@dataclass
class BotState:
    """What the callbot did on a call: kept with the call, summed up in its record."""

    topic: str = ""  # the menu option's topic
    mode: str = ""  # "speech", or "keypad" for a language with no recognizer
    phase: str = ""  # what the caller's next words answer: question, confirm, keypad
    skill: str = ""  # the queue to hand over to (the matched question's, or the topic)
    transcript: list[str] = field(default_factory=list)
    question_type: str = ""
    confidence: float = 0.0
    pending: str = ""  # the question type the bot asked the caller to confirm
    resolved: bool = False
    handoff: str = ""  # why an agent took over
    misses: int = 0  # not understood, or silence
    barge_ins: int = 0
    choices: list[str] = field(default_factory=list)  # the keypad version's question types
    latencies_ms: list[float] = field(default_factory=list)  # end of speech -> answer audio
    # Per utterance, the time of each stage: audio_s (what was said, up to the end of speech),
    # recognize_s, understand_ms, speak_ms (rendering the answer), first_audio_ms (end of
    # speech to the first audio of the answer); started_at_pause: recognized and understood
    # from the caller's first pause, while the bot waited for the end of the turn.
    stages: list[dict[str, float]] = field(default_factory=list)
    heard_at: float = 0.0  # monotonic time of the last end of speech
    # A complaint being taken down (callbot.intake): its kind and receipt number, the details
    # confirmed so far, the detail asked now, what was heard for it (to be read back), and
    # how many times it was asked.
    intake: str = ""
    receipt: str = ""
    details: dict[str, str] = field(default_factory=dict)
    asking: str = ""
    heard_detail: str = ""
    tries: int = 0
    snoop_channel: str = ""  # the caller's voice...
    media_channel: str = ""  # ...sent to the bot as RTP
    bridge_id: str = ""

    def summary(self) -> dict[str, Any]:
        """For the call record and the agent's screen."""
        return {"topic": self.topic, "mode": self.mode, "transcript": self.transcript,
                "question_type": self.question_type or None, "confidence": self.confidence,
                "pending": self.pending or None, "skill": self.skill or None,
                "resolved": self.resolved, "handoff": self.handoff or None,
                "latencies_ms": self.latencies_ms, "stages": self.stages,
                "barge_ins": self.barge_ins,
                "complaint": {"kind": self.intake, "receipt": self.receipt,
                              "details": self.details} if self.intake else None}


@dataclass
class CallData:
    """What the server knows of one call in progress."""

    channel_id: str
    record_id: str
    did: str
    controller: str = ""  # the controller that runs the call: "<node>/<Stasis app>"
    caller: str = ""
    line: str | None = None
    district: str | None = None
    language: str = "ko"
    dialplan_version: int = 0  # the version the call started with, kept for all of it
    mode: str = ""  # the line's mode when the call came: day, night, holiday, closed
    state: CallState = CallState.RINGING
    step: str = ""  # what the call is doing in its state (which prompt plays...)
    playback_id: str = ""
    menu: str = ""  # the menu the caller is in
    menu_stack: list[str] = field(default_factory=list)  # "menu@language" entries, for '*'
    retries: int = 0  # wrong or missing digits in the current menu
    digits: str = ""  # typed ahead, waiting for the next menu
    timer_token: int = 0  # only the newest digit timer counts
    pending: str = ""  # the action after an information message (JSON)
    callback_reason: str = ""  # why a callback is being offered: a long wait or no agents
    queue: str = ""  # topic:language of the queue the call reached
    queued_at: str = ""
    agent: str = ""  # the agent offered or talking
    agent_channel: str = ""  # the agent's leg of the call
    bridge_id: str = ""
    outside_channel: str = ""  # a department's number the call was transferred to
    consult_channel: str = ""  # the other party of a consultation (agent or department)
    consult_target: str = ""  # "agent:<id>", "queue:<topic:language>" or "number:<digits>"
    consult_agent: str = ""  # the agent consulted, if it is one
    consult_bridge_id: str = ""  # where the agent and the other party talk, the caller held
    consult_started_at: str = ""
    talk_started_at: str = ""
    callback_of: str = ""  # for a callback's call: the record of the call that asked for it
    started_at: str = ""
    answered_at: str = ""
    outcome: str = ""
    hangup_cause: str = ""
    path: list[str] = field(default_factory=list)  # the menu steps taken, "menu:digit"
    listeners: list[str] = field(default_factory=list)  # supervisors' legs and bridges
    bot: BotState = field(default_factory=BotState)

    def to_redis(self) -> dict[str, str]:
        values: dict[str, Any] = {name: getattr(self, name) for name in CALL_FIELDS}
        values["state"] = str(self.state)
        values["path"] = json.dumps(self.path)
        values["menu_stack"] = json.dumps(self.menu_stack)
        values["listeners"] = json.dumps(self.listeners)
        values["bot"] = json.dumps(asdict(self.bot))
        return {key: str(value) if value is not None else "" for key, value in values.items()}

    @classmethod
    def from_redis(cls, values: dict[str, str]) -> CallData:
        data: dict[str, Any] = dict(values)
        data["state"] = CallState(data.get("state", CallState.RINGING))
        data["path"] = json.loads(data.get("path") or "[]")
        data["menu_stack"] = json.loads(data.get("menu_stack") or "[]")
        data["listeners"] = json.loads(data.get("listeners") or "[]")
        data["bot"] = BotState(**json.loads(data.get("bot") or "{}"))
        for number in ("dialplan_version", "retries", "timer_token"):
            data[number] = int(data.get(number) or 0)
        for optional in ("line", "district"):
            data[optional] = data.get(optional) or None
        known = cls.__dataclass_fields__
        return cls(**{key: value for key, value in data.items() if key in known})


CALL_FIELDS = tuple(CallData.__dataclass_fields__)


class CallStore:
    def __init__(self, redis: Redis, controller: str = "") -> None:
        # controller: whose calls this store saves and lists ("" to only load calls)
        self.redis = redis
        self.controller = controller
        self.calls_key = f"ivr:calls:{controller}"
        # What Redis holds of each call this store saved: later saves send only what changed.
        self._saved: dict[str, dict[str, str]] = {}

    @staticmethod
    def call_key(channel_id: str) -> str:
        return f"ivr:call:{channel_id}"

    async def save(self, call: CallData) -> None:
        call.controller = self.controller
        values = call.to_redis()
        key = self.call_key(call.channel_id)
        saved = self._saved.pop(call.channel_id, None)  # back only once Redis has it
        if saved is not None:
            changed = {name: value for name, value in values.items() if saved[name] != value}
            if not changed or not await self.redis.hset(key, mapping=cast(dict[Any, Any],
                                                                           changed)):
                # No field was new to the hash: it is whole. (New fields would mean Redis
                # lost the call, so it is written whole below.)
                self._saved[call.channel_id] = values
                return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=cast(dict[Any, Any], values))
            pipe.expire(key, CALL_TTL_SECONDS)
            pipe.sadd(self.calls_key, call.channel_id)
            await pipe.execute()
        self._saved[call.channel_id] = values

    async def load(self, channel_id: str) -> CallData | None:
        values = cast(dict[str, str], await self.redis.hgetall(self.call_key(channel_id)))
        if not values:
            return None
        return CallData.from_redis(values)

    async def remove(self, channel_id: str) -> None:
        self._saved.pop(channel_id, None)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.call_key(channel_id))
            pipe.srem(self.calls_key, channel_id)
            await pipe.execute()

    async def channel_ids(self) -> set[str]:
        return cast(set[str], await self.redis.smembers(self.calls_key))

    async def count_ended(self, line: str | None, outcome: str) -> None:
        await self.redis.hincrby(METRICS_KEY, f"{line or 'none'}|{outcome}", 1)


async def ended_call_counts(redis: Redis) -> dict[tuple[str, str], int]:
    """Calls ended so far, by (line, outcome), for /metrics."""
    raw = cast(dict[str, str], await redis.hgetall(METRICS_KEY))
    counts: dict[tuple[str, str], int] = {}
    for field_name, value in raw.items():
        line, _, outcome = field_name.partition("|")
        counts[(line, outcome)] = int(value)
    return counts


async def active_call_count(redis: Redis) -> int:
    total = 0
    async for key in redis.scan_iter(match="ivr:calls:*"):
        total += await redis.scard(key)
    return total
