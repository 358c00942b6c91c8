"""The SQL side, on SQLite and on a real PostgreSQL 15 (started here with ``ivr.cluster.postgres``,
no Asterisk): the migrations agree with the models, bring a database made before them under
them, run from several processes at once; and call records outlive a PostgreSQL restart."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ivr import migrations
from ivr.cluster.postgres import postgres_command, postgres_ready, postgres_url, prepare_postgres
from ivr.controller.records import CALLS, EVENTS, CallRecords, GroupCommit, WriteRefused
from ivr.controller.store import CallData
from ivr.db import Base, create_engine, init_schema
from tests.conftest import wait_for
from tests.support.stack import open_to_postgres

PORT = 15432 + int(os.environ.get("IVR_TEST_PORT_OFFSET", "0"))
PROJECT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


@dataclass
class LocalPostgres:
    """The test's own PostgreSQL server, started and stopped as the tests need."""

    data_dir: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return postgres_url(PORT, self.password)

    @property
    def sql_url(self) -> str:
        return "postgresql+asyncpg://" + self.url.removeprefix("postgresql://")

    def prepare(self) -> None:
        open_to_postgres(self.data_dir.parent)
        prepare_postgres(self.data_dir, PORT, self.password)

    async def running(self) -> None:
        if self.process is None:
            await self.start()

    async def start(self) -> None:
        # pytest makes its folder private again whenever a session starts (a test run beside
        # this one): opened again right before the server looks for its data.
        open_to_postgres(self.data_dir.parent)
        with (self.data_dir.parent / "postgres.log").open("ab") as output:
            self.process = await asyncio.to_thread(
                subprocess.Popen, postgres_command(self.data_dir, PORT), stdout=output,
                stderr=output)
        await wait_for(lambda: postgres_ready(self.url), 60, what="PostgreSQL to start")

    async def stop(self) -> None:
        """A fast shutdown (SIGINT, what ``pg_ctl stop -m fast`` sends): the clients' sessions
        end at once, as in a restart of the server under the controller."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        await asyncio.to_thread(self.process.wait, 60)
        self.process = None

    def end(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(60)
            self.process = None


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """Made once for the module (initdb takes a second); started by ``running``."""
    server = LocalPostgres(tmp_path_factory.mktemp("postgres") / "data")
    server.prepare()
    try:
        yield server
    finally:
        server.end()


@pytest.fixture
async def postgres(postgres_server: LocalPostgres) -> LocalPostgres:
    await postgres_server.running()
    return postgres_server


@dataclass
class EmptyDatabase:
    """A database with nothing in it: a new SQLite file, or a new schema of its own in the
    PostgreSQL database (``schema``)."""

    url: str
    schema: str = ""

    def engine(self) -> AsyncEngine:
        if not self.schema:
            return create_engine(self.url)
        return create_async_engine(self.url, poolclass=NullPool, connect_args={
            "server_settings": {"search_path": self.schema}})


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database(request: pytest.FixtureRequest,
                         tmp_path: Path) -> AsyncIterator[EmptyDatabase]:
    if request.param == "sqlite":
        yield EmptyDatabase(f"sqlite+aiosqlite:///{tmp_path / 'ivr.sqlite3'}")
        return
    server: LocalPostgres = request.getfixturevalue("postgres_server")
    await server.running()
    schema = f"t_{secrets.token_hex(4)}"
    admin = create_engine(server.sql_url)
    async with admin.begin() as connection:
        await connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield EmptyDatabase(server.sql_url, schema)
    finally:
        async with admin.begin() as connection:
            await connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await admin.dispose()


def _differences(connection: Connection) -> list[Any]:
    # Server defaults compared on PostgreSQL, which evaluates both sides itself; alembic's
    # SQLite comparison takes the same '' in the table and in the model as different.
    context = MigrationContext.configure(connection, opts={
        "compare_type": True, "compare_server_default": connection.dialect.name != "sqlite"})
    return list(compare_metadata(context, Base.metadata))


# --- Migrations -------------------------------------------------------------------------------

async def test_migrations_make_the_models_tables(
        empty_database: EmptyDatabase) -> None:
    """A new database, migrated to the newest revision, is what the models describe: the
    revisions were written by hand, and this is what proves them (SQLite and PostgreSQL)."""
    engine = empty_database.engine()
    try:
        await init_schema(engine)
        await init_schema(engine)  # the next start: nothing to do
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
            assert await connection.run_sync(migrations.current) == migrations.head()
            tables = set(await connection.run_sync(
                lambda sync: sync.dialect.get_table_names(sync)))
        assert tables == {*Base.metadata.tables, "alembic_version"}
    finally:
        await engine.dispose()


def _old_style_schema(connection: Connection) -> None:
    """A database as the code before migrations left it, a version or two old: create_all,
    without columns that a later version added (the old code added them at start)."""
    Base.metadata.create_all(connection)
    connection.execute(text("ALTER TABLE users DROP COLUMN display_name"))
    connection.execute(text("ALTER TABLE calls DROP COLUMN bot"))


async def test_a_database_made_before_migrations_is_brought_under_them(
        empty_database: EmptyDatabase) -> None:
    engine = empty_database.engine()
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_old_style_schema)
            await connection.execute(text(
                "INSERT INTO users (id, username, password_hash, role, created_at, active) "
                "VALUES ('u1', 'old-admin', 'hash', 'admin', :at, :yes)"),
                {"at": started, "yes": True})
            await connection.execute(insert(CALLS).values(
                id="rec-old", channel_id="chan-old", did="120", caller="0299000001",
                path=["menu"], started_at=started, outcome="completed"))
        await init_schema(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(migrations.current) == migrations.head()
            assert await connection.run_sync(_differences) == []
            user = (await connection.execute(text(
                "SELECT username, display_name FROM users"))).one()
            call = (await connection.execute(select(CALLS.c.id, CALLS.c.path, CALLS.c.bot))).one()
        assert tuple(user) == ("old-admin", "")  # the added column's server default
        assert tuple(call) == ("rec-old", ["menu"], None)
    finally:
        await engine.dispose()


MIGRATE = """
import asyncio, sys
from sqlalchemy.ext.asyncio import create_async_engine
from ivr.db import create_engine, init_schema
url, schema = sys.argv[1], sys.argv[2]
async def main():
    engine = (create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})
              if schema else create_engine(url))
    await init_schema(engine)
    await engine.dispose()
asyncio.run(main())
"""


async def test_processes_starting_together_migrate_one_after_the_other(
        empty_database: EmptyDatabase) -> None:
    """The controllers and the API start at the same moment, each running init_schema on a
    new database: none fails, and the schema is made once."""
    runs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", MIGRATE, empty_database.url, empty_database.schema, cwd=PROJECT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT) for _ in range(4)]
    outputs = [(await run.communicate())[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, "\n".join(outputs)
    engine = empty_database.engine()
    try:
        async with engine.connect() as connection:
            versions = (await connection.execute(
                text("SELECT version_num FROM alembic_version"))).scalars().all()
            assert await connection.run_sync(_differences) == []
        assert versions == [migrations.head()]
    finally:
        await engine.dispose()


# --- Call records through a PostgreSQL restart -----------------------------------------------

def _call(n: int) -> CallData:
    return CallData(channel_id=f"chan-{n}", record_id=f"rec-{n}-{secrets.token_hex(3)}",
                    did="120", caller=f"0299{n:06d}")


async def _event_details(engine: AsyncEngine, call: CallData) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(EVENTS.c.detail).where(
            EVENTS.c.call_id == call.record_id).order_by(EVENTS.c.id))
        return list(rows.scalars())


async def test_call_records_written_while_postgresql_restarts_are_kept(
        postgres: LocalPostgres, caplog: pytest.LogCaptureFixture) -> None:
    """Records written while PostgreSQL is down are held, the calls that wrote them go on, and
    all of them land, in order, once it is back; one that breaks a rule fails alone."""
    caplog.set_level(logging.INFO, logger="ivr.controller.records")
    engine = create_engine(postgres.sql_url)
    await init_schema(engine)
    records = CallRecords(engine)
    first, second = _call(1), _call(2)
    at = datetime.now(UTC)
    try:
        await records.started(first, at)
        for n in range(20):
            await records.event(first, "step", detail=f"{n}")
        await postgres.stop()

        # PostgreSQL is down: every write returns (held), none is lost.
        down_at = time.monotonic()
        writes = [records.started(second, at),
                  records.started(first, at)]  # written twice: refused by the key, once back
        writes += [records.event(call, "step", detail=f"{n}")
                   for n in range(20, 520) for call in (first, second)]
        first.outcome = second.outcome = "completed"
        writes += [records.ended(first, at), records.ended(second, at)]
        for write in writes:
            await asyncio.wait_for(write, 60)  # a call never hangs on its record
        held = records.waiting
        assert held == len(writes)
        assert "SQL database unreachable" in caplog.text

        await postgres.start()
        back_at = time.monotonic()
        await wait_for(lambda: _nothing_waiting(records), 120, 0.05,
                       what="the held writes to be written")
        caught_up = time.monotonic()
        log.warning("held %d writes for %.1f s; written %.2f s after PostgreSQL was ready",
                    held, back_at - down_at, caught_up - back_at)
        assert "SQL database back after" in caplog.text
        assert "a held write failed" in caplog.text  # the duplicate, alone

        expected = [f"{n}" for n in range(520)]
        assert await _event_details(engine, first) == expected
        assert await _event_details(engine, second) == expected[20:]
        async with engine.connect() as connection:
            ended = dict((await connection.execute(
                select(CALLS.c.id, CALLS.c.outcome).where(
                    CALLS.c.id.in_([first.record_id, second.record_id])))).all())
        # The ends came after the starts: the update of a record not inserted yet would miss.
        assert ended == {first.record_id: "completed", second.record_id: "completed"}

        # Back to normal: a write waits for its commit again, and a bad one fails for its writer.
        await records.event(first, "after")
        assert records.waiting == 0
        with pytest.raises(Exception, match="duplicate key"):
            await records.started(second, at)
    finally:
        await records.close(timeout=30)
        await engine.dispose()


async def _nothing_waiting(writes: GroupCommit | CallRecords) -> bool:
    return writes.waiting == 0


def _refused_port() -> int:
    """A port nothing listens on: connecting to it is refused at once, like a stopped server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_writes_beyond_the_cap_are_refused_loudly(
        caplog: pytest.LogCaptureFixture) -> None:
    engine = create_engine(f"postgresql+asyncpg://ivr:x@127.0.0.1:{_refused_port()}/ivr")
    writes = GroupCommit(engine, max_held=5)
    call = _call(3)
    try:
        for n in range(5):
            await asyncio.wait_for(writes.write(insert(EVENTS).values(
                call_id=call.record_id, kind="step", detail=f"{n}")), 60)
        for _ in range(3):
            with pytest.raises(WriteRefused):
                await writes.write(insert(EVENTS).values(call_id=call.record_id, kind="step"))
        assert caplog.text.count("refusing more") == 1  # logged once, refused every time
        assert writes.waiting == 5
        await writes.close(timeout=0.5)  # still away: the held writes are lost, and it says so
        assert "5 writes held are lost" in caplog.text
    finally:
        await engine.dispose()


async def test_a_database_that_does_not_answer_does_not_hold_up_calls(
        caplog: pytest.LogCaptureFixture) -> None:
    """A server that takes the connection and never answers (a host gone without a reset): the
    write returns after a while, held, and the database is found away when the connection
    attempt times out."""

    taken: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken.append(writer)  # kept open, never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = create_engine(f"postgresql+asyncpg://ivr:x@127.0.0.1:{port}/ivr")
    writes = GroupCommit(engine)
    try:
        statement = insert(EVENTS).values(call_id="rec-silent", kind="step")
        await asyncio.wait_for(writes.write(statement), 60)
        assert writes.waiting == 1
        await wait_for(lambda: _logged(caplog, "SQL database unreachable"), 60,
                       what="the database to be found away")
        await asyncio.wait_for(writes.write(statement), 60)  # held at once now
        assert writes.waiting == 2
        await writes.close(timeout=0.1)
    finally:
        for connection in taken:
            connection.close()
        server.close()
        await engine.dispose()


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


async def test_held_writes_are_written_at_shutdown_if_postgresql_comes_back(
        postgres: LocalPostgres) -> None:
    """The controller stops while PostgreSQL is down: it waits (a while) for it to come back
    and writes what it held, instead of losing it."""
    engine = create_engine(postgres.sql_url)
    await init_schema(engine)
    records = CallRecords(engine)
    call = _call(4)
    try:
        await postgres.stop()
        for n in range(50):
            await asyncio.wait_for(records.event(call, "step", detail=f"{n}"), 60)
        starting = asyncio.create_task(postgres.start())
        await records.close(timeout=120)
        await starting
        assert await _event_details(engine, call) == [f"{n}" for n in range(50)]
    finally:
        await engine.dispose()


async def test_the_postgres_server_is_private_and_needs_the_password(
        postgres: LocalPostgres) -> None:
    argv = postgres_command(postgres.data_dir, PORT)
    assert argv[:4] == ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    assert "listen_addresses=127.0.0.1" in argv
    assert stat.S_IMODE(postgres.data_dir.stat().st_mode) == 0o700
    assert not await postgres_ready(postgres_url(PORT, "not-the-password"))
    # Prepared again while it runs (every start of the stack does): nothing changes.
    await asyncio.to_thread(prepare_postgres, postgres.data_dir, PORT, postgres.password)
    assert await postgres_ready(postgres.url)
