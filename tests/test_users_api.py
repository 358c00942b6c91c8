"""Who can do what: users and roles, the audit log, throttled log-ins, the web pages' session."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
from redis.asyncio import Redis

from ivr.api.auth import LoginThrottle
from tests.conftest import Server


def unique(prefix: str) -> str:
    """A user name no other test of the session uses (the stack is shared)."""
    return f"{prefix}-{secrets.token_hex(3)}"


async def create_user(api: httpx.AsyncClient, role: str, **fields: Any) -> tuple[str, str]:
    """A new user of ``role`` made by the admin; returns their name and password."""
    username, password = unique(role), secrets.token_urlsafe(12)
    response = await api.post("/api/users", json={
        "username": username, "password": password, "role": role, **fields})
    assert response.status_code == 201, response.text
    return username, password


async def log_in(server: Server, username: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.settings.api_base_url, timeout=10) as client:
        return await client.post("/api/auth/token",
                                 data={"username": username, "password": password})


@contextlib.asynccontextmanager
async def signed_in(server: Server, username: str,
                    password: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client with the bearer token of this user."""
    response = await log_in(server, username, password)
    assert response.status_code == 200, response.text
    async with httpx.AsyncClient(base_url=server.settings.api_base_url, timeout=10) as client:
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        yield client


async def test_each_role_sees_what_it_may(server: Server, api: httpx.AsyncClient) -> None:
    supervisor, supervisor_password = await create_user(api, "supervisor",
                                                        display_name="Park Supervisor")
    agent, agent_password = await create_user(api, "agent")

    async with signed_in(server, supervisor, supervisor_password) as client:
        me = (await client.get("/api/users/me")).json()
        assert me["username"] == supervisor and me["role"] == "supervisor"
        assert me["display_name"] == "Park Supervisor" and me["active"] is True
        listed = await client.get("/api/users")
        assert listed.status_code == 200
        assert {supervisor, agent, "admin"} <= {user["username"] for user in listed.json()}
        assert (await client.get("/api/audit")).status_code == 200
        refused = await client.post("/api/users", json={
            "username": unique("nope"), "password": "long-enough-1", "role": "agent"})
        assert refused.status_code == 403
        assert (await client.delete(f"/api/users/{agent}")).status_code == 403

    async with signed_in(server, agent, agent_password) as client:
        me = (await client.get("/api/users/me")).json()
        assert me["username"] == agent and me["role"] == "agent"
        refused = await client.post("/api/users", json={
            "username": unique("nope"), "password": "long-enough-1", "role": "admin"})
        assert refused.status_code == 403
        assert (await client.get("/api/audit")).status_code == 403
        assert (await client.get("/api/users")).status_code == 403
        assert (await client.patch(f"/api/users/{agent}",
                                   json={"role": "admin"})).status_code == 403


async def test_every_route_needs_a_log_in(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.settings.api_base_url, timeout=10) as client:
        for method, path in [("GET", "/api/users"), ("GET", "/api/users/me"),
                             ("POST", "/api/users"), ("PATCH", "/api/users/admin"),
                             ("DELETE", "/api/users/admin"), ("GET", "/api/audit")]:
            response = await client.request(method, path, json={})
            assert response.status_code == 401, (method, path, response.text)
        forged = await client.get("/api/users/me", headers={"Authorization": "Bearer forged"})
        assert forged.status_code == 401


async def test_user_fields_are_checked(api: httpx.AsyncClient) -> None:
    short = await api.post("/api/users", json={
        "username": unique("short"), "password": "too-short", "role": "agent"})
    assert short.status_code == 422
    bad_role = await api.post("/api/users", json={
        "username": unique("role"), "password": "long-enough-1", "role": "boss"})
    assert bad_role.status_code == 422
    bad_name = await api.post("/api/users", json={
        "username": "no spaces", "password": "long-enough-1", "role": "agent"})
    assert bad_name.status_code == 422
    username, _ = await create_user(api, "agent")
    again = await api.post("/api/users", json={
        "username": username, "password": "long-enough-1", "role": "agent"})
    assert again.status_code == 409
    assert (await api.patch(f"/api/users/{username}",
                            json={"password": "short"})).status_code == 422
    assert (await api.patch("/api/users/nobody-here", json={"active": False})).status_code == 404
    assert (await api.delete("/api/users/nobody-here")).status_code == 404


async def test_inactive_users_and_changes_take_effect_at_once(server: Server,
                                                              api: httpx.AsyncClient) -> None:
    username, password = await create_user(api, "agent")
    async with signed_in(server, username, password) as client:
        assert (await client.get("/api/users/me")).status_code == 200

        promoted = await api.patch(f"/api/users/{username}", json={"role": "supervisor"})
        assert promoted.status_code == 200 and promoted.json()["role"] == "supervisor"
        # The token still says agent; the role of now counts.
        assert (await client.get("/api/users")).status_code == 200

        off = await api.patch(f"/api/users/{username}", json={"active": False})
        assert off.status_code == 200 and off.json()["active"] is False
        assert (await client.get("/api/users/me")).status_code == 401
    assert (await log_in(server, username, password)).status_code == 401

    new_password = secrets.token_urlsafe(12)
    back = await api.patch(f"/api/users/{username}",
                           json={"active": True, "password": new_password})
    assert back.status_code == 200 and back.json()["active"] is True
    assert (await log_in(server, username, password)).status_code == 401
    assert (await log_in(server, username, new_password)).status_code == 200

    assert (await api.delete(f"/api/users/{username}")).status_code == 204
    assert (await log_in(server, username, new_password)).status_code == 401


async def test_the_last_admin_stays(server: Server, api: httpx.AsyncClient) -> None:
    deleted = await api.delete("/api/users/admin")
    assert deleted.status_code == 409
    demoted = await api.patch("/api/users/admin", json={"role": "agent"})
    assert demoted.status_code == 409
    deactivated = await api.patch("/api/users/admin", json={"active": False})
    assert deactivated.status_code == 409
    assert (await api.get("/api/users/me")).json()["role"] == "admin"

    # A second admin may be removed, by another admin.
    other, other_password = await create_user(api, "admin")
    async with signed_in(server, other, other_password) as client:
        assert (await client.delete(f"/api/users/{other}")).status_code == 409  # themself
    assert (await api.patch(f"/api/users/{other}", json={"role": "agent"})).status_code == 200
    assert (await api.delete(f"/api/users/{other}")).status_code == 204


async def test_repeated_failed_log_ins_are_slowed_down(server: Server,
                                                      api: httpx.AsyncClient) -> None:
    username, password = await create_user(api, "agent")
    for _ in range(5):
        assert (await log_in(server, username, "wrong-password")).status_code == 401
    sixth = await log_in(server, username, "wrong-password")
    assert sixth.status_code == 429
    wait = int(sixth.headers["Retry-After"])
    assert wait == 1  # 2^(5-5) s after the fifth failure
    # Locked: even the right password is not checked.
    assert (await log_in(server, username, password)).status_code == 429

    await asyncio.sleep(wait + 0.2)
    assert (await log_in(server, username, "wrong-password")).status_code == 401
    locked = await log_in(server, username, "wrong-password")
    assert locked.status_code == 429
    longer = int(locked.headers["Retry-After"])
    assert longer == 2  # it doubles with each further failure

    await asyncio.sleep(longer + 0.2)
    assert (await log_in(server, username, password)).status_code == 200
    # A good log-in starts the count afresh.
    for _ in range(3):
        assert (await log_in(server, username, "wrong-password")).status_code == 401
    assert (await log_in(server, username, password)).status_code == 200


async def test_throttling_without_redis_lets_log_ins_through() -> None:
    # Nothing listens on port 1: every Redis command fails.
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        throttle = LoginThrottle(redis)
        await throttle.failed("kim", "192.0.2.1")
        assert await throttle.seconds_to_wait("kim", "192.0.2.1") == 0
        await throttle.succeeded("kim")
    finally:
        await redis.aclose()


async def test_the_web_pages_session(server: Server, api: httpx.AsyncClient) -> None:
    supervisor, supervisor_password = await create_user(api, "supervisor")
    async with httpx.AsyncClient(base_url=server.settings.api_base_url, timeout=10) as client:
        wrong = await client.post("/api/auth/session",
                                  data={"username": supervisor, "password": "wrong-password"})
        assert wrong.status_code == 401 and "ivr_session" not in wrong.cookies

        opened = await client.post("/api/auth/session",
                                   data={"username": supervisor, "password": supervisor_password})
        assert opened.status_code == 200
        assert opened.json() == {"username": supervisor, "role": "supervisor"}
        cookie = opened.headers["set-cookie"].lower()
        assert "ivr_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie

        me = await client.get("/api/users/me")
        assert me.status_code == 200 and me.json()["username"] == supervisor
        assert (await client.get("/api/users")).status_code == 200
        # A bearer token, when sent, is what counts.
        bad = await client.get("/api/users/me", headers={"Authorization": "Bearer forged"})
        assert bad.status_code == 401

        # A change with the cookie needs the header: without it, refused before the role check.
        body = {"username": unique("cookie"), "password": "long-enough-1", "role": "agent"}
        assert (await client.post("/api/users", json=body)).status_code == 403
        with_header = await client.post("/api/users", json=body,
                                        headers={"X-IVR-Request": "1"})
        assert with_header.status_code == 403
        assert "roles" in with_header.json()["detail"]  # now the role is what is missing

        assert (await client.post("/api/auth/logout")).status_code == 403
        out = await client.post("/api/auth/logout", headers={"X-IVR-Request": "1"})
        assert out.status_code == 204
        assert (await client.get("/api/users/me")).status_code == 401

    # An admin's session can change things, with the header.
    async with httpx.AsyncClient(base_url=server.settings.api_base_url, timeout=10) as client:
        opened = await client.post("/api/auth/session", data={
            "username": "admin", "password": server.admin_password})
        assert opened.status_code == 200 and opened.json()["role"] == "admin"
        body = {"username": unique("cookie"), "password": "long-enough-1", "role": "agent"}
        refused = await client.post("/api/users", json=body)
        assert refused.status_code == 403 and "X-IVR-Request" in refused.json()["detail"]
        created = await client.post("/api/users", json=body, headers={"X-IVR-Request": "1"})
        assert created.status_code == 201
        removed = await client.delete(f"/api/users/{body['username']}",
                                      headers={"X-IVR-Request": "1"})
        assert removed.status_code == 204


async def test_user_changes_are_in_the_audit_log(api: httpx.AsyncClient) -> None:
    username, _ = await create_user(api, "agent", display_name="Lee Agent")
    assert (await api.patch(f"/api/users/{username}",
                            json={"role": "supervisor",
                                  "password": "another-password-1"})).status_code == 200
    assert (await api.delete(f"/api/users/{username}")).status_code == 204

    response = await api.get("/api/audit", params={"action": "user.", "username": "admin"})
    assert response.status_code == 200
    entries = [entry for entry in response.json() if entry["target"] == username]
    assert [entry["action"] for entry in entries] == ["user.delete", "user.update",
                                                      "user.create"]  # newest first
    assert all(entry["username"] == "admin" and entry["role"] == "admin" for entry in entries)
    delete, update, create = entries
    assert create["detail"] == {"role": "agent", "display_name": "Lee Agent"}
    assert update["detail"] == {"role": {"from": "agent", "to": "supervisor"},
                                "password": "changed"}
    assert delete["detail"] == {"role": "supervisor"}
    assert "another-password-1" not in str(entries)

    only_deletes = (await api.get("/api/audit", params={"action": "user.delete"})).json()
    assert only_deletes and all(entry["action"] == "user.delete" for entry in only_deletes)
    assert not (await api.get("/api/audit", params={"username": unique("nobody")})).json()
    assert len((await api.get("/api/audit", params={"limit": 1})).json()) == 1
    assert (await api.get("/api/audit", params={"limit": 0})).status_code == 422
    assert (await api.get("/api/audit", params={"limit": 1001})).status_code == 422
