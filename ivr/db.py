"""The SQL database: one async engine per process, and the schema kept up to date.

SQLite (in the data folder) by default; PostgreSQL when ``IVR_DATABASE_URL`` says so. The schema
is made and changed by migrations (``ivr/migrations``), run to the newest at every start, so an
installation keeps its records across upgrades.
"""

from __future__ import annotations

import logging

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import NullPool

from callbot import complaints as _complaints  # noqa: F401  (registers complaints)
from callbot import knowledge as _knowledge  # noqa: F401  (registers knowledge_entries)
from ivr import migrations
from ivr.models import Base as Base

log = logging.getLogger(__name__)

# PostgreSQL's advisory lock held while one process migrates: any number, the same in all.
MIGRATION_LOCK = 120_2026_0001
# A connection that PostgreSQL does not answer fails after this instead of asyncpg's minute, so
# that the call records' writer knows soon that the database is away (ivr.controller.records).
CONNECT_TIMEOUT = 10.0


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_async_engine(url, pool_pre_ping=True,
                               connect_args={"timeout": CONNECT_TIMEOUT})


def _sqlite_engine(url: str, begin: str | None = None) -> AsyncEngine:
    """``begin``: the statement that opens each transaction, instead of the driver's own
    (which opens none before DDL, so a migration would not be one transaction)."""
    engine = create_async_engine(url, connect_args={"timeout": 30},
                                 poolclass=NullPool if begin else None)

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # WAL lets the API read while the controller writes; both processes share the file.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        if begin:
            dbapi_connection.isolation_level = None  # the driver begins nothing by itself

    if begin:
        @event.listens_for(engine.sync_engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql(begin)

    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def init_schema(engine: AsyncEngine) -> None:
    """Run the migrations to the newest: a new database gets every table, one made before
    migrations is completed (its rows kept) and marked, an older one gets what changed since.

    Safe to run from several processes at once: one migrates, in one transaction, while the
    others wait for it (PostgreSQL: an advisory lock; SQLite: the file's write lock, taken
    first by BEGIN IMMEDIATE and waited for up to the busy timeout), then find nothing to do.
    """
    url = engine.url
    if url.get_backend_name() == "postgresql":
        async with engine.begin() as connection:
            # Released when the transaction ends (also if this process dies meanwhile).
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                     {"key": MIGRATION_LOCK})
            await connection.run_sync(migrations.upgrade)
    elif url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        migrator = _sqlite_engine(url.render_as_string(hide_password=False),
                                  begin="BEGIN IMMEDIATE")
        try:
            async with migrator.begin() as connection:
                await connection.run_sync(migrations.upgrade)
        finally:
            await migrator.dispose()
    else:  # a database only this engine sees (SQLite in memory)
        async with engine.begin() as connection:
            await connection.run_sync(migrations.upgrade)
