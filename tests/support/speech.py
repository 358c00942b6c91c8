"""A caller's voice for tests: a question spoken by espeak-ng, as telephone audio.

``spoken(text)`` renders the words at 8 kHz (what a caller's phone sends); ``alaw`` encodes
them as G.711 A-law for RTP; ``write_pcap`` writes the RTP packets as a capture file, so the
same voice can be replayed by SIPp (``play_pcap_audio``) or inspected with tshark.
``upsampled`` turns the 8 kHz words into what the bot's recognizers get (16 kHz).
"""

from __future__ import annotations

import re
import struct
import subprocess
import wave
from array import array
from collections.abc import Sequence
from pathlib import Path

FRAME = 160  # 20 ms at 8 kHz


def spoken(text: str, folder: Path, voice: str = "en-us", rate: int = 8000) -> bytes:
    """16-bit little-endian mono samples of ``text`` said by espeak-ng, at ``rate``."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"say-{abs(hash((text, voice)))}.wav"
    converted = raw.with_suffix(f".{rate}.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(converted)],
                   check=True)
    with wave.open(str(converted)) as audio:
        return bytes(audio.readframes(audio.getnframes()))


def upsampled(samples: bytes, folder: Path, rate: int = 16000) -> bytes:
    """8 kHz telephone samples resampled by sox to ``rate``: a caller's voice as Asterisk hands
    it to the bot (slin16)."""
    folder.mkdir(parents=True, exist_ok=True)
    narrow = folder / f"narrow-{abs(hash(samples))}.wav"
    wide = narrow.with_suffix(f".{rate}.wav")
    with wave.open(str(narrow), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples)
    subprocess.run(["sox", str(narrow), "-r", str(rate), str(wide)], check=True)
    with wave.open(str(wide)) as audio:
        return bytes(audio.readframes(audio.getnframes()))


def _alaw_sample(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0
    magnitude = min(abs(sample), 32635) >> 3 if sample >= 0 else min(-sample - 1, 32635) >> 3
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
    return (code | sign) ^ 0x55


_ALAW = bytes(_alaw_sample(value) for value in range(-32768, 32768))


def alaw(samples: bytes) -> bytes:
    """G.711 A-law of 16-bit little-endian samples."""
    values = array("h", samples)
    return bytes(_ALAW[value + 32768] for value in values)


def frames(payload: bytes) -> list[bytes]:
    """20 ms RTP payloads (the last one padded with A-law silence)."""
    chunks = [payload[i:i + FRAME] for i in range(0, len(payload), FRAME)]
    if chunks and len(chunks[-1]) < FRAME:
        chunks[-1] += bytes([0xD5]) * (FRAME - len(chunks[-1]))
    return chunks


def write_pcap(payloads: list[bytes], path: Path, port: int = 6000) -> Path:
    """The payloads as RTP (PCMA, 20 ms apart) in UDP/IPv4 packets of a pcap file."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for number, payload in enumerate(payloads):
        rtp = struct.pack("!BBHII", 0x80, 8, number & 0xFFFF, number * FRAME, 0x5EED) + payload
        udp = struct.pack("!HHHH", port, port, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), number & 0xFFFF, 0, 64, 17,
                         0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
        ethernet = b"\x00" * 12 + b"\x08\x00" + ip
        seconds, micros = divmod(number * 20_000, 1_000_000)
        out += struct.pack("<IIII", seconds, micros, len(ethernet), len(ethernet)) + ethernet
    path.write_bytes(bytes(out))
    return path


def tone(path: Path, seconds: float = 0.5) -> bytes:
    """A short beep in a file (its format from the suffix: .wav, .mp3), like a recording."""
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", str(path), "synth", str(seconds),
                    "sine", "440"], check=True)
    return path.read_bytes()


# --- Natural Korean speech (../shared/speech/ko, read from there, never copied) -------------

KOREAN_SPEECH = Path(__file__).resolve().parents[3] / "shared" / "speech" / "ko"


def korean_recordings() -> list[tuple[Path, str]]:
    """The recordings of natural Korean speech beside the project, with their transcripts."""
    listing = KOREAN_SPEECH / "list.tsv"
    if not listing.exists():
        raise FileNotFoundError(f"{listing}: the natural Korean speech is not beside the project")
    pairs = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        name, _, text = line.partition("\t")
        if name and text:
            pairs.append((KOREAN_SPEECH / name, text))
    return pairs


def telephone(recording: Path, folder: Path, start: float = 0.0,
              seconds: float | None = None) -> bytes:
    """A recording as a caller's phone sends it: 300-3400 Hz, 8 kHz, G.711 (mu-law) and back
    to 16-bit samples at 8 kHz (optionally only ``seconds`` from ``start``)."""
    folder.mkdir(parents=True, exist_ok=True)
    narrow = folder / f"{recording.stem}-{start}-{seconds}.ulaw.wav"
    plain = narrow.with_suffix(".pcm.wav")
    trim = ["trim", str(start)] + ([str(seconds)] if seconds is not None else [])
    subprocess.run(["sox", str(recording), "-r", "8000", "-c", "1", "-e", "mu-law", str(narrow),
                    *trim, "sinc", "300-3400"], check=True, stderr=subprocess.DEVNULL)
    subprocess.run(["sox", str(narrow), "-e", "signed", "-b", "16", str(plain)], check=True)
    with wave.open(str(plain)) as audio:
        return bytes(audio.readframes(audio.getnframes()))


def edit_distance(heard: Sequence[str], said: Sequence[str]) -> int:
    """Insertions, deletions and substitutions from ``said`` to ``heard`` (Levenshtein)."""
    row = list(range(len(said) + 1))
    for i, x in enumerate(heard, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(said, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[len(said)]


def character_errors(heard: str, said: str) -> tuple[int, int]:
    """(edit distance, length) over the characters without spaces and punctuation: the
    character error rate's parts."""
    a, b = re.sub(r"[\W_]", "", heard), re.sub(r"[\W_]", "", said)
    return edit_distance(a, b), len(b)


def word_errors(heard: str, said: str) -> tuple[int, int]:
    """(edit distance, length) over the words, case and punctuation aside: the word error
    rate's parts."""
    a, b = re.findall(r"[a-z0-9']+", heard.lower()), re.findall(r"[a-z0-9']+", said.lower())
    return edit_distance(a, b), len(b)
