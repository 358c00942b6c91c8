"""Admins edit the knowledge base and the agents through the API; agents set their own state.

Against the whole server: the callbot's answers change at once (``POST /api/bot/ask``, and a
controller's ``Callbot`` at its next refresh), agents' SIP accounts appear in and disappear
from Asterisk, and every change is in the audit log.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callbot.knowledge import KnowledgeDeleted, KnowledgeEntry, seed_knowledge
from callbot.service import Callbot
from ivr.acd.core import Acd
from ivr.api.auth import hash_password
from ivr.ari import AriClient, AriError
from ivr.db import create_engine, sessionmaker
from ivr.models import AuditEntry, User
from ivr.redis_client import connect_redis
from tests.conftest import Server, wait_for
from tests.support.softphone import Softphone


def unique(prefix: str) -> str:
    """A name no other test of the session uses (the stack is shared)."""
    return f"{prefix}-{secrets.token_hex(3)}"


@contextlib.asynccontextmanager
async def database(server: Server) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(server.settings.sql_url)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def signed_in_as(server: Server, role: str,
                       username: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a new user with ``role``, made in SQL (not through the users API), removed
    afterwards."""
    username = username or unique(role)
    password = secrets.token_urlsafe(12)
    async with database(server) as sessions:
        async with sessions() as session, session.begin():
            session.add(User(username=username, password_hash=hash_password(password),
                             role=role))
        try:
            async with httpx.AsyncClient(base_url=server.settings.api_base_url,
                                         timeout=10) as client:
                token = await client.post("/api/auth/token",
                                          data={"username": username, "password": password})
                assert token.status_code == 200, token.text
                client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
                yield client
        finally:
            async with sessions() as session, session.begin():
                user = await session.scalar(select(User).where(User.username == username))
                if user is not None:
                    await session.delete(user)


async def audit_entries(server: Server, action: str, target: str) -> list[AuditEntry]:
    async with database(server) as sessions, sessions() as session:
        return list(await session.scalars(
            select(AuditEntry).where(AuditEntry.action == action, AuditEntry.target == target)
            .order_by(AuditEntry.id)))


def ari_of(server: Server) -> AriClient:
    settings = server.settings
    return AriClient(settings.ari_base_url, settings.ari_user, settings.ari_secret())


async def ask(api: httpx.AsyncClient, text: str, language: str = "ko") -> dict[str, Any]:
    response = await api.post("/api/bot/ask", json={"text": text, "language": language})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def loc_of(response: httpx.Response) -> list[list[Any]]:
    """The fields a 422 names."""
    assert response.status_code == 422, response.text
    return [problem["loc"] for problem in response.json()["detail"]]


# --- The knowledge base ---------------------------------------------------------------------


def snail_race(entry_id: str) -> dict[str, Any]:
    """A question type the seed does not have (nothing else in it is about snails)."""
    return {
        "id": entry_id, "topic": "culture", "skill": "culture",
        "department": "문화본부 축제팀", "contact": "02-000-9901",
        "phrasings": {"ko": ["달팽이 경주 대회 참가 신청은 어떻게 하나요",
                             "달팽이 경주 대회 언제 열려요"],
                      "en": ["How do I enter the snail race?", "When is the snail race?"]},
        "answer": {"ko": "달팽이 경주 대회는 매년 오월 첫 토요일에 열립니다.",
                   "en": "The snail race is held on the first Saturday of May."},
    }


async def test_knowledge_edits_reach_the_bot_at_once_and_are_audited(
        server: Server, api: httpx.AsyncClient) -> None:
    question = "달팽이 경주 대회 참가 신청은 어떻게 하나요"
    entry_id = f"snail_race_{secrets.token_hex(3)}"
    redis = connect_redis(server.settings)
    async with database(server) as sessions:
        # A controller's callbot, loaded before the edits.
        callbot = await Callbot.start(server.settings, redis, sessions)
        try:
            assert entry_id not in callbot.by_id
            assert not await callbot.refresh()  # nothing changed yet

            created = await api.post("/api/knowledge", json=snail_race(entry_id))
            assert created.status_code == 201, created.text
            assert created.json()["answer"]["en"].startswith("The snail race")
            assert (await api.get(f"/api/knowledge/{entry_id}")).json()["topic"] == "culture"
            again = await api.post("/api/knowledge", json=snail_race(entry_id))
            assert again.status_code == 409, again.text
            answer = await ask(api, question)
            assert answer["question_type"] == entry_id, answer
            assert answer["answer"] == snail_race(entry_id)["answer"]["ko"]
            assert await callbot.refresh()
            assert (await callbot.understand(question, "ko")).question_type == entry_id
            (made,) = await audit_entries(server, "knowledge.create", entry_id)
            assert (made.username, made.role) == ("admin", "admin")
            assert made.detail["topic"] == "culture"

            listed = await api.get("/api/knowledge", params={"topic": "culture", "q": "SNAIL"})
            assert [entry["id"] for entry in listed.json()] == [entry_id]
            assert entry_id not in [entry["id"] for entry in (await api.get(
                "/api/knowledge", params={"topic": "water", "q": "snail"})).json()]

            changed = snail_race(entry_id)
            del changed["id"]
            cancelled = {"ko": "올해 달팽이 경주 대회는 취소되었습니다.",
                         "en": "This year's snail race is cancelled."}
            changed["answer"] = cancelled
            updated = await api.put(f"/api/knowledge/{entry_id}", json=changed)
            assert updated.status_code == 200, updated.text
            assert (await ask(api, question))["answer"] == cancelled["ko"]
            assert (await ask(api, "When is the snail race?", "en"))["answer"] == cancelled["en"]
            assert await callbot.refresh()
            assert (await callbot.understand(question, "ko")).answer == cancelled["ko"]
            assert callbot.by_id[entry_id].answer_in("en") == cancelled["en"]
            assert not await callbot.refresh()  # once is enough
            (update,) = await audit_entries(server, "knowledge.update", entry_id)
            assert set(update.detail) == {"answer"}
            assert update.detail["answer"]["to"] == cancelled

            deleted = await api.delete(f"/api/knowledge/{entry_id}")
            assert deleted.status_code == 204, deleted.text
            assert (await api.get(f"/api/knowledge/{entry_id}")).status_code == 404
            assert (await api.delete(f"/api/knowledge/{entry_id}")).status_code == 404
            assert (await ask(api, question))["question_type"] != entry_id
            assert await callbot.refresh()
            assert entry_id not in callbot.by_id
            assert (await callbot.understand(question, "ko")).question_type != entry_id
            (removed,) = await audit_entries(server, "knowledge.delete", entry_id)
            assert removed.detail["answer"] == cancelled
        finally:
            callbot.close()
            await api.delete(f"/api/knowledge/{entry_id}")
            await redis.aclose()


async def test_a_bad_question_type_is_refused_with_its_field(
        server: Server, api: httpx.AsyncClient) -> None:
    entry_id = f"snail_race_{secrets.token_hex(3)}"
    no_english = snail_race(entry_id)
    no_english["answer"] = {"ko": "한국어 답만 있습니다."}
    response = await api.post("/api/knowledge", json=no_english)
    assert loc_of(response) == [["body", "answer"]]
    assert "en" in response.json()["detail"][0]["msg"]

    unknown_topic = {**snail_race(entry_id), "topic": "sports", "skill": "sports"}
    response = await api.post("/api/knowledge", json=unknown_topic)
    assert loc_of(response) == [["body", "topic"], ["body", "skill"]]
    assert "not a topic of the live dialplan" in response.json()["detail"][0]["msg"]

    assert loc_of(await api.post("/api/knowledge", json={**snail_race(entry_id),
                                                          "id": "Snail Race"})) == [["body", "id"]]
    assert ["body", "answers"] in loc_of(await api.post(
        "/api/knowledge", json={**snail_race(entry_id), "answers": {}}))  # a typo is named
    change = snail_race(entry_id)
    del change["id"]
    assert (await api.put("/api/knowledge/no_such_question", json=change)).status_code == 404
    assert (await api.get(f"/api/knowledge/{entry_id}")).status_code == 404  # nothing written

    async with signed_in_as(server, "agent") as agent:
        assert (await agent.get("/api/knowledge", params={"q": "수도"})).status_code == 200
        assert (await agent.post("/api/knowledge", json=snail_race(entry_id))).status_code == 403
        assert (await agent.delete("/api/knowledge/water_bill_moving")).status_code == 403
    async with httpx.AsyncClient(base_url=server.settings.api_base_url) as anonymous:
        assert (await anonymous.get("/api/knowledge")).status_code == 401


async def test_admins_edit_the_colloquial_words_and_the_bot_reads_them_at_once(
        server: Server, api: httpx.AsyncClient) -> None:
    word = f"꼬부기{secrets.token_hex(2)}"  # a made-up word: nothing in the base knows it
    question = {"text": f"{word} 어디서 내요", "language": "ko"}
    def about_water(answer: dict[str, Any]) -> bool:
        return (answer["question_type"] or answer["confirm"] or "").startswith("water_")

    assert not about_water((await api.post("/api/bot/ask", json=question)).json())

    put = await api.put(f"/api/knowledge/synonyms/{word}", json={"meaning": "수도 요금 납부"})
    assert put.status_code == 200, put.text
    assert {"word": word, "meaning": "수도 요금 납부"} in (
        await api.get("/api/knowledge/synonyms")).json()
    assert about_water((await api.post("/api/bot/ask", json=question)).json())
    (change,) = await audit_entries(server, "knowledge.synonym", word)
    assert change.detail == {"from": None, "to": "수도 요금 납부"}

    # Refused with the field and the reason, nothing written.
    empty = await api.put(f"/api/knowledge/synonyms/{word}x", json={"meaning": " "})
    assert loc_of(empty) == [["body", "meaning"]] and "empty" in empty.text
    same = await api.put("/api/knowledge/synonyms/요금", json={"meaning": "요금"})
    assert same.status_code == 422 and "the same" in same.text
    assert f"{word}x" not in {s["word"] for s in (await api.get(
        "/api/knowledge/synonyms")).json()}
    async with signed_in_as(server, "agent") as agent:
        assert (await agent.get("/api/knowledge/synonyms")).status_code == 200
        assert (await agent.put(f"/api/knowledge/synonyms/{word}",
                                json={"meaning": "과태료"})).status_code == 403

    assert (await api.delete(f"/api/knowledge/synonyms/{word}")).status_code == 204
    assert (await api.delete(f"/api/knowledge/synonyms/{word}")).status_code == 404
    assert not about_water((await api.post("/api/bot/ask", json=question)).json())


async def test_a_deleted_seed_entry_is_not_seeded_again(
        server: Server, api: httpx.AsyncClient) -> None:
    # An entry no other test asks about; it is put back at the end.
    entry_id = "pet_registration"
    original = await api.get(f"/api/knowledge/{entry_id}")
    assert original.status_code == 200, original.text
    async with database(server) as sessions:
        try:
            assert (await api.delete(f"/api/knowledge/{entry_id}")).status_code == 204
            # What every start does (API and controllers): the seed file does not bring it back.
            assert await seed_knowledge(sessions, server.settings.knowledge_seed_path) == 0
            async with sessions() as session:
                assert await session.get(KnowledgeEntry, entry_id) is None
                assert await session.get(KnowledgeDeleted, entry_id) is not None
            assert (await api.get(f"/api/knowledge/{entry_id}")).status_code == 404
        finally:
            body = {key: value for key, value in original.json().items()
                    if key != "updated_at"}
            restored = await api.post("/api/knowledge", json=body)
            assert restored.status_code == 201, restored.text
        async with sessions() as session:
            assert await session.get(KnowledgeDeleted, entry_id) is None  # made again
    answer = await ask(api, "반려동물 등록 방법")
    assert answer["candidates"][0]["question_type"] == entry_id, answer


# --- Agents ---------------------------------------------------------------------------------


async def endpoint_exists(server: Server, username: str) -> bool:
    async with ari_of(server) as ari:
        try:
            await ari.request("GET", f"/endpoints/PJSIP/{username}")
        except AriError as exc:
            if exc.not_found:
                return False
            raise
        return True


async def listed_agent(api: httpx.AsyncClient, username: str) -> dict[str, Any] | None:
    response = await api.get("/api/agents")
    assert response.status_code == 200, response.text
    for agent in response.json():
        if agent["username"] == username:
            return dict(agent)
    return None


async def test_an_admin_manages_agents_and_agents_set_their_own_state(
        server: Server, api: httpx.AsyncClient) -> None:
    username = unique("t-api")
    redis = connect_redis(server.settings)
    acd = Acd(redis)
    phone: Softphone | None = None
    try:
        made = await api.post("/api/agents", json={
            "username": username, "name": "Kim Example", "skills": {"water": 4},
            "languages": ["ko", "en"]})
        assert made.status_code == 201, made.text
        created = made.json()
        password = created["sip_password"]
        assert len(password) >= 16
        assert created["sip_server"] == f"127.0.0.1:{server.settings.sip_port}"
        assert await endpoint_exists(server, username)
        again = await api.post("/api/agents", json={
            "username": username, "skills": {"water": 1}, "languages": ["ko"]})
        assert again.status_code == 409, again.text
        (audited,) = await audit_entries(server, "agent.create", username)
        assert audited.detail["skills"] == {"water": 4}
        assert password not in json.dumps(audited.detail)

        listed = await listed_agent(api, username)
        assert listed is not None
        assert (listed["state"], listed["registered"], listed["languages"]) == (
            "logged_out", False, ["ko", "en"])

        # The password works: a softphone registers with it, and the list says so.
        phone = Softphone(server.workdir, username, password, server.sip_target,
                          answer=False).start()
        await phone.registered()

        async def registered() -> bool:
            agent = await listed_agent(api, username)
            return agent is not None and agent["registered"]

        await wait_for(registered, 15, what=f"{username} registered in GET /api/agents")

        patched = await api.patch(f"/api/agents/{username}", json={
            "name": "Kim Renamed", "skills": {"water": 2, "traffic": 5}})
        assert patched.status_code == 200, patched.text
        assert patched.json()["skills"] == {"water": 2, "traffic": 5}
        profile = await acd.agent(username)
        assert json.loads(profile["skills"]) == {"water": 2, "traffic": 5}
        assert profile["name"] == "Kim Renamed"
        async with ari_of(server) as ari:
            fields = {field["attribute"]: field["value"] for field in await ari.request(
                "GET", f"/asterisk/config/dynamic/res_pjsip/endpoint/{username}")}
        # Asterisk keeps only the digits and letters of the number part.
        assert fields["callerid"].startswith('"Kim Renamed" <'), fields["callerid"]
        assert fields["context"] == "agents"  # the rest of the endpoint is as it was
        (update,) = await audit_entries(server, "agent.update", username)
        assert set(update.detail) == {"name", "skills"}

        async with signed_in_as(server, "agent", username) as agent:
            me = await agent.get("/api/agents/me")
            assert me.status_code == 200 and me.json()["state"] == "logged_out", me.text
            available = await agent.post(f"/api/agents/{username}/state",
                                         json={"state": "available"})
            assert available.status_code == 200, available.text
            assert available.json()["state"] == "available"
            assert (await acd.agent(username))["state"] == "available"
            paused = await agent.post(f"/api/agents/{username}/state",
                                      json={"state": "paused", "reason": "lunch"})
            assert paused.status_code == 200, paused.text
            me_now = (await agent.get("/api/agents/me")).json()
            assert (me_now["state"], me_now["pause_reason"]) == ("paused", "lunch")
            assert me_now["since"] is not None
            assert (await agent.get("/api/agents")).status_code == 403  # not a supervisor
        states = await audit_entries(server, "agent.state", username)
        assert [(entry.username, entry.role, entry.detail["to"]) for entry in states] == [
            (username, "agent", "available"), (username, "agent", "paused")]
        assert states[1].detail["reason"] == "lunch"

        async with signed_in_as(server, "agent") as colleague:
            for state in ("available", "logged_out"):
                refused = await colleague.post(f"/api/agents/{username}/state",
                                               json={"state": state})
                assert refused.status_code == 403, refused.text
            assert (await colleague.post("/api/agents", json={
                "username": unique("t-api"), "skills": {"water": 3},
                "languages": ["ko"]})).status_code == 403
            assert (await colleague.get("/api/agents/me")).status_code == 404  # no account
        assert (await acd.agent(username))["state"] == "paused"

        async with signed_in_as(server, "supervisor") as supervisor:
            seen = await supervisor.get("/api/agents")
            assert seen.status_code == 200
            assert username in [agent["username"] for agent in seen.json()]
            out = await supervisor.post(f"/api/agents/{username}/state",
                                        json={"state": "logged_out"})
            assert out.status_code == 200 and out.json()["state"] == "logged_out", out.text
            assert (await supervisor.patch(f"/api/agents/{username}",
                                           json={"name": "X"})).status_code == 403
            assert (await supervisor.delete(f"/api/agents/{username}")).status_code == 403

        phone.stop()
        phone = None
        deleted = await api.delete(f"/api/agents/{username}")
        assert deleted.status_code == 204, deleted.text
        assert not await endpoint_exists(server, username)
        assert await listed_agent(api, username) is None
        assert await acd.agent(username) == {}
        assert len(await audit_entries(server, "agent.delete", username)) == 1
        assert (await api.delete(f"/api/agents/{username}")).status_code == 404
        assert (await api.post(f"/api/agents/{username}/state",
                               json={"state": "available"})).status_code == 404
    finally:
        if phone is not None:
            phone.stop()
        await api.delete(f"/api/agents/{username}")
        await redis.aclose()


async def test_agents_skills_and_languages_must_be_those_of_the_dialplan(
        server: Server, api: httpx.AsyncClient) -> None:
    username = unique("t-api")

    async def create(**fields: Any) -> httpx.Response:
        return await api.post("/api/agents", json={
            "username": username, "skills": {"water": 3}, "languages": ["ko"], **fields})

    assert loc_of(await create(skills={"water": 3, "sports": 4})) == [
        ["body", "skills", "sports"]]
    assert loc_of(await create(languages=["ko", "fr"])) == [["body", "languages", 1]]
    assert loc_of(await create(skills={"water": 6})) == [["body", "skills", "water"]]
    assert loc_of(await create(skills={})) == [["body", "skills"]]
    assert loc_of(await create(username="Not A SIP User")) == [["body", "username"]]
    assert not await endpoint_exists(server, username)  # nothing was made
    assert (await api.patch("/api/agents/nobody-here", json={"name": "X"})).status_code == 404

    made = await create()
    assert made.status_code == 201, made.text
    try:
        assert loc_of(await api.patch(f"/api/agents/{username}",
                                      json={"skills": {"parking": 2}})) == [
            ["body", "skills", "parking"]]
        assert (await listed_agent(api, username) or {})["skills"] == {"water": 3}
        bad_state = await api.post(f"/api/agents/{username}/state", json={"state": "lunch"})
        assert bad_state.status_code == 422, bad_state.text
    finally:
        assert (await api.delete(f"/api/agents/{username}")).status_code == 204


async def test_a_single_node_has_no_nodes_to_list(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/nodes")
    assert response.status_code == 404 and "single node" in response.json()["detail"]
