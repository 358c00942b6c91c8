"""The SQL database: one async engine per process, and the schema kept up to date.

SQLite (in the data folder) by default; PostgreSQL when ``IVR_DATABASE_URL`` says so. The schema
only grows: a column a newer version adds to a model is added to an existing table at start, so
an installation keeps its records across upgrades.
"""

from __future__ import annotations

import logging

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.schema import CreateColumn

from callbot import complaints as _complaints  # noqa: F401  (registers complaints)
from callbot import knowledge as _knowledge  # noqa: F401  (registers knowledge_entries)
from ivr.models import Base

log = logging.getLogger(__name__)


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # WAL lets the API read while the controller writes; both processes share the file.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _add_missing_columns(connection: Connection) -> None:
    inspector = inspect(connection)
    for table in Base.metadata.sorted_tables:
        existing = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in existing:
                ddl = CreateColumn(column).compile(dialect=connection.dialect)
                log.info("adding column %s.%s", table.name, column.name)
                connection.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))


async def init_schema(engine: AsyncEngine) -> None:
    """Create missing tables and columns. Safe to run from several processes at once."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
        await connection.run_sync(_add_missing_columns)
