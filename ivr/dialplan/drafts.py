"""The working copy admins edit: the files of ``dialplans/`` and ``audio_prompts/prompts.yaml``.

An edit is checked with the other files as they are before it is written: a file with
problems is refused (file, line, reason) and the working copy stays as it was. Publishing
then makes the working copy live (``versions.py``); a rollback writes an older version's
files back and publishes them again.
"""

from __future__ import annotations

import difflib
import json
import os
import re
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
    result.warnings += voice_warnings(result.texts, settings.recordings_path, settings.tts_engine)
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


def set_prompt_text(prompts_yaml: str, prompt_id: str, language: str, text: str,
                    speak: str = "") -> str:
    """``prompts.yaml`` with one prompt's text in one language replaced (or added), the rest of
    the file (comments, order, other texts) as it was."""
    lines = prompts_yaml.splitlines(keepends=True)
    start = next((n for n, line in enumerate(lines)
                  if re.fullmatch(rf"  {re.escape(prompt_id)}:\s*", line.rstrip("\n"))), None)
    if start is None:
        raise UnknownFile(f"no prompt {prompt_id!r} in {PROMPTS_FILE}")
    end = start + 1  # the block: lines indented deeper than the prompt id, and blank lines
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > 2):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # blank lines after the block stay where they are
    value = json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML string
    if speak:
        value = f"{{text: {value}, speak: {json.dumps(speak, ensure_ascii=False)}}}"
    new_line = f"    {language}: {value}\n"
    first = next((n for n in range(start + 1, end)
                  if re.match(rf"    {re.escape(language)}:", lines[n])), None)
    if first is None:
        return "".join([*lines[:end], new_line, *lines[end:]])
    last = first + 1  # a text may go on over several lines (">-", or a mapping)
    while last < end and lines[last].strip() and _indent(lines[last]) > 4:
        last += 1
    return "".join([*lines[:first], new_line, *lines[last:]])


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))
