"""Real SIP calls for tests: SIPp as the carrier's caller, and a UDP socket that receives the
RTP the server sends to that caller (the SDP of the scenario points the media there)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parents[1] / "sipp"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RtpSink(asyncio.DatagramProtocol):
    """The caller's RTP endpoint: counts the audio the server sends, and presses keys the
    RFC 2833 way (telephone-event packets) back to where that audio comes from."""

    packets: int = 0
    first_arrival: float = 0.0
    last_arrival: float = 0.0
    timestamps: list[int] = field(default_factory=list)
    payload_types: set[int] = field(default_factory=set)
    peer: tuple[str, int] | None = None
    transport: asyncio.DatagramTransport | None = None
    _seq: int = 1000
    _timestamp: int = 80000
    _ssrc: int = 0x1200ABCD

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        self.peer = addr
        now = time.monotonic()
        if not self.packets:
            self.first_arrival = now
        self.last_arrival = now
        self.packets += 1
        self.payload_types.add(data[1] & 0x7F)
        self.timestamps.append(struct.unpack("!I", data[4:8])[0])

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio received, from 20 ms packets (8 kHz G.711)."""
        return self.packets * 0.02

    def quiet_for(self) -> float:
        return time.monotonic() - self.last_arrival if self.packets else 0.0

    def _send(self, payload_type: int, payload: bytes, marker: bool, timestamp: int) -> None:
        assert self.transport is not None and self.peer is not None, "no RTP from the server yet"
        self._seq = (self._seq + 1) & 0xFFFF
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type, self._seq,
                             timestamp & 0xFFFFFFFF, self._ssrc)
        self.transport.sendto(header + payload, self.peer)

    async def press(self, digits: str, gap: float = 0.3) -> None:
        """Press keys as RFC 2833 events: 100 ms each, ``gap`` seconds apart."""
        events = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
        for digit in digits:
            self._timestamp += 8000
            start = self._timestamp
            for step in range(1, 6):  # 5 packets, 20 ms apart, growing duration
                payload = struct.pack("!BBH", events[digit], 10, step * 160)
                self._send(101, payload, step == 1, start)
                await asyncio.sleep(0.02)
            for _ in range(3):  # the end of the event, sent three times as RFC 2833 asks
                self._send(101, struct.pack("!BBH", events[digit], 0x80 | 10, 800), False, start)
            self._timestamp += 800
            await asyncio.sleep(gap)


    async def say(self, payloads: list[bytes]) -> None:
        """Speak: G.711 A-law payloads of 20 ms each, sent in real time."""
        start = time.monotonic()
        for number, payload in enumerate(payloads):
            self._timestamp += 160
            self._send(8, payload, number == 0, self._timestamp)
            await asyncio.sleep(max(0.0, start + (number + 1) * 0.02 - time.monotonic()))

    async def silence(self, seconds: float) -> None:
        """The quiet of a line (A-law silence), so the other side hears the caller stop."""
        await self.say([bytes([0xD5]) * 160] * int(seconds / 0.02))


@dataclass
class SippResult:
    returncode: int
    output: str
    errors: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class SippCall:
    """One SIPp call placed in the background; ``await call.finished()`` for its result."""

    def __init__(self, scenario: str, number: str, target: str, workdir: Path,
                 caller: str = "0299990000") -> None:
        self.scenario = SCENARIOS / scenario  # a name in tests/sipp, or a written file's path
        self.number = number
        self.target = target
        self.caller = caller
        self.workdir = workdir
        self.rtp = RtpSink()
        self.rtp_port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> SippCall:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self.rtp, local_addr=("127.0.0.1", 0)
        )
        self.rtp_port = self._transport.get_extra_info("sockname")[1]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.error_file = self.workdir / f"sipp-{self.number}-{self.rtp_port}-errors.log"
        self.message_file = self.workdir / f"sipp-{self.number}-{self.rtp_port}-messages.log"
        self._process = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(self.scenario), "-m", "1", "-s", self.number,
            "-key", "caller", self.caller, "-key", "rtp_port", str(self.rtp_port),
            "-i", "127.0.0.1", "-p", str(free_udp_port()), "-timeout", "240s", "-nostdin",
            "-trace_err", "-error_file", str(self.error_file),
            "-trace_msg", "-message_file", str(self.message_file), self.target,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=self.workdir,
        )
        return self

    async def finished(self, timeout: float = 240) -> SippResult:
        assert self._process is not None
        output, _ = await asyncio.wait_for(self._process.communicate(), timeout)
        if self._transport is not None:
            self._transport.close()
        errors = self.error_file.read_text() if self.error_file.exists() else ""
        return SippResult(self._process.returncode or 0, output.decode(errors="replace"), errors)

    @property
    def running(self) -> bool:
        """SIPp still runs: the call is up, or being set up (it ends at the server's BYE)."""
        return self._process is not None and self._process.returncode is None

    async def stop(self) -> None:
        """End SIPp if it still runs (a call given up on) and close the RTP socket: safe to
        call at any time, also after ``finished``."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        if self._transport is not None:
            self._transport.close()


async def place_call(scenario: str, number: str, target: str, workdir: Path) -> SippCall:
    return await SippCall(scenario, number, target, workdir).start()
