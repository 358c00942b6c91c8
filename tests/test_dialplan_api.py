"""Admins edit the dialplan through the API: a broken edit is refused with file, line and
reason and nothing changes; a good one is diffed, published and goes live at once; an older
version can be put back. Agents may not touch it."""

from __future__ import annotations

import httpx

from ivr.models import Role
from tests.conftest import Server, live_dialplan
from tests.support.users import signed_in


async def test_edit_check_publish_and_roll_back(server: Server, api: httpx.AsyncClient) -> None:
    files = (await api.get("/api/dialplans/files")).json()
    assert {"menus.yaml", "dids.yaml", "prompts.yaml"} <= set(files)
    menus = files["menus.yaml"]
    start = (await api.get("/api/dialplans/versions")).json()[0]
    assert start["live"]

    # A menu option to a menu that does not exist: refused, with where and why.
    broken = menus.replace('"5": {queue: culture}', '"5": {menu: nowhere}', 1)
    assert broken != menus
    refused = await api.put("/api/dialplans/files/menus.yaml", json={"text": broken})
    assert refused.status_code == 422
    problems = refused.json()["detail"]["problems"]
    assert any(p["file"] == "menus.yaml" and "nowhere" in p["reason"] and p["line"] > 1
               for p in problems), problems
    assert (await api.get("/api/dialplans/files")).json()["menus.yaml"] == menus  # unchanged
    assert (await api.get("/api/dialplans/diff")).json()["changed"] is False

    # Checking a change writes nothing either.
    checked = (await api.post("/api/dialplans/check", json={"files": {"menus.yaml": broken}}))
    assert checked.json()["ok"] is False

    # A good edit: saved, shown in the diff, published, live for the next call.
    changed = menus.replace('"5": {queue: culture}', '"5": {queue: welfare}', 1)
    saved = await api.put("/api/dialplans/files/menus.yaml", json={"text": changed})
    assert saved.status_code == 200 and saved.json()["ok"], saved.text
    diff = (await api.get("/api/dialplans/diff")).json()
    assert diff["changed"] and '+      "5": {queue: welfare}' in diff["diff"]
    published = await api.post("/api/dialplans/publish", json={"note": "culture to welfare"})
    assert published.status_code == 200, published.text
    new_version = published.json()["version"]
    assert published.json()["created"] and new_version > start["id"]
    assert (await live_dialplan(server)).menus["main"].options["5"].queue == "welfare"
    history = (await api.get("/api/dialplans/versions")).json()
    assert history[0]["id"] == new_version and history[0]["live"]
    assert history[0]["note"] == "culture to welfare" and history[0]["author"] == "admin"

    # Roll back: refused while the working copy has unpublished edits, unless discarded.
    pending = changed.replace('"4": {queue: welfare}', '"4": {queue: general}', 1)
    assert pending != changed
    saved = await api.put("/api/dialplans/files/menus.yaml", json={"text": pending})
    assert saved.status_code == 200, saved.text
    busy = await api.post(f"/api/dialplans/versions/{start['id']}/rollback", json={})
    assert busy.status_code == 409
    back = await api.post(f"/api/dialplans/versions/{start['id']}/rollback",
                          json={"discard_draft": True})
    assert back.status_code == 200, back.text
    assert (await live_dialplan(server)).menus["main"].options["5"].queue == "culture"
    assert (await api.get("/api/dialplans/files")).json()["menus.yaml"] == menus
    old = (await api.get(f"/api/dialplans/versions/{start['id']}")).json()
    assert old["menus.yaml"] == menus
    # A number no version can have is refused, not a server error (found by the fuzzer).
    huge = await api.get(f"/api/dialplans/versions/{2**70}")
    assert huge.status_code == 422 and "version" in huge.text


async def test_only_admins_change_the_dialplan(server: Server, api: httpx.AsyncClient) -> None:
    menus = (await api.get("/api/dialplans/files")).json()["menus.yaml"]
    async with signed_in(server, Role.AGENT) as agent:
        assert (await agent.get("/api/dialplans/files")).status_code == 403
        assert (await agent.put("/api/dialplans/files/menus.yaml",
                                json={"text": menus})).status_code == 403
        assert (await agent.post("/api/dialplans/publish", json={})).status_code == 403
    async with signed_in(server, Role.SUPERVISOR) as supervisor:
        assert (await supervisor.get("/api/dialplans/versions")).status_code == 200
        assert (await supervisor.post("/api/dialplans/publish", json={})).status_code == 403
    async with httpx.AsyncClient(base_url=server.settings.api_base_url) as anonymous:
        assert (await anonymous.get("/api/dialplans/files")).status_code == 401
    unknown = await api.put("/api/dialplans/files/passwd", json={"text": "x"})
    assert unknown.status_code == 404
