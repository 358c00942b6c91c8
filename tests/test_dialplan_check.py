"""`ivr dialplan check`: every kind of mistake is refused with its file, line and reason; the
shipped dialplan passes; schedules give the right mode."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ivr.dialplan.check import load
from ivr.dialplan.model import LineKind
from ivr.dialplan.schedule import CLOSED, DAY, HOLIDAY, NIGHT, line_mode
from ivr.prompts import voice_warnings

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copytree(PROJECT / "dialplans", tmp_path / "dialplans")
    shutil.copy(PROJECT / "audio_prompts" / "prompts.yaml", tmp_path / "prompts.yaml")
    return tmp_path


def check(folder: Path) -> list[str]:
    return [str(p) for p in load(folder / "dialplans", folder / "prompts.yaml").problems]


def edit(path: Path, old: str, new: str) -> int:
    """Replace text; returns the line number where the new text starts."""
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return text[: text.index(old)].count("\n") + 1


def test_shipped_dialplan_is_valid() -> None:
    result = load(PROJECT / "dialplans", PROJECT / "audio_prompts" / "prompts.yaml")
    assert result.problems == []
    plan = result.dialplan
    assert plan is not None
    assert plan.did("120").line == LineKind.MAIN  # type: ignore[union-attr]
    assert plan.did("121").line == LineKind.WATERWORKS  # type: ignore[union-attr]
    offices = {d.district for d in plan.dids if d.line == LineKind.DISTRICT_OFFICE}
    centers = {d.district for d in plan.dids if d.line == LineKind.HEALTH_CENTER}
    assert len(offices) == 25 and offices == centers
    assert set(plan.topics) >= {"traffic", "water", "administration", "welfare", "culture"}
    assert plan.languages == ["ko", "en", "zh", "ja", "vi", "mn"]


def test_digit_used_twice(folder: Path) -> None:
    line = edit(folder / "dialplans/menus.yaml", '      "5": {queue: culture}\n',
                '      "5": {queue: culture}\n      "5": {queue: water}\n')
    assert check(folder) == [f"menus.yaml:{line + 1}: in menus.main.options: '5' is given twice"]


def test_unknown_prompt_id(folder: Path) -> None:
    line = edit(folder / "dialplans/menus.yaml", "prompt: water_menu", "prompt: water_menuu")
    assert f"menus.yaml:{line}: unknown prompt id 'water_menuu' (not in " \
           "audio_prompts/prompts.yaml)" in check(folder)


def test_unknown_menu_and_topic(folder: Path) -> None:
    menu_line = edit(folder / "dialplans/menus.yaml", '"1": {menu: traffic}',
                     '"1": {menu: trafic}')
    topic_line = edit(folder / "dialplans/menus.yaml", '"4": {queue: welfare}',
                      '"4": {queue: wellness}')
    problems = check(folder)
    assert f"menus.yaml:{menu_line}: unknown menu 'trafic'" in problems
    assert f"menus.yaml:{topic_line}: unknown topic 'wellness'" in problems


def test_unreachable_menu_and_loop_without_exit(folder: Path) -> None:
    menus = folder / "dialplans/menus.yaml"
    text = menus.read_text()
    text = text.replace('      "9": {menu: foreign}\n',
                        '      "9": {menu: foreign}\n      "8": {menu: round_a}\n')
    text += ("\n  lonely:\n    prompt: main_menu\n    options: {\"1\": {queue: general}}\n"
             "  round_a:\n    prompt: main_menu\n    options: {\"1\": {menu: round_b}}\n"
             "  round_b:\n    prompt: main_menu\n    options: {\"1\": {menu: round_a},"
             " \"2\": {info: passport_info}}\n")
    menus.write_text(text)
    lines = text.splitlines()
    at = {name: lines.index(f"  {name}:") + 1 for name in ("lonely", "round_a", "round_b")}
    problems = check(folder)
    assert f"menus.yaml:{at['lonely']}: menu 'lonely' cannot be reached from any line" in problems
    for name in ("round_a", "round_b"):
        assert (f"menus.yaml:{at[name]}: menu '{name}' is a loop with no exit: none of its "
                "options leads to an agent queue, the bot or a goodbye") in problems


def test_did_listed_twice(folder: Path) -> None:
    line = edit(folder / "dialplans/dids.yaml", '  - number: "121"',
                '  - number: "120"\n    line: main\n  - number: "121"')
    assert f"dids.yaml:{line}: DID 120 is listed twice (first as entry 1)" in check(folder)


def test_missing_language(folder: Path) -> None:
    prompts = folder / "prompts.yaml"
    lines = prompts.read_text().splitlines(keepends=True)
    vi = next(n for n in range(lines.index("  foreign_menu:\n"), len(lines))
              if lines[n].startswith("    vi:"))
    end = vi + 1
    while lines[end].startswith("      "):  # a folded text goes on, indented deeper
        end += 1
    prompts.write_text("".join(lines[:vi] + lines[end:]))
    menus_line = next(n for n, t in enumerate(
        (folder / "dialplans/menus.yaml").read_text().splitlines(), 1)
        if t == "    prompt: foreign_menu")
    assert (f"menus.yaml:{menus_line}: prompt 'foreign_menu' has no text in vi, a language "
            "callers hear it in") in check(folder)


def test_star_and_zero_are_reserved(folder: Path) -> None:
    star = edit(folder / "dialplans/menus.yaml", '"3": {info: traffic_fines_info}',
                '"*": {info: traffic_fines_info}')
    zero = edit(folder / "dialplans/menus.yaml", '"0": {queue: general}', '"0": {menu: water}')
    problems = check(folder)
    assert any(p.startswith(f"menus.yaml:{star}: menu 'traffic': '*' always goes back")
               for p in problems), problems
    assert any(p.startswith(f"menus.yaml:{zero}: menu 'main': '0' always reaches an agent")
               for p in problems), problems


def test_wrong_field_and_bad_yaml(folder: Path) -> None:
    field_line = edit(folder / "dialplans/menus.yaml", "    prompt: water_menu\n",
                      "    prompt: water_menu\n    timeout: soon\n")
    problems = check(folder)
    assert any(p.startswith(f"menus.yaml:{field_line + 1}: menus.water.timeout:")
               for p in problems), problems
    (folder / "dialplans/lines.yaml").write_text("lines:\n  main: {greeting: [unclosed\n")
    assert check(folder)[0].startswith("lines.yaml:3: not valid YAML")


def test_schedule_modes() -> None:
    plan = load(PROJECT / "dialplans", PROJECT / "audio_prompts" / "prompts.yaml").dialplan
    assert plan is not None

    def at(text: str) -> datetime:  # a moment in Seoul (UTC+9)
        return datetime.fromisoformat(text + "+09:00").astimezone(UTC)

    assert line_mode(plan, LineKind.MAIN, at("2026-11-20T14:00")) == DAY
    assert line_mode(plan, LineKind.MAIN, at("2026-11-20T02:30")) == NIGHT
    assert line_mode(plan, LineKind.MAIN, at("2026-12-25T14:00")) == HOLIDAY
    assert line_mode(plan, LineKind.DISTRICT_OFFICE, at("2026-11-20T10:00")) == DAY  # a Friday
    assert line_mode(plan, LineKind.DISTRICT_OFFICE, at("2026-11-21T10:00")) == CLOSED  # Sat
    assert line_mode(plan, LineKind.DISTRICT_OFFICE, at("2026-11-20T18:30")) == CLOSED
    assert line_mode(plan, LineKind.HEALTH_CENTER, at("2026-12-25T10:00")) == CLOSED


def test_mongolian_is_told_and_falls_back_to_english(tmp_path: Path) -> None:
    result = load(PROJECT / "dialplans", PROJECT / "audio_prompts" / "prompts.yaml")
    warnings = voice_warnings(result.texts, tmp_path / "recordings", "espeak")
    assert "prompt 'foreign_menu' in mn: no voice for this language; the English audio plays " \
           "until a recording is uploaded" in warnings
    assert not any(" in ko:" in warning for warning in warnings)
    # An uploaded recording silences the warning for that prompt.
    (tmp_path / "recordings" / "mn").mkdir(parents=True)
    (tmp_path / "recordings" / "mn" / "foreign_menu.wav").write_bytes(b"RIFF")
    assert not any("'foreign_menu' in mn" in w
                   for w in voice_warnings(result.texts, tmp_path / "recordings", "espeak"))

    plan = result.dialplan
    assert plan is not None
    plan = plan.model_copy(update={"prompt_files": {"foreign_menu/en": "/p/en/foreign_menu-1"}})
    assert plan.media("foreign_menu", "mn") == "sound:/p/en/foreign_menu-1"
