"""Which mode a line is in at a moment: day, night, holiday, or closed (outside its hours)."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from ivr.dialplan.model import WEEKDAYS, Action, Dialplan, Line, LineKind, Mode

DAY, NIGHT, HOLIDAY, CLOSED = "day", "night", "holiday", "closed"


def _in_window(moment: time, start: time, end: time) -> bool:
    if start <= end:
        return start <= moment < end
    return moment >= start or moment < end  # a window across midnight


def line_mode(plan: Dialplan, kind: LineKind, now: datetime) -> str:
    schedule = plan.schedule
    local = now.astimezone(ZoneInfo(schedule.timezone))
    line = plan.lines[kind]
    holiday = local.date() in schedule.holidays
    if line.hours is not None:
        weekday = WEEKDAYS[local.weekday()]
        open_now = (weekday in line.hours.days and not holiday
                    and line.hours.open <= local.time() < line.hours.close)
        if not open_now:
            return CLOSED
    if holiday:
        return HOLIDAY
    if _in_window(local.time(), schedule.night_start, schedule.night_end):
        return NIGHT
    return DAY


def mode_of(line: Line, mode: str) -> Mode | None:
    return {NIGHT: line.night, HOLIDAY: line.holiday, CLOSED: line.closed}.get(mode)


def entry(line: Line, mode: str) -> tuple[list[str], Action]:
    """The notices and the start action of a line in a mode."""
    override = mode_of(line, mode)
    if override is None:
        return [], line.start
    return list(override.notice), override.start or line.start
