"""A local PostgreSQL 15 for the cluster's records: made once in a data folder, then run in the
foreground by the stack's supervisor (``ivr.stack.Service``).

PostgreSQL refuses to run as root, so initdb, the server and psql run as the ``postgres`` OS
user, through ``setpriv`` (which execs, so the supervisor's SIGTERM reaches the server itself:
a "smart" shutdown that waits for clients; SIGINT would be "fast"). The server listens on
127.0.0.1 only, where every role needs its password (SCRAM); its unix socket, in a folder only
``postgres`` can enter, is how ``prepare_postgres`` manages roles without one.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
ROLE = "ivr"
DATABASE = "ivr"


class PostgresSetupError(Exception):
    """The PostgreSQL server cannot be made or started as asked; the message says why."""


def socket_dir(data_dir: Path) -> Path:
    """Where the server's unix socket is: beside the data folder, owned by ``postgres``."""
    return data_dir.parent / "postgres-socket"


def postgres_url(port: int, password: str) -> str:
    return f"postgresql://{ROLE}:{password}@127.0.0.1:{port}/{DATABASE}"


def postgres_command(data_dir: Path, port: int) -> list[str]:
    """The server in the foreground, as ``postgres``; its log goes to stderr."""
    return [*_as_postgres(), str(BIN / "postgres"), "-D", str(data_dir), "-p", str(port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={socket_dir(data_dir)}"]


def prepare_postgres(data_dir: Path, port: int, password: str) -> None:
    """Make the database cluster in ``data_dir`` (once), with the role ``ivr`` (``password``,
    set again each time so that it follows the caller's secret) and its database ``ivr``.

    Each step skips what exists. The server must not be running on another port; if it runs
    on ``port``, the roles are managed through it, otherwise through a server of its own,
    on the unix socket only, for the moment of the setup.
    """
    user = pwd.getpwnam(OS_USER)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _check_reachable(data_dir.parent)
    sockets = socket_dir(data_dir)
    for folder in (data_dir, sockets):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chown(folder, user.pw_uid, user.pw_gid)
        folder.chmod(0o700)  # PostgreSQL refuses a data folder others can read
    if not (data_dir / "PG_VERSION").exists():
        _run([str(BIN / "initdb"), "-D", str(data_dir), "--username", OS_USER,
              "--auth-local", "peer", "--auth-host", "scram-sha-256",
              "--encoding", "UTF8", "--no-locale"], cwd=sockets)
    running = _run([str(BIN / "pg_ctl"), "status", "-D", str(data_dir)], cwd=sockets,
                   check=False).returncode == 0
    if not running:
        _run([str(BIN / "pg_ctl"), "start", "-w", "-D", str(data_dir), "-l",
              str(sockets / "setup.log"), "-o",
              f"-p {port} -c listen_addresses='' -c unix_socket_directories={sockets}"],
             cwd=sockets)
    try:
        _psql(data_dir, port, f"""
            SELECT 'CREATE ROLE {ROLE} LOGIN'
             WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') \\gexec
            ALTER ROLE {ROLE} WITH LOGIN PASSWORD {_literal(password)};
            SELECT 'CREATE DATABASE {DATABASE} OWNER {ROLE}'
             WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}') \\gexec
        """)
    finally:
        if not running:
            _run([str(BIN / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(data_dir)],
                 cwd=sockets)


async def postgres_ready(url: str) -> bool:
    """Whether the server takes a login with ``url`` and answers a query."""
    engine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"),
                                 poolclass=NullPool, connect_args={"timeout": 2})
    try:
        async with engine.connect() as connection:
            return (await connection.execute(text("SELECT 1"))).scalar() == 1
    except Exception:  # refused, still starting, shutting down, password not set yet...
        return False
    finally:
        await engine.dispose()


def stop_postgres(data_dir: Path, mode: str = "fast") -> None:
    """Stop the server running on ``data_dir`` ("fast": ends the sessions, no waiting)."""
    _run([str(BIN / "pg_ctl"), "stop", "-w", "-m", mode, "-D", str(data_dir)],
         cwd=socket_dir(data_dir))


def _as_postgres() -> list[str]:
    return ["setpriv", f"--reuid={OS_USER}", f"--regid={OS_USER}", "--init-groups"]


def _run(argv: list[str], cwd: Path, check: bool = True,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*_as_postgres(), *argv], cwd=cwd, input=stdin, text=True,
                          capture_output=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise PostgresSetupError(f"{Path(argv[0]).name} failed ({done.returncode}): "
                                 f"{(done.stderr or done.stdout).strip()}")
    return done


def _psql(data_dir: Path, port: int, script: str) -> None:
    # The script on stdin, not in argv, where the password would show in the process list.
    _run([str(BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(socket_dir(data_dir)),
          "-p", str(port), "-U", OS_USER, "-d", "postgres", "-f", "-"],
         cwd=socket_dir(data_dir), stdin=script)


def _literal(value: str) -> str:
    """An SQL string literal (standard_conforming_strings is on: only quotes are doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _check_reachable(folder: Path) -> None:
    """``postgres`` must be able to pass through every folder above its own."""
    for parent in [folder.resolve(), *folder.resolve().parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001 \
                and parent.stat().st_uid != pwd.getpwnam(OS_USER).pw_uid:
            raise PostgresSetupError(
                f"{parent} is closed to others: the {OS_USER} user cannot reach {folder} "
                f"(chmod o+x {parent}, or keep PostgreSQL's data elsewhere)")
