"""Prompts: their texts per language (audio_prompts/prompts.yaml) rendered by TTS into audio.

espeak-ng speaks into a 22.05 kHz WAV; sox turns it into 8 kHz mono 16-bit WAV, the format
Asterisk plays on a telephone call without resampling. gTTS (MP3 from Google's servers) is used
instead where the network allows and ``IVR_TTS_ENGINE=gtts`` asks for it. A rendering is kept
with the hash of what produced it, so nothing is rendered twice.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

# espeak-ng voices by language. Chinese needs pinyin text and Japanese kana (see FINDINGS.md);
# Mongolian has no voice: such prompts fall back to an uploaded recording or English.
ESPEAK_VOICES = {"ko": "ko", "en": "en-us", "vi": "vi", "zh": "cmn-latn-pinyin", "ja": "ja"}
SAMPLE_RATE = 8000


class PromptError(Exception):
    """A prompt that cannot be found or rendered."""


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    language: str
    text: str


def load_prompt_texts(path: Path) -> list[Prompt]:
    with path.open(encoding="utf-8") as source:
        data = yaml.safe_load(source) or {}
    prompts = []
    for prompt_id, texts in (data.get("prompts") or {}).items():
        for language, text in texts.items():
            prompts.append(Prompt(str(prompt_id), str(language), str(text)))
    return prompts


def audio_path(rendered_dir: Path, prompt_id: str, language: str) -> Path:
    return rendered_dir / language / f"{prompt_id}.wav"


def media_uri(rendered_dir: Path, prompt_id: str, language: str) -> str:
    """The ARI media URI of a rendered prompt (Asterisk takes the path without extension)."""
    return f"sound:{audio_path(rendered_dir, prompt_id, language).with_suffix('')}"


def _speak_espeak(text: str, language: str, wav_out: Path) -> None:
    voice = ESPEAK_VOICES.get(language)
    if voice is None:
        raise PromptError(f"espeak-ng has no voice for language {language!r}")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav_out), text],
        check=True,
        capture_output=True,
    )


def _speak_gtts(text: str, language: str, mp3_out: Path) -> None:
    from gtts import gTTS  # type: ignore[import-not-found,unused-ignore]  # extra: .[gtts]

    gtts_lang = {"zh": "zh-CN"}.get(language, language)
    gTTS(text=text, lang=gtts_lang).save(str(mp3_out))


def _to_telephone_wav(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part.wav")
    subprocess.run(
        ["sox", str(source), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
         "-e", "signed-integer", str(partial)],
        check=True,
        capture_output=True,
    )
    partial.replace(target)  # atomic: Asterisk never plays a half-written file


def render_prompt(prompt: Prompt, rendered_dir: Path, engine: str = "espeak") -> bool:
    """Render one prompt unless an identical rendering exists. Returns True if it rendered."""
    target = audio_path(rendered_dir, prompt.prompt_id, prompt.language)
    stamp = target.with_suffix(".sha256")
    digest = hashlib.sha256(f"{engine}\n{prompt.language}\n{prompt.text}".encode()).hexdigest()
    if target.exists() and stamp.exists() and stamp.read_text() == digest:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        if engine == "gtts":
            spoken = Path(tmp) / "speech.mp3"
            _speak_gtts(prompt.text, prompt.language, spoken)
        else:
            spoken = Path(tmp) / "speech.wav"
            _speak_espeak(prompt.text, prompt.language, spoken)
        _to_telephone_wav(spoken, target)
    stamp.write_text(digest)
    return True


def render_all(texts_file: Path, rendered_dir: Path, engine: str = "espeak") -> int:
    """Render every prompt that changed; returns how many were rendered."""
    rendered = 0
    for prompt in load_prompt_texts(texts_file):
        try:
            if render_prompt(prompt, rendered_dir, engine):
                rendered += 1
        except (PromptError, OSError, subprocess.CalledProcessError) as exc:
            # A prompt without a voice is reported, not fatal: the flow falls back to English.
            log.warning("prompt %s/%s not rendered: %s", prompt.language, prompt.prompt_id, exc)
    log.info("prompts: %d rendered, the rest unchanged (%s)", rendered, rendered_dir)
    return rendered


def duration_seconds(path: Path) -> float:
    """Length of a WAV file in seconds (for tests and figures)."""
    import wave

    with wave.open(str(path)) as wav:
        return float(wav.getnframes()) / float(wav.getframerate())
