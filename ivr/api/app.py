"""The FastAPI application: ``ivr api`` serves it with uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from callbot.service import load_understanding, seed_all
from ivr.api.auth import ensure_first_admin
from ivr.api.routes import (
    agents,
    audit,
    auth,
    bot,
    calls,
    complaints,
    desk,
    dialplans,
    knowledge,
    live,
    nodes,
    prompts,
    system,
    users,
    wallboard,
)
from ivr.ari import AriClient
from ivr.db import create_engine, init_schema, sessionmaker
from ivr.dialplan.versions import DialplanVersions
from ivr.redis_client import connect_redis
from ivr.secrets import load_settings
from ivr.settings import Settings
from ivr.web import STATIC


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.sql_url)
        await init_schema(engine)
        sessions = sessionmaker(engine)
        admin_password = settings.admin_password
        await ensure_first_admin(
            sessions, admin_password.get_secret_value() if admin_password else None
        )
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = sessions
        app.state.redis = connect_redis(settings, timeout=1.0)
        app.state.dialplans = DialplanVersions(sessions, app.state.redis)
        await seed_all(settings, sessions)
        _, app.state.understanding = await load_understanding(settings, sessions)
        app.state.knowledge_lock = asyncio.Lock()  # knowledge edits rebuild it one at a time
        app.state.ari = AriClient(settings.ari_base_url, settings.ari_user,
                                  settings.ari_secret(), timeout=2)
        try:
            yield
        finally:
            await app.state.ari.close()
            await app.state.redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="120 IVR server",
        summary="Telephony and IVR server of a city's public call center",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(system.router)
    app.include_router(auth.router)
    app.include_router(live.router)
    app.include_router(wallboard.router)  # before calls: /api/calls/live is not a call id
    app.include_router(calls.router)
    app.include_router(desk.router)
    app.include_router(bot.router)
    app.include_router(complaints.router)
    app.include_router(knowledge.router)
    app.include_router(agents.router)
    app.include_router(dialplans.router)
    app.include_router(prompts.router)
    app.include_router(users.router)
    app.include_router(audit.router)
    app.include_router(nodes.router)
    # The pages last: every path no route above takes is a file of the web pages.
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="web")
    return app
