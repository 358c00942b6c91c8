"""Admins change the dialplan while calls go on: refused changes change nothing, accepted ones
reach the next call and not the calls already in a menu, the emergency announcement works."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    Server,
    audio_for,
    call_record,
    caller_number,
    live_dialplan,
    prompt_ends,
    prompt_seconds,
    run_ivr,
)
from tests.support.sip import SippCall


@pytest.fixture
async def dialplans(server: Server) -> AsyncIterator[Path]:
    """The test server's dialplans folder, put back and published again after the test."""
    folder = server.settings.dialplans_path
    saved = folder.with_name("dialplans.saved")
    shutil.copytree(folder, saved, dirs_exist_ok=True)
    yield folder
    shutil.copytree(saved, folder, dirs_exist_ok=True)
    assert run_ivr("dialplan", "publish").returncode == 0


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


async def in_main_menu(server: Server) -> tuple[str, SippCall]:
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    await audio_for(call, 1.0)
    return caller, call


async def press_and_record(api: httpx.AsyncClient, call: SippCall, caller: str,
                           digits: str) -> dict[str, object]:
    await call.rtp.press(digits)
    result = await call.finished()
    assert result.ok, result.errors or result.output
    return await call_record(api, caller)


async def test_refused_change_leaves_the_live_menus(server: Server, api: httpx.AsyncClient,
                                                   dialplans: Path) -> None:
    live = (await live_dialplan(server)).version
    menus = dialplans / "menus.yaml"
    edit(menus, '      "5": {queue: culture}\n', '      "5": {queue: culture}\n'
         '      "4": {queue: water}\n')
    line = next(n for n, text in enumerate(menus.read_text().splitlines(), 1)
                if text == '      "4": {queue: water}')

    check = run_ivr("dialplan", "check")
    assert check.returncode == 1
    assert f"menus.yaml:{line}: in menus.main.options: '4' is given twice" in check.stdout
    publish = run_ivr("dialplan", "publish")
    assert publish.returncode == 1 and "the live version stays live" in publish.stdout

    assert (await live_dialplan(server)).version == live
    caller, call = await in_main_menu(server)
    record = await press_and_record(api, call, caller, "4")
    assert record["path"] == ["main:4", "queue:welfare"]
    assert record["dialplan_version"] == live


async def test_accepted_change_reaches_the_next_call_only(
        server: Server, api: httpx.AsyncClient, dialplans: Path) -> None:
    old = (await live_dialplan(server)).version
    first_caller, first_call = await in_main_menu(server)  # in the menu before the change

    edit(dialplans / "menus.yaml", '      "4": {queue: welfare}', '      "4": {queue: culture}')
    publish = run_ivr("dialplan", "publish", "--author", "test-admin")
    assert publish.returncode == 0, publish.stdout + publish.stderr
    new = (await live_dialplan(server)).version
    assert new == old + 1

    second_caller, second_call = await in_main_menu(server)
    first, second = await asyncio.gather(
        press_and_record(api, first_call, first_caller, "4"),
        press_and_record(api, second_call, second_caller, "4"))
    assert (first["path"], first["dialplan_version"]) == (["main:4", "queue:welfare"], old)
    assert (second["path"], second["dialplan_version"]) == (["main:4", "queue:culture"], new)


async def test_emergency_announcement_plays_before_the_menu(
        server: Server, api: httpx.AsyncClient, dialplans: Path) -> None:
    edit(dialplans / "emergency.yaml", "enabled: false", "enabled: true")
    assert run_ivr("dialplan", "publish").returncode == 0

    caller, call = await in_main_menu(server)
    await call.rtp.press("4")  # pressed during the announcement: kept for the menu
    heard = await prompt_ends(call)
    announcement = (await prompt_seconds(server, "emergency_notice", "ko")
                    + await prompt_seconds(server, "emergency_notice", "en"))
    assert heard >= announcement * 0.95, (heard, announcement)
    result = await call.finished()
    assert result.ok, result.errors or result.output
    record = await call_record(api, caller)
    # Straight from the announcement to the queue: the digit typed ahead was kept.
    assert record["path"] == ["emergency", "main:4", "queue:welfare"]
