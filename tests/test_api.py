"""The API's contract: log-in, roles, call records, health, metrics, OpenAPI."""

from __future__ import annotations

import httpx

from ivr.api.auth import hash_password
from ivr.db import create_engine, sessionmaker
from ivr.models import Role, User
from tests.conftest import Server


async def test_token_for_the_first_admin(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.settings.api_base_url) as client:
        response = await client.post("/api/auth/token", data={
            "username": "admin", "password": server.admin_password})
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer" and body["access_token"]

        wrong = await client.post("/api/auth/token", data={
            "username": "admin", "password": "not-the-password"})
        assert wrong.status_code == 401


async def test_calls_need_a_token_and_the_right_role(server: Server) -> None:
    engine = create_engine(server.settings.sql_url)
    async with sessionmaker(engine)() as session, session.begin():
        session.add(User(username="agent-kim", password_hash=hash_password("agent-pw-123"),
                         role=Role.AGENT))
    await engine.dispose()
    async with httpx.AsyncClient(base_url=server.settings.api_base_url) as client:
        assert (await client.get("/api/calls")).status_code == 401
        bad = await client.get("/api/calls", headers={"Authorization": "Bearer forged"})
        assert bad.status_code == 401
        token = (await client.post("/api/auth/token", data={
            "username": "agent-kim", "password": "agent-pw-123"})).json()["access_token"]
        response = await client.get("/api/calls", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403


async def test_calls_limit_is_checked(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/calls", params={"limit": 0})).status_code == 422
    response = await api.get("/api/calls", params={"limit": 1})
    assert response.status_code == 200 and len(response.json()) <= 1


async def test_health_names_every_part(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.settings.api_base_url) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    for part in ("asterisk", "ari", "redis", "database"):
        assert body[part]["state"] == "up", body
    assert body["asterisk"]["version"].startswith("22.")


async def test_metrics_and_openapi(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.settings.api_base_url) as client:
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert 'ivr_part_up{part="asterisk"} 1.0' in metrics.text
        assert "ivr_calls_active" in metrics.text
        schema = (await client.get("/openapi.json")).json()
        assert {"/health", "/metrics", "/api/auth/token", "/api/calls"} <= set(schema["paths"])
        assert (await client.get("/docs")).status_code == 200
