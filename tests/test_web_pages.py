"""The web pages in a real browser: Debian's headless Chromium, driven by Playwright.

An admin changes a menu option and publishes it; a supervisor sees a live SIPp call appear on
the wallboard and leave it; an agent sees an offered call's context on the desk and saves the
consultation record.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, FilePayload, Page, async_playwright, expect

from callbot.complaints import open_complaint
from ivr.db import create_engine, init_schema, sessionmaker
from ivr.models import Role
from tests.conftest import Server, audio_for, call_record, caller_number, live_dialplan
from tests.support.scenario import Press
from tests.support.sip import SippCall
from tests.support.speech import tone
from tests.support.team import team_of
from tests.support.users import new_user
from tests.test_queues import call_in

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, and quiet: no calls home (this machine's network is closed).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        await chromium.close()


async def signed_in_page(browser: Browser, server: Server, username: str,
                         password: str) -> Page:
    page = await (await browser.new_context(locale="en-US")).new_page()
    await page.goto(server.settings.api_base_url + "/")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#sign-in")
    return page


async def admin_page(browser: Browser, server: Server) -> Page:
    page = await signed_in_page(browser, server, "admin", server.admin_password)
    await page.wait_for_url("**/admin.html")
    await page.wait_for_selector("body[data-ready='1']")  # filled, every button working
    return page


async def test_a_wrong_password_is_said_and_korean_is_one_click_away(
        browser: Browser, server: Server) -> None:
    page = await signed_in_page(browser, server, "admin", "not-the-password")
    await expect(page.locator("#error")).to_have_text("Wrong username or password.")
    page = await admin_page(browser, server)
    await page.click("#switch-language")
    await expect(page.locator("#sign-out")).to_have_text("로그아웃")
    await page.click("#switch-language")
    await expect(page.locator("#sign-out")).to_have_text("Sign out")


async def test_admin_changes_a_menu_option_and_publishes(
        browser: Browser, server: Server, api: httpx.AsyncClient) -> None:
    page = await admin_page(browser, server)
    editor = page.locator("#text")
    await expect(editor).to_have_value(re.compile(r'"5": \{queue: culture\}'))
    menus = await editor.input_value()

    await editor.fill(menus.replace('"5": {queue: culture}', '"5": {menu: nowhere}', 1))
    await page.click("#save")
    await expect(page.locator("#result.error")).to_contain_text("menus.yaml:")

    await editor.fill(menus.replace('"5": {queue: culture}', '"5": {queue: welfare}', 1))
    await page.click("#save")
    await expect(page.locator("#result.ok")).to_have_text("Saved.")
    await page.click("#publish")
    await expect(page.locator("#result.ok")).to_contain_text("Published: version")
    assert (await live_dialplan(server)).menus["main"].options["5"].queue == "welfare"

    # Back as it was, for the session's other tests.
    restored = await api.put("/api/dialplans/files/menus.yaml", json={"text": menus})
    assert restored.status_code == 200
    assert (await api.post("/api/dialplans/publish", json={})).status_code == 200


async def test_supervisor_sees_a_live_call_come_and_go(browser: Browser, server: Server,
                                                       api: httpx.AsyncClient) -> None:
    username, password = await new_user(server, Role.SUPERVISOR)
    page = await signed_in_page(browser, server, username, password)
    await page.wait_for_url("**/wallboard.html")
    caller = caller_number()
    call = await SippCall("caller.xml", "120", server.sip_target, server.workdir, caller).start()
    await audio_for(call, 0.5)
    row = page.locator(f'tr.live-call[data-caller="{caller}"]')
    await expect(row).to_be_visible(timeout=15_000)
    await expect(row).to_contain_text("main")
    await call.rtp.press("4")  # welfare: nobody is logged in, the call ends
    assert (await call.finished()).ok
    await expect(row).to_have_count(0, timeout=15_000)
    await call_record(api, caller)


async def test_supervisor_sees_the_complaints_to_follow_up(browser: Browser,
                                                          server: Server) -> None:
    """A complaint left halfway (as a caller who hung up mid-intake leaves it) is on the
    wallboard, with its district, for someone to follow up."""
    engine = create_engine(server.settings.sql_url)
    try:
        await init_schema(engine)
        receipt = await open_complaint(sessionmaker(engine), "illegal_parking", "mapo", "ko",
                                       "a-call-record")
    finally:
        await engine.dispose()
    username, password = await new_user(server, Role.SUPERVISOR)
    page = await signed_in_page(browser, server, username, password)
    await page.wait_for_url("**/wallboard.html")
    row = page.locator("tr.complaint.incomplete", has_text=receipt)
    await expect(row).to_be_visible(timeout=15_000)
    await expect(row).to_contain_text("mapo")


async def test_agent_sees_the_offered_call_and_saves_the_record(
        browser: Browser, server: Server, api: httpx.AsyncClient) -> None:
    async with team_of(server) as team:
        agent = await team.agent("desk", "water=5")
        _, password = await new_user(server, Role.AGENT, username=agent)
        page = await signed_in_page(browser, server, agent, password)
        await page.wait_for_url("**/desk.html")
        await expect(page.locator("#softphone")).to_have_text("registered")

        caller, call = await call_in(server, "121", [Press("1", 2.0)], talk=20)
        await expect(page.locator("#call-caller")).to_have_text(caller, timeout=30_000)
        await expect(page.locator("#call-path")).to_contain_text("queue:water")
        await expect(page.locator("#call-queue")).to_have_text("water:ko")

        await page.fill("#notes", "이사 정산 안내 (test)")
        await page.select_option("#resolution", "resolved")
        await page.click("#save-record")
        await expect(page.locator("#record-result.ok")).to_have_text("Saved.")
        await expect(page.locator("#today")).to_contain_text("records 1")
        assert (await call.finished()).ok
    record = await call_record(api, caller)
    saved = (await api.get(f"/api/calls/{record['id']}/consultation")).json()
    assert [(r["agent"], r["category"], r["notes"], r["resolution"]) for r in saved] == [
        (agent, "water", "이사 정산 안내 (test)", "resolved")]


async def test_admin_edits_the_knowledge_base_agents_and_recordings(
        browser: Browser, server: Server, api: httpx.AsyncClient, tmp_path: Path) -> None:
    page = await admin_page(browser, server)

    # A knowledge-base answer, edited as the bot will say it.
    await page.fill("#kb-query", "towed_car")
    await page.click("#kb-search button")
    await page.click('tr.kb-row[data-id="towed_car"] td')
    await expect(page.locator("#kb-entry")).to_have_value(re.compile("department"))
    entry = json.loads(await page.locator("#kb-entry").input_value())
    original = entry["answer"]["en"]
    entry["answer"]["en"] = "Towed cars wait at the example tow yard (test)."
    await page.fill("#kb-entry", json.dumps(entry))
    await page.click("#kb-save")
    await expect(page.locator("#kb-result.ok")).to_have_text("Saved.")
    asked = (await api.post("/api/bot/ask", json={"text": "where is the tow yard",
                                                   "language": "en"})).json()
    assert asked["answer"] == "Towed cars wait at the example tow yard (test)."
    entry["answer"]["en"] = original
    assert (await api.put("/api/knowledge/towed_car", json=entry)).status_code == 200

    # An agent's account: made with its SIP password shown once, then removed.
    username = f"t-page-{caller_number()[-4:]}"
    await page.fill("#agent-username", username)
    await page.fill("#agent-skills", "water=4")
    await page.fill("#agent-languages", "ko")
    await page.click("#agent-new button")
    await expect(page.locator("#agent-result.ok")).to_contain_text("SIP password")
    await page.click(f'button.agent-delete[data-agent="{username}"]')
    await expect(page.locator(f'button[data-agent="{username}"]')).to_have_count(0)

    # A recording: a WAV is taken, a text file is refused with the reason.
    wav = tmp_path / "thanks.wav"
    tone(wav)
    await page.fill("#upload-prompt", "goodbye")
    await page.fill("#upload-language", "vi")
    await page.set_input_files("#upload-file", str(wav))
    await page.click("#upload button")
    await expect(page.locator("#upload-result.ok")).to_have_text("Saved.")
    await page.set_input_files("#upload-file", files=FilePayload(
        name="notes.wav", mimeType="audio/wav", buffer=b"not audio"))
    await page.click("#upload button")
    await expect(page.locator("#upload-result.error")).to_contain_text("WAV or MP3")
    assert (await api.delete("/api/prompts/goodbye/vi/recording")).status_code == 200
