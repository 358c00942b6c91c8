"""Which recognizer each language should use, measured on telephone audio (8 kHz G.711 and
back to 16 kHz, as calls reach the bot): accuracy, CPU per second of audio, time per utterance,
memory and start time of each engine, in its real worker process.

- Korean: the 25 recordings of natural speech in ``../shared/speech/ko`` (read from there,
  never copied), character error rate without spaces and punctuation.
- English: held-out English questions spoken by espeak-ng, word error rate, and how many of
  them the bot then understands (its best candidate is the expected question type).

Whisper is measured without and with its vocabulary prompt (``*_vocabulary``: the knowledge
base's words as the text said before; ``ModelSettings.whisper_vocabulary``, on by default).

`python -m bench.speech` prints the table; `make bench` includes it (``results.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.understanding import OUT_OF_DOMAIN, PROJECT, held_out, understanding
from callbot.knowledge import load_seed
from callbot.recognizers import (
    ModelSettings,
    RecognizerError,
    build_recognizers,
    close_recognizers,
)
from callbot.understand import Understanding
from tests.support.speech import (
    character_errors,
    korean_recordings,
    telephone,
    upsampled,
    word_errors,
)

# (engine, language, Whisper's vocabulary prompt): the candidates measured for each line.
CANDIDATES = (("whisper", "ko", False), ("whisper", "ko", True), ("vosk", "ko", False),
              ("whisper", "en", False), ("whisper", "en", True), ("pocketsphinx", "en", False))
ENGLISH_QUESTIONS = 40
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# (audio, what was said, the question type expected, "" for Korean)
Speech = list[tuple[bytes, str, str]]


def english_speech(folder: Path) -> Speech:
    """Held-out English questions said by espeak-ng, through the telephone band."""
    questions = [q for q in held_out() if q.language == "en" and q.expected != OUT_OF_DOMAIN]
    spoken = []
    for number, question in enumerate(questions[:ENGLISH_QUESTIONS]):
        raw = folder / f"en-{number}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), question.text],
                       check=True)
        spoken.append((upsampled(telephone(raw, folder), folder), question.text,
                       question.expected))
    return spoken


def korean_speech(folder: Path) -> Speech:
    return [(upsampled(telephone(path, folder), folder), text, "")
            for path, text in korean_recordings()]


async def _measure(engine: str, language: str, speech: Speech, models: ModelSettings,
                   model: Understanding) -> dict[str, Any]:
    entries = load_seed(PROJECT / "knowledge" / "seed")
    started = time.perf_counter()
    try:
        recognizers = build_recognizers({language: engine}, models, entries)
    except RecognizerError as exc:
        return {"skipped": str(exc)}
    load_seconds = time.perf_counter() - started
    recognizer = recognizers[language]
    try:
        (pid,) = recognizer.pool.pids()
        cpu_before = _cpu_seconds(pid)
        errors = length = understood = 0
        walls = []
        audio = 0.0
        for samples, said, expected in speech:
            started = time.perf_counter()
            heard = await recognizer.recognize(samples)
            walls.append(time.perf_counter() - started)
            audio += len(samples) / 32000
            wrong, size = (character_errors(heard.text, said) if language == "ko"
                           else word_errors(heard.text, said))
            errors, length = errors + wrong, length + size
            if expected:
                candidates = model.match(heard.text, language).candidates
                understood += bool(candidates and candidates[0].question_type == expected)
        cpu = _cpu_seconds(pid) - cpu_before
        accuracy = ({} if language == "ko"
                    else {"understood": round(understood / len(speech), 3)})
        return {
            "utterances": len(speech), "audio_seconds": round(audio, 1),
            ("cer" if language == "ko" else "wer"): round(errors / length, 3), **accuracy,
            "cpu_seconds_per_audio_second": round(cpu / audio, 3),
            "seconds_per_utterance_p50": round(statistics.median(walls), 3),
            "seconds_per_utterance_max": round(max(walls), 3),
            "worker_memory_mb": _rss_mb(pid), "start_seconds": round(load_seconds, 2),
        }
    finally:
        close_recognizers(recognizers)


async def measure(cache: Path | None = None) -> dict[str, Any]:
    """Every candidate, one worker each (one thread), one utterance at a time."""
    models = ModelSettings(cache=cache or PROJECT / ".cache" / "models", workers=1)
    model, _ = understanding()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        speech = {"ko": await asyncio.to_thread(korean_speech, folder),
                  "en": await asyncio.to_thread(english_speech, folder)}
        figures: dict[str, Any] = {}
        for engine, language, vocabulary in CANDIDATES:
            name = f"{engine}_{language}" + ("_vocabulary" if vocabulary else "")
            figures[name] = await _measure(engine, language, speech[language],
                                           replace(models, whisper_vocabulary=vocabulary),
                                           model)
    figures["audio"] = ("telephone band: 300-3400 Hz, 8 kHz G.711 mu-law, back to 16 kHz; "
                        "ko: 25 natural recordings (../shared/speech/ko), en: held-out "
                        "questions by espeak-ng")
    return figures


def main() -> None:
    figures = asyncio.run(measure())
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    print(f"{'recognizer':<26} {'error':>7} {'underst':>7} {'cpu/s':>7} {'p50 s':>7} "
          f"{'MB':>7} {'start':>6}", file=sys.stderr)
    for name, row in figures.items():
        if isinstance(row, dict) and "utterances" in row:
            error = row.get("cer", row.get("wer"))
            print(f"{name:<26} {error:>7} {row.get('understood', '-'):>7} "
                  f"{row['cpu_seconds_per_audio_second']:>7} "
                  f"{row['seconds_per_utterance_p50']:>7} {row['worker_memory_mb']:>7} "
                  f"{row['start_seconds']:>6}", file=sys.stderr)


if __name__ == "__main__":
    main()
