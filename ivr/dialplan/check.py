"""Reading dialplans/ and checking it, before anything goes live.

``load`` returns the dialplan and every problem found, each with file, line and reason: YAML
that does not parse, a field of the wrong kind, an unknown prompt id, a digit used twice, a menu
no caller can reach, a loop with no exit, a DID listed twice, a prompt missing in a language a
caller can hear it in. A dialplan with problems is never published.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import TypeAdapter, ValidationError

from ivr.dialplan.model import (
    AGENT,
    BACK,
    DIGITS,
    Action,
    Dialplan,
    Did,
    Emergency,
    Line,
    LineKind,
    Menu,
    PromptRef,
    Schedule,
    Transfers,
)
from ivr.dialplan.source import Path_, Problem, SourceFile, read
from ivr.prompts import OFFICE, PromptTexts, parse_prompt_texts

# What a caller in a queue may hear, in their language.
QUEUE_PROMPTS = ["connecting_agent", "no_agents", "queue_position", "callback_offer",
                 "callback_confirm"]

# What a caller with the callbot may hear, in their language.
BOT_PROMPTS = ["bot_greeting", "bot_confirm", "bot_clarify", "bot_handoff", "bot_goodbye",
               "bot_keypad", "bot_keypad_choice", "bot_confirm_question", "bot_unknown",
               "bot_not_heard"]

# What a caller may hear while the callbot takes down a complaint: in Korean and English, the
# languages whose details it reads (ivr/controller/intake.py).
INTAKE_PROMPTS = ["intake_start_illegal_parking", "intake_start_large_waste", "intake_ask_place",
                  "intake_ask_vehicle", "intake_ask_when", "intake_ask_item",
                  "intake_ask_address", "intake_ask_pickup_day", "intake_again",
                  "intake_read_back", "intake_filed"]
INTAKE_LANGUAGES = ("ko", "en")

# What a caller may hear at a menu where they can speak (a line's `front_door`).
FRONT_DOOR_PROMPTS = ["front_door", "front_door_again"]

# Played to a number that is not in service: before any language is chosen, in two.
NOT_IN_SERVICE = ("not_in_service@ko", "not_in_service@en")

# file name -> (top-level key, model of its value, required)
SECTIONS: dict[str, list[tuple[str, Any, bool]]] = {
    "dids.yaml": [("dids", list[Did], True)],
    "lines.yaml": [("lines", dict[LineKind, Line], True)],
    "menus.yaml": [("languages", list[str], True), ("default_language", str, False),
                   ("topics", list[str], True), ("menus", dict[str, Menu], True)],
    "schedule.yaml": [("schedule", Schedule, False)],
    "emergency.yaml": [("emergency", Emergency, False)],
    "transfers.yaml": [("transfers", Transfers, False)],
}
OPTIONAL_FILES = ("schedule.yaml", "emergency.yaml", "transfers.yaml")


@dataclass
class CheckResult:
    dialplan: Dialplan | None
    problems: list[Problem]
    warnings: list[str] = field(default_factory=list)
    texts: PromptTexts = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # file name -> its text

    @property
    def ok(self) -> bool:
        return self.dialplan is not None and not self.problems


@dataclass
class _Use:
    """A prompt reference met while walking the menus: where, and in which language."""

    ref: str
    language: str
    file: str
    path: Path_


def load(dialplans_dir: Path, prompts_file: Path) -> CheckResult:
    sources: dict[str, SourceFile] = {}
    problems: list[Problem] = []
    texts_by_file: dict[str, str] = {}
    for name in SECTIONS:
        path = dialplans_dir / name
        if not path.exists():
            if name not in OPTIONAL_FILES:
                problems.append(Problem(name, 1, f"missing: {path}"))
            continue
        texts_by_file[name] = path.read_text(encoding="utf-8")
        sources[name] = read(path, name)
        problems += sources[name].problems
    prompt_source = read(prompts_file, "prompts.yaml")
    texts_by_file["prompts.yaml"] = prompts_file.read_text(encoding="utf-8")
    texts, prompt_problems = parse_prompt_texts(prompt_source)
    problems += prompt_problems

    values: dict[str, Any] = {}
    for name, source in sources.items():
        data = source.data if isinstance(source.data, dict) else {}
        if not isinstance(source.data, dict) and not source.problems:
            problems.append(source.problem((), "expected a mapping at the top of the file"))
        for key, model, required in SECTIONS[name]:
            if key not in data:
                if required:
                    problems.append(source.problem((), f"'{key}:' is missing"))
                continue
            try:
                values[key] = TypeAdapter(model).validate_python(data[key])
            except ValidationError as exc:
                problems += _validation_problems(source, key, exc)
        for key in data:
            if key not in {section[0] for section in SECTIONS[name]}:
                problems.append(source.problem((key,), f"unknown section '{key}'"))

    result = CheckResult(None, problems, texts=texts, sources=texts_by_file)
    if problems:
        return result
    try:
        dialplan = Dialplan(**values)
    except ValidationError as exc:  # the parts fit one by one but not together
        result.problems = [Problem("menus.yaml", 1, str(error["msg"])) for error in exc.errors()]
        return result
    result.problems = list(_Checker(dialplan, sources, texts).run())
    if not result.problems:
        result.dialplan = dialplan
    return result


def _validation_problems(source: SourceFile, key: str, exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
        where = ".".join(str(part) for part in (key, *loc))
        problems.append(source.problem((key, *loc), f"{where}: {error['msg']}"))
    return problems


def _is_union_tag(part: Any) -> bool:
    # pydantic names the branch of a union or a function validator in locations; not a field.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


class _Checker:
    def __init__(self, dialplan: Dialplan, sources: dict[str, SourceFile],
                 texts: PromptTexts) -> None:
        self.plan = dialplan
        self.sources = sources
        self.texts = texts
        self.uses: list[_Use] = []
        self.reached: dict[str, set[str]] = {}  # menu id -> languages it is heard in
        # Menus where callers may speak: they hear the callbot's prompts too.
        self.front_doors = {menu for line in self.plan.lines.values()
                            for menu in line.front_door}

    def problem(self, file: str, path: Path_, reason: str) -> Problem:
        source = self.sources.get(file)
        return source.problem(path, reason) if source else Problem(file, 1, reason)

    def run(self) -> Iterator[Problem]:
        yield from self._languages_and_topics()
        yield from self._dids()
        yield from self._menus_shape()
        yield from self._schedule()
        yield from self._walk_lines()
        yield from self._unreachable_menus()
        yield from self._loops_without_exit()
        yield from self._prompts()

    def _languages_and_topics(self) -> Iterator[Problem]:
        plan = self.plan
        for index, language in enumerate(plan.languages):
            if len(language) != 2 or not language.isalpha() or not language.islower():
                yield self.problem("menus.yaml", ("languages", index),
                                   f"{language!r} is not an ISO 639-1 language code")
        if plan.default_language not in plan.languages:
            yield self.problem("menus.yaml", ("default_language",),
                               f"default language {plan.default_language!r} is not in languages")
        if "general" not in plan.topics:
            yield self.problem("menus.yaml", ("topics",),
                               "topics must include 'general' (the agents' queue for anything)")

    def _dids(self) -> Iterator[Problem]:
        seen: dict[str, int] = {}
        for index, did in enumerate(self.plan.dids):
            if did.number in seen:
                yield self.problem("dids.yaml", ("dids", index, "number"),
                                   f"DID {did.number} is listed twice (first as entry "
                                   f"{seen[did.number] + 1})")
            seen.setdefault(did.number, index)
            if did.line not in self.plan.lines:
                yield self.problem("dids.yaml", ("dids", index, "line"),
                                   f"DID {did.number}: line {did.line!r} is not in lines.yaml")

    def _menus_shape(self) -> Iterator[Problem]:
        for menu_id, menu in self.plan.menus.items():
            for digit, action in menu.options.items():
                where = ("menus", menu_id, "options", digit)
                if digit == BACK:
                    yield self.problem("menus.yaml", where, f"menu {menu_id!r}: '*' always goes "
                                       "back to the previous menu; it cannot be an option")
                elif digit not in DIGITS:
                    yield self.problem("menus.yaml", where, f"menu {menu_id!r}: option "
                                       f"{digit!r} is not a key of the phone (0-9, #)")
                elif digit == AGENT and action.kind != "queue":
                    yield self.problem("menus.yaml", where, f"menu {menu_id!r}: '0' always "
                                       "reaches an agent, so it may only name a queue")
            if menu.topic is not None and menu.topic not in self.plan.topics:
                yield self.problem("menus.yaml", ("menus", menu_id, "topic"),
                                   f"menu {menu_id!r}: unknown topic {menu.topic!r}")

    def _schedule(self) -> Iterator[Problem]:
        schedule = self.plan.schedule
        try:
            ZoneInfo(schedule.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            yield self.problem("schedule.yaml", ("schedule", "timezone"),
                               f"unknown time zone {schedule.timezone!r}")
        if schedule.night_start == schedule.night_end and schedule.night_start != time(0):
            yield self.problem("schedule.yaml", ("schedule", "night_start"),
                               "night_start and night_end are equal")

    # --- Walking every path a caller can take -------------------------------------------------

    def _walk_lines(self) -> Iterator[Problem]:
        language = self.plan.default_language
        for kind, line in self.plan.lines.items():
            base: Path_ = ("lines", str(kind))
            for index, menu_id in enumerate(line.front_door):
                if menu_id not in self.plan.menus:
                    yield self.problem("lines.yaml", (*base, "front_door", index),
                                       f"front_door: unknown menu {menu_id!r}")
            self._use_prompts(line.greeting, language, "lines.yaml", (*base, "greeting"))
            yield from self._offices(kind, line, language)
            yield from self._action(line.start, language, "lines.yaml", (*base, "start"))
            for mode_name in ("night", "holiday", "closed"):
                mode = getattr(line, mode_name)
                if mode is None:
                    continue
                self._use_prompts(mode.notice, language, "lines.yaml",
                                  (*base, mode_name, "notice"))
                if mode.start is not None:
                    yield from self._action(mode.start, language, "lines.yaml",
                                            (*base, mode_name, "start"))
        emergency = self.plan.emergency
        self._use_prompts(emergency.prompt, language, "emergency.yaml", ("emergency", "prompt"))
        for ref in NOT_IN_SERVICE:
            self._use_prompts([ref], language, "lines.yaml", ())

    def _offices(self, kind: LineKind, line: Line, language: str) -> Iterator[Problem]:
        """A greeting naming the office needs each of the line's DIDs to have that name."""
        for ref in line.greeting:
            prompt = PromptRef(ref)
            lang = prompt.language or language
            text = self.texts.get(prompt.prompt_id, {}).get(lang)
            if text is None or not text.templated:
                continue
            for did_index, did in enumerate(self.plan.dids):
                if did.line == kind and lang not in did.name:
                    yield self.problem("dids.yaml", ("dids", did_index, "name"),
                                       f"DID {did.number}: greeting {prompt.prompt_id!r} says the "
                                       f"office's name ({OFFICE}) but the DID has no name in "
                                       f"{lang}")

    def _action(self, action: Action, language: str, file: str, path: Path_) -> Iterator[Problem]:
        if action.language is not None:
            if action.language not in self.plan.languages:
                yield self.problem(file, (*path, "language"),
                                   f"language {action.language!r} is not in languages")
                return
            language = action.language
        if action.menu is not None:
            if action.menu not in self.plan.menus:
                yield self.problem(file, (*path, "menu"), f"unknown menu {action.menu!r}")
                return
            yield from self._menu(action.menu, language)
        topic = action.queue or action.bot
        if topic is not None:
            if topic not in self.plan.topics:
                yield self.problem(file, (*path, action.kind), f"unknown topic {topic!r}")
            self._use_prompts(QUEUE_PROMPTS, language, file, path)
        if action.bot is not None:
            self._use_prompts(BOT_PROMPTS, language, file, path)
            if language in INTAKE_LANGUAGES:
                self._use_prompts(INTAKE_PROMPTS, language, file, path)
        if action.info is not None:
            self._use_prompts(action.info, language, file, (*path, "info"))
            if action.then is not None:
                yield from self._action(action.then, language, file, (*path, "then"))
        if action.hangup:
            self._use_prompts(["goodbye"], language, file, path)

    def _menu(self, menu_id: str, language: str) -> Iterator[Problem]:
        heard_in = self.reached.setdefault(menu_id, set())
        if language in heard_in:
            return
        heard_in.add(language)
        menu = self.plan.menus[menu_id]
        base: Path_ = ("menus", menu_id)
        for name in ("prompt", "invalid_prompt", "timeout_prompt"):
            self._use_prompts(getattr(menu, name), language, "menus.yaml", (*base, name))
        if menu_id in self.front_doors:
            self._use_prompts([*FRONT_DOOR_PROMPTS, *BOT_PROMPTS], language, "menus.yaml", base)
            if language in INTAKE_LANGUAGES:
                self._use_prompts(INTAKE_PROMPTS, language, "menus.yaml", base)
        for digit, action in menu.options.items():
            yield from self._action(action, language, "menus.yaml", (*base, "options", digit))
        yield from self._action(menu.agent_action(), language, "menus.yaml", (*base, "topic"))
        yield from self._action(menu.failure_action(), language, "menus.yaml",
                                (*base, "on_failure"))

    def _use_prompts(self, refs: list[str], language: str, file: str, path: Path_) -> None:
        for index, ref in enumerate(refs):
            self.uses.append(_Use(ref, language, file, (*path, index)))

    def _unreachable_menus(self) -> Iterator[Problem]:
        for menu_id in self.plan.menus:
            if menu_id not in self.reached:
                yield self.problem("menus.yaml", ("menus", menu_id),
                                   f"menu {menu_id!r} cannot be reached from any line")

    def _loops_without_exit(self) -> Iterator[Problem]:
        """Every menu must lead, by its options, to an agent, the bot or a goodbye.

        Pressing 0 and running out of retries always reach an agent; they do not count here:
        a caller should not need them to get anywhere.
        """
        exits: set[str] = set()
        changed = True
        while changed:
            changed = False
            for menu_id, menu in self.plan.menus.items():
                if menu_id not in exits and any(self._leaves(a, exits)
                                                for a in menu.options.values()):
                    exits.add(menu_id)
                    changed = True
        for menu_id in self.plan.menus:
            if menu_id in self.reached and menu_id not in exits:
                yield self.problem("menus.yaml", ("menus", menu_id),
                                   f"menu {menu_id!r} is a loop with no exit: none of its options "
                                   "leads to an agent queue, the bot or a goodbye")

    def _leaves(self, action: Action, exits: set[str]) -> bool:
        if action.kind in ("queue", "bot", "hangup"):
            return True
        if action.menu is not None:
            return action.menu in exits
        return action.then is not None and self._leaves(action.then, exits)

    def _prompts(self) -> Iterator[Problem]:
        seen: set[tuple[str, str, str, Path_]] = set()
        for use in self.uses:
            prompt = PromptRef(use.ref)
            language = prompt.language or use.language
            key = (prompt.prompt_id, language, use.file, use.path)
            if key in seen:
                continue
            seen.add(key)
            by_language = self.texts.get(prompt.prompt_id)
            if by_language is None:
                yield self.problem(use.file, use.path, f"unknown prompt id {prompt.prompt_id!r} "
                                   "(not in audio_prompts/prompts.yaml)")
            elif language not in by_language:
                yield self.problem(use.file, use.path, f"prompt {prompt.prompt_id!r} has no text "
                                   f"in {language}, a language callers hear it in")


def offices_to_render(plan: Dialplan, texts: PromptTexts) -> dict[tuple[str, str], dict[str, str]]:
    """For each templated greeting: the DIDs whose office it names, with the office's name."""
    offices: dict[tuple[str, str], dict[str, str]] = {}
    for kind, line in plan.lines.items():
        for ref in line.greeting:
            prompt = PromptRef(ref)
            language = prompt.language or plan.default_language
            text = texts.get(prompt.prompt_id, {}).get(language)
            if text is None or not text.templated:
                continue
            names = offices.setdefault((prompt.prompt_id, language), {})
            for did in plan.dids:
                if did.line == kind and language in did.name:
                    names[did.number] = did.name[language]
    return offices

