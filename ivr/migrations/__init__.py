"""The SQL schema's migrations (Alembic), run to the newest at every start by ``init_schema``.

A change to a model needs a revision here: a new file in ``versions/`` whose ``down_revision``
is the newest one, with explicit ``op`` calls. ``tests/test_sql.py`` fails while the models
and the migrations disagree; ``alembic.autogenerate.compare_metadata`` names the difference.
A new file can be started from the template with
``alembic.command.revision(ivr.migrations.config(), "what changes")``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

HERE = Path(__file__).resolve().parent


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, made in code (there is no alembic.ini): ``env.py`` runs the
    migrations on ``connection``, inside the transaction the caller holds."""
    alembic_config = Config()
    alembic_config.set_main_option("script_location", str(HERE))
    alembic_config.attributes["connection"] = connection
    return alembic_config


def upgrade(connection: Connection) -> None:
    """Bring the database on ``connection`` to the newest revision (in its transaction)."""
    command.upgrade(config(connection), "head")


def current(connection: Connection) -> str | None:
    """The revision the database is at (None: not under migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


def head() -> str:
    """The newest revision, the one ``upgrade`` brings a database to."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision
