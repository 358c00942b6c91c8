"""Users of a role for tests: made directly in SQL (as an admin would through the API), then
signed in like anyone else."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import httpx

from ivr.api.auth import hash_password
from ivr.db import create_engine, init_schema, sessionmaker
from ivr.models import Role, User
from tests.conftest import Server


async def new_user(server: Server, role: Role, username: str = "") -> tuple[str, str]:
    """A new user of ``role`` (named ``username``, e.g. an agent's SIP account name):
    (username, password)."""
    username = username or f"t-{role}-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    engine = create_engine(server.settings.sql_url)
    try:
        await init_schema(engine)
        async with sessionmaker(engine)() as session, session.begin():
            session.add(User(username=username, password_hash=hash_password(password),
                             role=role))
    finally:
        await engine.dispose()
    return username, password


@contextlib.asynccontextmanager
async def signed_in(server: Server, role: Role) -> AsyncIterator[httpx.AsyncClient]:
    """An API client signed in as a new user of ``role``."""
    username, password = await new_user(server, role)
    async with httpx.AsyncClient(base_url=server.settings.api_base_url, timeout=10) as client:
        token = await client.post("/api/auth/token",
                                  data={"username": username, "password": password})
        token.raise_for_status()
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client
