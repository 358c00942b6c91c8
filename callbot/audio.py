"""The caller's voice as it reaches the bot: RTP from Asterisk's externalMedia channel, cut into
utterances by voice activity.

Asterisk sends the caller's audio (a snoop on the caller's channel, bridged with an
externalMedia channel) as RTP with 16 kHz signed linear payload (``slin16``), in network byte
order. ``Listener`` receives it on a UDP port of its own, turns it into 16-bit little-endian
samples, and runs ``VoiceActivity`` on 20 ms frames: it says when the caller starts speaking
(for barge-in), when the caller pauses (the bot may start recognizing what was said so far,
so that the answer is ready sooner), and hands over each utterance when the caller stops (end
of speech).

Voice activity is by energy against a noise floor that follows the line's background level, so
it works on quiet and on noisy lines alike; what is said is the recognizer's job.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

RATE = 16000  # samples per second the recognizers get
FRAME_SAMPLES = RATE // 50  # 20 ms
FRAME_BYTES = FRAME_SAMPLES * 2
RTP_HEADER = 12


@dataclass
class VadSettings:
    start_frames: int = 4  # 80 ms of voice: the caller is speaking (not a click)
    # This much quiet after speech: the utterance is over. Part of every answer's delay, so
    # kept short; a pause inside a sentence (a comma) is shorter still.
    end_silence_ms: int = 550
    # This much quiet: the caller may have finished. What was said so far is handed over at
    # once, to be recognized while the quiet goes on; if it lasts to end_silence_ms, that
    # recognition is the utterance's, and the answer comes that much sooner.
    pause_ms: int = 200
    pre_roll_ms: int = 200  # kept from before the start, so the first syllable is not cut
    max_utterance_s: float = 15.0  # an utterance is cut here, whatever else happens
    above_floor_db: float = 12.0  # voice is this much louder than the background
    min_voice_db: float = 30.0  # and never quieter than this (dB of 16-bit RMS)


@dataclass
class Utterance:
    audio: bytes  # 16 kHz, 16-bit little-endian mono
    # time.monotonic() of the end of speech: the last voiced frame, not the moment the quiet
    # after it was long enough to tell (that is end_of_turn_ms later)
    ended_at: float
    end_of_turn_ms: int = 0
    number: int = 0  # the utterance's number on its line (1, 2...)
    voiced_frames: int = 0  # frames up to the last voiced one: the same at a pause and at the
    # end of the utterance unless the caller spoke again in between

    @property
    def seconds(self) -> float:
        return len(self.audio) / 2 / RATE


def level_db(frame: bytes) -> float:
    """The RMS level of a frame of 16-bit samples, in dB (0 for silence, ~90 at full scale)."""
    samples = array("h", frame)
    if not samples:
        return 0.0
    power = sum(sample * sample for sample in samples) / len(samples)
    return 10 * math.log10(power) if power > 1 else 0.0


START, PAUSE, END = "start", "pause", "end"


@dataclass(frozen=True)
class VoiceEvent:
    kind: str  # START (the caller speaks), PAUSE (quiet: maybe the end), END (the end)
    utterance: Utterance | None = None  # at PAUSE, what was said so far; at END, all of it


@dataclass
class VoiceActivity:
    """Frames in; speech starts, pauses and finished utterances out."""

    settings: VadSettings = field(default_factory=VadSettings)
    floor_db: float = 20.0
    speaking: bool = False
    utterances: int = 0
    _voiced_run: int = 0
    _quiet_ms: int = 0
    _pre_roll: deque[bytes] = field(default_factory=deque)
    _utterance: list[bytes] = field(default_factory=list)

    def feed(self, frame: bytes) -> VoiceEvent | None:
        """One 20 ms frame: what it tells of the caller's speech, if anything."""
        settings = self.settings
        level = level_db(frame)
        voiced = level >= max(self.floor_db + settings.above_floor_db, settings.min_voice_db)
        if not voiced and not self.speaking:
            # The background: the floor follows it slowly, up or down.
            self.floor_db += (level - self.floor_db) * 0.05
        if not self.speaking:
            self._pre_roll.append(frame)
            while len(self._pre_roll) > settings.pre_roll_ms // 20:
                self._pre_roll.popleft()
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._voiced_run >= settings.start_frames:
                self.speaking = True
                self._quiet_ms = 0
                self._utterance = list(self._pre_roll)
                self._pre_roll.clear()
                self.utterances += 1
                return VoiceEvent(START)
            return None
        self._utterance.append(frame)
        self._quiet_ms = 0 if voiced else self._quiet_ms + 20
        too_long = len(self._utterance) * 20 >= settings.max_utterance_s * 1000
        if self._quiet_ms >= settings.end_silence_ms or too_long:
            utterance = self._so_far()
            self.speaking = False
            self._voiced_run = 0
            self._utterance = []
            return VoiceEvent(END, utterance)
        if self._quiet_ms == settings.pause_ms:
            return VoiceEvent(PAUSE, self._so_far())
        return None

    def _so_far(self) -> Utterance:
        return Utterance(b"".join(self._utterance), time.monotonic() - self._quiet_ms / 1000,
                         self._quiet_ms, self.utterances,
                         len(self._utterance) - self._quiet_ms // 20)


def rtp_payload(packet: bytes) -> bytes:
    """The payload of an RTP packet (header, CSRCs and extension skipped)."""
    if len(packet) < RTP_HEADER or packet[0] >> 6 != 2:
        return b""
    offset = RTP_HEADER + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10 and len(packet) >= offset + 4:  # header extension
        offset += 4 + 4 * int.from_bytes(packet[offset + 2:offset + 4], "big")
    payload = packet[offset:]
    if packet[0] & 0x20 and payload:  # padding
        payload = payload[:-payload[-1]]
    return payload


def network_to_native(payload: bytes) -> bytes:
    """slin16 on the wire is big-endian; recognizers want little-endian samples."""
    samples = array("h")
    samples.frombytes(payload[: len(payload) // 2 * 2])
    samples.byteswap()
    return samples.tobytes()


Heard = Callable[[VoiceEvent], None]


class Listener(asyncio.DatagramProtocol):
    """One call's audio: a UDP port that Asterisk's externalMedia channel sends RTP to."""

    def __init__(self, on_voice: Heard, settings: VadSettings | None = None) -> None:
        self.vad = VoiceActivity(settings or VadSettings())
        self.on_voice = on_voice
        self.transport: asyncio.DatagramTransport | None = None
        self.packets = 0
        self._pending = b""

    @classmethod
    async def open(cls, on_voice: Heard, settings: VadSettings | None = None) -> Listener:
        loop = asyncio.get_running_loop()
        _, listener = await loop.create_datagram_endpoint(
            lambda: cls(on_voice, settings), local_addr=("127.0.0.1", 0))
        return listener

    @property
    def address(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1
        self._pending += network_to_native(rtp_payload(data))
        while len(self._pending) >= FRAME_BYTES:
            frame, self._pending = self._pending[:FRAME_BYTES], self._pending[FRAME_BYTES:]
            event = self.vad.feed(frame)
            if event is not None:
                self.on_voice(event)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
