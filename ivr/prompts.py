"""Prompts: their texts per language (audio_prompts/prompts.yaml), rendered into audio files.

A text is spoken by espeak-ng (or gTTS where the network allows and ``IVR_TTS_ENGINE=gtts``)
and sox turns it into 8 kHz mono 16-bit WAV, what Asterisk plays on a phone call. A recording
an admin uploaded (``audio_prompts/recordings/<lang>/<id>.wav|mp3``) wins over the text.

Each rendering's file name carries a hash of what produced it, so nothing is rendered twice, a
changed text gets a new file, and a call of an older dialplan version keeps its old audio.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ivr.dialplan.source import Problem, SourceFile

log = logging.getLogger(__name__)

# espeak-ng voices by language. Chinese is spoken from pinyin and Japanese from kana (the
# `speak:` form of a text); Mongolian has no voice: a recording or English is used instead.
ESPEAK_VOICES = {"ko": "ko", "en": "en-us", "vi": "vi", "zh": "cmn-latn-pinyin", "ja": "ja"}
GTTS_LANGUAGES = {"ko": "ko", "en": "en", "vi": "vi", "zh": "zh-CN", "ja": "ja"}
SAMPLE_RATE = 8000
OFFICE = "{office}"  # replaced by the name of the office whose number was dialled
PLACEHOLDER = re.compile(r"\{(\w+)\}")  # {office} at publish; {position}, {minutes} in a call
RECORDING_SUFFIXES = (".wav", ".mp3")


class PromptError(Exception):
    """A prompt that cannot be rendered."""


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    language: str
    text: str  # as written (shown to admins and agents)
    speak: str = ""  # what the TTS engine is given, when it cannot read `text` itself
    voice: str = ""  # the language whose voice speaks it, when not its own (no voice exists)

    @property
    def spoken(self) -> str:
        return self.speak or self.text

    @property
    def voice_language(self) -> str:
        return self.voice or self.language

    @property
    def placeholders(self) -> set[str]:
        return set(PLACEHOLDER.findall(self.text + " " + self.speak))

    @property
    def templated(self) -> bool:
        """Names the dialled office: rendered once per DID when published."""
        return "office" in self.placeholders

    @property
    def dynamic(self) -> bool:
        """Says figures known only during a call (a position in line): rendered then."""
        return bool(self.placeholders - {"office"})

    def fill(self, **values: object) -> Prompt:
        text, speak = self.text, self.speak
        for name, value in values.items():
            text = text.replace(f"{{{name}}}", str(value))
            speak = speak.replace(f"{{{name}}}", str(value))
        return Prompt(self.prompt_id, self.language, text, speak, self.voice)

    def for_office(self, name: str) -> Prompt:
        return self.fill(office=name)


PromptTexts = dict[str, dict[str, Prompt]]  # prompt id -> language -> prompt


def parse_prompt_texts(source: SourceFile) -> tuple[PromptTexts, list[Problem]]:
    problems = list(source.problems)
    texts: PromptTexts = {}
    data = source.data if isinstance(source.data, dict) else {}
    entries = data.get("prompts")
    if source.problems:
        return texts, problems
    if not isinstance(entries, dict):
        problems.append(source.problem(("prompts",), "expected a mapping 'prompts:' of prompt ids"))
        return texts, problems
    for prompt_id, by_language in entries.items():
        if not isinstance(by_language, dict):
            problems.append(source.problem(("prompts", prompt_id),
                                           f"prompt {prompt_id!r}: expected texts by language"))
            continue
        for language, value in by_language.items():
            where = ("prompts", prompt_id, language)
            if isinstance(value, str):
                prompt = Prompt(prompt_id, language, value)
            elif isinstance(value, dict) and isinstance(value.get("text"), str):
                prompt = Prompt(prompt_id, language, value["text"], str(value.get("speak", "")),
                                str(value.get("voice", "")))
            else:
                problems.append(source.problem(where, f"prompt {prompt_id!r} in {language}: "
                                               "expected a text or {text:, speak:}"))
                continue
            if not prompt.text.strip():
                problems.append(source.problem(where, f"prompt {prompt_id!r} in {language} "
                                               "is empty"))
                continue
            texts.setdefault(prompt_id, {})[language] = prompt
    return texts, problems


def has_voice(language: str, engine: str) -> bool:
    voices = GTTS_LANGUAGES if engine == "gtts" else ESPEAK_VOICES
    return language in voices


def _speak_espeak(text: str, language: str, wav_out: Path) -> None:
    voice = ESPEAK_VOICES.get(language)
    if voice is None:
        raise PromptError(f"espeak-ng has no voice for language {language!r}")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "170", "-w", str(wav_out), text],
                   check=True, capture_output=True)


def _speak_gtts(text: str, language: str, mp3_out: Path) -> None:
    from gtts import gTTS  # type: ignore[import-not-found,unused-ignore]  # extra: .[gtts]

    if language not in GTTS_LANGUAGES:
        raise PromptError(f"gTTS has no voice for language {language!r}")
    gTTS(text=text, lang=GTTS_LANGUAGES[language]).save(str(mp3_out))


def to_telephone_wav(source: Path, target: Path) -> None:
    """Convert any audio sox reads into 8 kHz mono 16-bit WAV, written atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part.wav")
    subprocess.run(["sox", str(source), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
                    "-e", "signed-integer", str(partial)], check=True, capture_output=True)
    partial.replace(target)  # Asterisk never plays a half-written file


def _digest(*parts: str | bytes) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part if isinstance(part, bytes) else part.encode())
        sha.update(b"\0")
    return sha.hexdigest()[:16]


def recording_for(recordings_dir: Path, prompt_id: str, language: str) -> Path | None:
    for suffix in RECORDING_SUFFIXES:
        candidate = recordings_dir / language / f"{prompt_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def render(prompt: Prompt, rendered_dir: Path, engine: str = "espeak",
           recording: Path | None = None) -> Path:
    """The audio file of a prompt, rendered now unless an identical rendering exists.

    Returns the path without extension, as Asterisk's ``sound:`` media takes it.
    """
    if recording is not None:
        name = f"{prompt.prompt_id}-rec-{_digest(recording.read_bytes())}"
    else:
        name = f"{prompt.prompt_id}-{_digest(engine, prompt.voice_language, prompt.spoken)}"
    target = rendered_dir / prompt.language / f"{name}.wav"
    if target.exists():
        return target.with_suffix("")
    with tempfile.TemporaryDirectory() as tmp:
        if recording is not None:
            spoken = recording
        elif engine == "gtts":
            spoken = Path(tmp) / "speech.mp3"
            _speak_gtts(prompt.spoken, prompt.voice_language, spoken)
        else:
            spoken = Path(tmp) / "speech.wav"
            _speak_espeak(prompt.spoken, prompt.voice_language, spoken)
        to_telephone_wav(spoken, target)
    return target.with_suffix("")


def duration_seconds(path: Path) -> float:
    """Length of a WAV file in seconds (a path without extension means its .wav)."""
    import wave

    wav_path = path if path.suffix == ".wav" else path.with_name(path.name + ".wav")
    with wave.open(str(wav_path)) as wav:
        return float(wav.getnframes()) / float(wav.getframerate())


def voice_warnings(texts: PromptTexts, recordings_dir: Path, engine: str) -> list[str]:
    """Prompts no voice can speak and no recording replaces: they play in English."""
    return [f"prompt {prompt_id!r} in {language}: no voice for this language; the English "
            "audio plays until a recording is uploaded"
            for prompt_id, by_language in texts.items()
            for language, prompt in by_language.items()
            if not has_voice(prompt.voice_language, engine)
            and recording_for(recordings_dir, prompt_id, language) is None]


@dataclass
class Rendered:
    files: dict[str, str]  # "id/lang" or "id/lang/did" -> audio path without extension
    dynamic: dict[str, dict[str, str]]  # "id/lang" -> the prompt, rendered during calls
    warnings: list[str]


def render_all(texts: PromptTexts, rendered_dir: Path, recordings_dir: Path, engine: str,
               offices: dict[tuple[str, str], dict[str, str]]) -> Rendered:
    """Render every prompt (``offices``: for a greeting that names the office, the DIDs'
    office names by (prompt id, language))."""
    files: dict[str, str] = {}
    dynamic: dict[str, dict[str, str]] = {}
    warnings = voice_warnings(texts, recordings_dir, engine)
    rendered_before = _count(rendered_dir)
    for prompt_id, by_language in texts.items():
        for language, prompt in by_language.items():
            recording = recording_for(recordings_dir, prompt_id, language)
            if recording is None and not has_voice(prompt.voice_language, engine):
                continue
            if prompt.dynamic and recording is None:
                dynamic[f"{prompt_id}/{language}"] = {
                    "text": prompt.text, "speak": prompt.speak, "voice": prompt.voice}
                continue
            try:
                if prompt.templated and recording is None:
                    for did, office in offices.get((prompt_id, language), {}).items():
                        path = render(prompt.for_office(office), rendered_dir, engine)
                        files[f"{prompt_id}/{language}/{did}"] = str(path)
                    continue
                files[f"{prompt_id}/{language}"] = str(render(prompt, rendered_dir, engine,
                                                              recording))
            except (PromptError, OSError, subprocess.CalledProcessError) as exc:
                warnings.append(f"prompt {prompt_id!r} in {language} not rendered: {exc}")
    log.info("prompts: %d audio files, %d of them rendered now (%s)", len(files),
             _count(rendered_dir) - rendered_before, rendered_dir)
    return Rendered(files, dynamic, warnings)


def _count(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*/*.wav")) if folder.exists() else 0

