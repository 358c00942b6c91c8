"""The working copy admins edit: the files of ``dialplans/`` and ``audio_prompts/prompts.yaml``.

An edit is checked with the other files as they are before it is written: a file with
problems is refused (file, line, reason) and the working copy stays as it was. Publishing
then makes the working copy live (``versions.py``); a rollback writes an older version's
files back and publishes them again.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

from ivr.dialplan.check import SECTIONS, CheckResult, load
from ivr.prompts import voice_warnings
from ivr.settings import Settings

PROMPTS_FILE = "prompts.yaml"
FILES = (*SECTIONS, PROMPTS_FILE)  # what admins may edit


class UnknownFile(LookupError):
    pass


def _path(settings: Settings, name: str) -> Path:
    if name not in FILES:
        raise UnknownFile(f"unknown file {name!r}: one of {', '.join(FILES)}")
    if name == PROMPTS_FILE:
        return settings.prompts_source_path / PROMPTS_FILE
    return settings.dialplans_path / name


def read_files(settings: Settings) -> dict[str, str]:
    """Every file of the working copy that exists: name -> text."""
    files = {}
    for name in FILES:
        path = _path(settings, name)
        if path.exists():
            files[name] = path.read_text(encoding="utf-8")
    return files


def check(settings: Settings, changes: dict[str, str] | None = None) -> CheckResult:
    """Check the working copy as it would be with ``changes`` (name -> text), writing
    nothing: the files are checked in a folder of their own."""
    for name in changes or {}:
        _path(settings, name)  # an unknown name is refused before anything else
    files = {**read_files(settings), **(changes or {})}
    with tempfile.TemporaryDirectory(prefix="ivr-draft-") as folder:
        root = Path(folder)
        for name, text in files.items():
            (root / name).write_text(text, encoding="utf-8")
        result = load(root, root / PROMPTS_FILE)
    recordings = settings.prompts_source_path / "recordings"
    result.warnings += voice_warnings(result.texts, recordings, settings.tts_engine)
    return result


def write(settings: Settings, changes: dict[str, str]) -> CheckResult:
    """Write the changed files if the whole working copy checks out with them; otherwise
    write nothing and return the problems."""
    result = check(settings, changes)
    if not result.ok:
        return result
    for name, text in changes.items():
        path = _path(settings, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.new")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)  # all or nothing, even if the server stops halfway
    return result


def diff(old: dict[str, str], new: dict[str, str]) -> str:
    """A unified diff of two sets of files (old: e.g. the live version; new: the working
    copy)."""
    lines: list[str] = []
    for name in sorted(set(old) | set(new)):
        lines += difflib.unified_diff(
            old.get(name, "").splitlines(keepends=True), new.get(name, "").splitlines(
                keepends=True), fromfile=f"live/{name}", tofile=f"draft/{name}")
    return "".join(lines)
