"""The dialplan as data: lines, menus, schedules and the emergency announcement.

The YAML files of dialplans/ are read into these models (see dialplans/README.md for the
format). A published version also carries where each prompt's rendered audio is, so that a
call keeps hearing the prompts of the version it started with.
"""

from __future__ import annotations

import re
from datetime import date, time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

LANGUAGES = ("ko", "en", "zh", "ja", "vi", "mn")
DIGITS = frozenset("0123456789#")
BACK = "*"  # always "go back": no menu may use it for anything else
AGENT = "0"  # always reaches an agent: a menu may only send it to a queue


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineKind(StrEnum):
    MAIN = "main"
    WATERWORKS = "waterworks"
    DISTRICT_OFFICE = "district_office"
    HEALTH_CENTER = "health_center"


class Did(Strict):
    """One dialled number and the line it belongs to."""

    number: str = Field(pattern=r"^\+?[0-9*#]+$")
    line: LineKind
    district: str | None = None
    name: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _district_lines_name_a_district(self) -> Did:
        if self.line in (LineKind.DISTRICT_OFFICE, LineKind.HEALTH_CENTER) and not self.district:
            raise ValueError(f"a {self.line} line must name its district")
        return self


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class PromptRef(str):
    """``id`` (in the call's language) or ``id@lang`` (always in that language)."""

    @property
    def prompt_id(self) -> str:
        return self.partition("@")[0]

    @property
    def language(self) -> str | None:
        return self.partition("@")[2] or None


# A prompt or a list of prompts, played one after the other.
Prompts = Annotated[list[str], BeforeValidator(_as_list)]


class Action(Strict):
    """What a menu option (or a line's start, or a failure) does: exactly one of these."""

    menu: str | None = None  # go to that menu
    queue: str | None = None  # wait for an agent of this topic, in the call's language
    bot: str | None = None  # the callbot for this topic (until it exists: that topic's queue)
    info: Prompts | None = None  # play an information message, then `then`
    hangup: bool = False  # say goodbye and hang up
    language: str | None = None  # the call carries this language from here on
    then: Action | None = None  # after `info`: default back to the same menu


    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        chosen = [name for name in ("menu", "queue", "bot", "info")
                  if getattr(self, name) is not None] + (["hangup"] if self.hangup else [])
        if len(chosen) != 1:
            raise ValueError("an action needs exactly one of menu, queue, bot, info, hangup"
                             f" (got {', '.join(chosen) or 'none'})")
        if self.then is not None and self.info is None:
            raise ValueError("'then' only follows 'info'")
        if self.language is not None and self.menu is None:
            raise ValueError("'language' goes with 'menu' (the menu heard in that language)")
        return self

    @property
    def kind(self) -> str:
        for name in ("menu", "queue", "bot", "info"):
            if getattr(self, name) is not None:
                return name
        return "hangup"


class Menu(Strict):
    prompt: Prompts
    options: dict[str, Action] = Field(default_factory=dict)
    topic: str | None = None  # 0 reaches this topic's queue (or `general`)
    timeout: float = Field(default=5.0, gt=0, le=60)  # seconds to wait for a digit
    retries: int = Field(default=3, ge=1, le=10)  # invalid or missing choices before on_failure
    invalid_prompt: Prompts = Field(default_factory=lambda: ["invalid_choice"])
    timeout_prompt: Prompts = Field(default_factory=lambda: ["no_input"])
    on_failure: Action | None = None  # default: the agent queue of the menu's topic


    @field_validator("options", mode="before")
    @classmethod
    def _digits_are_text(cls, value: Any) -> Any:
        return {str(key): item for key, item in value.items()} if isinstance(value, dict) else value

    def agent_action(self) -> Action:
        return self.options.get(AGENT) or Action(queue=self.topic or "general")

    def failure_action(self) -> Action:
        return self.on_failure or Action(queue=self.topic or "general")


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Hours(Strict):
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS[:5]))
    open: time
    close: time

    @model_validator(mode="after")
    def _open_before_close(self) -> Hours:
        if self.open >= self.close:
            raise ValueError("'open' must be before 'close'")
        return self


class Mode(Strict):
    """What changes for a line at night, on holidays or when its office is closed."""

    notice: Prompts = Field(default_factory=list)  # played after the greeting
    start: Action | None = None  # instead of the line's usual start



class Line(Strict):
    greeting: Prompts
    start: Action
    hours: Hours | None = None  # office hours; none: open 24/7 like 120 itself
    night: Mode | None = None
    holiday: Mode | None = None
    closed: Mode | None = None  # outside `hours`, and on holidays when `hours` is set
    # Menus of this line at which callers may say what they need instead of pressing a key:
    # the callbot listens while the menu plays, and routes what it hears by its meaning.
    front_door: list[str] = Field(default_factory=list)



class Schedule(Strict):
    timezone: str = "Asia/Seoul"
    night_start: time = time(0, 0)
    night_end: time = time(6, 0)
    holidays: list[date] = Field(default_factory=list)


class Emergency(Strict):
    """An announcement an admin switches on for every line (a disaster), before the menu."""

    enabled: bool = False
    prompt: Prompts = Field(default_factory=lambda: ["emergency_notice@ko", "emergency_notice@en"])
    lines: list[LineKind] = Field(default_factory=lambda: list(LineKind))



class Transfers(Strict):
    """Outside numbers agents may transfer calls to (departments), as whole-number patterns."""

    allowed_numbers: list[str] = Field(default_factory=list)

    @field_validator("allowed_numbers")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid pattern: {exc}") from exc
        return patterns

    def allows(self, number: str) -> bool:
        return any(re.fullmatch(pattern, number) for pattern in self.allowed_numbers)


class Dialplan(Strict):
    """One complete, checked version of everything callers hear."""

    version: int = 0
    languages: list[str]
    default_language: str = "ko"
    topics: list[str]
    dids: list[Did]
    lines: dict[LineKind, Line]
    menus: dict[str, Menu]
    schedule: Schedule = Schedule()
    emergency: Emergency = Emergency()
    transfers: Transfers = Transfers()
    # Rendered audio: "id/lang" or "id/lang/did" -> media path without extension.
    prompt_files: dict[str, str] = Field(default_factory=dict)
    # Prompts that say figures of the moment ({position}, {minutes}): rendered during a call.
    dynamic_prompts: dict[str, dict[str, str]] = Field(default_factory=dict)

    def did(self, number: str) -> Did | None:
        for did in self.dids:
            if did.number == number:
                return did
        return None

    def media(self, ref: str, language: str, did: str = "") -> str:
        """The media URI of a prompt reference for a call in ``language`` that dialled ``did``.

        Falls back to the default language's audio (never silence) when a prompt has no
        rendering in the language; the check at publish time warned the admin about it.
        """
        prompt = PromptRef(ref)
        lang = prompt.language or language
        for key in (f"{prompt.prompt_id}/{lang}/{did}", f"{prompt.prompt_id}/{lang}",
                    f"{prompt.prompt_id}/en", f"{prompt.prompt_id}/{self.default_language}"):
            path = self.prompt_files.get(key)
            if path:
                return f"sound:{path}"
        raise KeyError(f"prompt {ref!r} has no audio in {lang}")
