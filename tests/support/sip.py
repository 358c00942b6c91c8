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
    """Counts the RTP packets that reach the caller and how much audio they carry."""

    packets: int = 0
    first_arrival: float = 0.0
    last_arrival: float = 0.0
    timestamps: list[int] = field(default_factory=list)
    payload_types: set[int] = field(default_factory=set)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
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
        self.scenario = SCENARIOS / scenario
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
        self._process = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(self.scenario), "-m", "1", "-s", self.number,
            "-key", "caller", self.caller, "-key", "rtp_port", str(self.rtp_port),
            "-i", "127.0.0.1", "-p", str(free_udp_port()), "-timeout", "90s", "-nostdin",
            "-trace_err", "-error_file", str(self.error_file), self.target,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=self.workdir,
        )
        return self

    async def finished(self, timeout: float = 120) -> SippResult:
        assert self._process is not None
        output, _ = await asyncio.wait_for(self._process.communicate(), timeout)
        if self._transport is not None:
            self._transport.close()
        errors = self.error_file.read_text() if self.error_file.exists() else ""
        return SippResult(self._process.returncode or 0, output.decode(errors="replace"), errors)


async def place_call(scenario: str, number: str, target: str, workdir: Path) -> SippCall:
    return await SippCall(scenario, number, target, workdir).start()
