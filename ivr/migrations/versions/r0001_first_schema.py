"""The first schema: the tables as they were when migrations began.

A database made before migrations (by ``create_all``, with columns added at start by the code of
then, and no ``alembic_version``) already has some or all of these tables: ``IF NOT EXISTS``
leaves them and their rows alone, and the columns they lack are added, so that after this
revision such a database is like a new one and is marked as at this revision.

Revision ID: 0001
Revises: -
Created: 2026-12-03
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import CreateColumn

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("ivr.migrations")

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    tables = [
        op.create_table(
            "users",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("username", sa.String(64), nullable=False),
            sa.Column("password_hash", sa.String(128), nullable=False),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("created_at", WHEN, nullable=False),
            # Server defaults: the code before migrations added these two to older tables.
            sa.Column("display_name", sa.String(128), nullable=False, server_default=""),
            sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
            if_not_exists=True,
        ),
        op.create_table(
            "agents",
            sa.Column("username", sa.String(64), primary_key=True),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("skills", sa.JSON(), nullable=False),
            sa.Column("languages", sa.JSON(), nullable=False),
            sa.Column("sip_digest", sa.String(64), nullable=False),
            sa.Column("created_at", WHEN, nullable=False),
            if_not_exists=True,
        ),
        op.create_table(
            "dialplan_versions",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("published_at", WHEN, nullable=False),
            sa.Column("author", sa.String(64), nullable=False),
            sa.Column("note", sa.String(256), nullable=False),
            sa.Column("checksum", sa.String(64), nullable=False),
            sa.Column("sources", sa.JSON(), nullable=False),
            sa.Column("bundle", sa.Text(), nullable=False),
            if_not_exists=True,
        ),
        op.create_table(
            "call_events",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("call_id", sa.String(32), nullable=False),
            sa.Column("at", WHEN, nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("agent", sa.String(64), nullable=True),
            sa.Column("detail", sa.String(256), nullable=False),
            if_not_exists=True,
        ),
        op.create_table(
            "callbacks",
            sa.Column("id", sa.String(40), primary_key=True),
            sa.Column("call_id", sa.String(32), nullable=False),
            sa.Column("number", sa.String(64), nullable=False),
            sa.Column("queue", sa.String(64), nullable=False),
            sa.Column("requested_at", WHEN, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("agent", sa.String(64), nullable=True),
            sa.Column("done_at", WHEN, nullable=True),
            if_not_exists=True,
        ),
        op.create_table(
            "calls",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("channel_id", sa.String(64), nullable=False),
            sa.Column("did", sa.String(32), nullable=False),
            sa.Column("caller", sa.String(64), nullable=False),
            sa.Column("line", sa.String(32), nullable=True),
            sa.Column("district", sa.String(32), nullable=True),
            sa.Column("language", sa.String(8), nullable=True),
            sa.Column("path", sa.JSON(), nullable=False),
            sa.Column("started_at", WHEN, nullable=False),
            sa.Column("answered_at", WHEN, nullable=True),
            sa.Column("ended_at", WHEN, nullable=True),
            sa.Column("outcome", sa.String(32), nullable=False),
            sa.Column("hangup_cause", sa.String(64), nullable=True),
            sa.Column("queue", sa.String(64), nullable=True),
            sa.Column("agent", sa.String(64), nullable=True),
            sa.Column("queued_at", WHEN, nullable=True),
            sa.Column("wait_seconds", sa.Double(), nullable=True),
            sa.Column("dialplan_version", sa.Integer(), nullable=True),
            sa.Column("callback_of", sa.String(32), nullable=True),
            sa.Column("bot", sa.JSON(), nullable=True),
            if_not_exists=True,
        ),
        op.create_table(
            "audit_log",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("at", WHEN, nullable=False),
            sa.Column("username", sa.String(64), nullable=False),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("action", sa.String(64), nullable=False),
            sa.Column("target", sa.String(200), nullable=False),
            sa.Column("detail", sa.JSON(), nullable=False),
            if_not_exists=True,
        ),
        op.create_table(
            "consultation_records",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("call_id", sa.String(32), nullable=False),
            sa.Column("agent", sa.String(64), nullable=False),
            sa.Column("category", sa.String(64), nullable=False),
            sa.Column("notes", sa.Text(), nullable=False),
            sa.Column("resolution", sa.String(32), nullable=False),
            sa.Column("question_type", sa.String(64), nullable=True),
            sa.Column("written_at", WHEN, nullable=False),
            if_not_exists=True,
        ),
        # The callbot's (callbot.complaints, callbot.knowledge).
        op.create_table(
            "complaints",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("receipt", sa.String(16), nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("district", sa.String(32), nullable=True),
            sa.Column("language", sa.String(8), nullable=False),
            sa.Column("details", sa.JSON(), nullable=False),
            sa.Column("transcript", sa.JSON(), nullable=False),
            sa.Column("call_record_id", sa.String(32), nullable=False),
            sa.Column("note", sa.String(1000), nullable=False),
            sa.Column("created_at", WHEN, nullable=False),
            sa.Column("updated_at", WHEN, nullable=False),
            if_not_exists=True,
        ),
        op.create_table(
            "knowledge_entries",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("topic", sa.String(32), nullable=False),
            sa.Column("skill", sa.String(32), nullable=False),
            sa.Column("department", sa.String(128), nullable=False),
            sa.Column("contact", sa.String(32), nullable=False),
            sa.Column("titles", sa.JSON(), nullable=True),
            sa.Column("phrasings", sa.JSON(), nullable=False),
            sa.Column("answers", sa.JSON(), nullable=False),
            sa.Column("updated_at", WHEN, nullable=False),
            if_not_exists=True,
        ),
        op.create_table(
            "knowledge_synonyms",
            sa.Column("word", sa.String(64), primary_key=True),
            sa.Column("meaning", sa.String(128), nullable=False),
            sa.Column("deleted", sa.Boolean(), nullable=False),
            sa.Column("updated_at", WHEN, nullable=False),
            if_not_exists=True,
        ),
        op.create_table(
            "knowledge_deleted",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("deleted_at", WHEN, nullable=False),
            if_not_exists=True,
        ),
    ]
    _add_missing_columns(tables)  # before the indexes: one may be on such a column

    indexes = [
        ("users", "username", True),
        ("dialplan_versions", "published_at", False),
        ("dialplan_versions", "checksum", False),
        ("call_events", "call_id", False),
        ("callbacks", "call_id", False),
        ("calls", "channel_id", False),
        ("calls", "started_at", False),
        ("audit_log", "at", False),
        ("audit_log", "username", False),
        ("audit_log", "action", False),
        ("consultation_records", "call_id", False),
        ("consultation_records", "agent", False),
        ("consultation_records", "written_at", False),
        ("complaints", "receipt", True),
        ("complaints", "kind", False),
        ("complaints", "status", False),
        ("complaints", "district", False),
        ("complaints", "call_record_id", False),
        ("complaints", "created_at", False),
        ("knowledge_entries", "topic", False),
    ]
    for table, column, unique in indexes:
        # The names create_all gave them, so that an older database's indexes are the same.
        op.create_index(f"ix_{table}_{column}", table, [column], unique=unique,
                        if_not_exists=True)


def _add_missing_columns(tables: list[sa.Table]) -> None:
    """Columns that a table made before migrations lacks (it kept the columns of its day)."""
    connection = op.get_bind()
    inspector = sa.inspect(connection)
    for table in tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                log.info("adding column %s.%s", table.name, column.name)
                ddl = CreateColumn(column).compile(dialect=connection.dialect)
                op.execute(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")


def downgrade() -> None:
    for table in ("knowledge_deleted", "knowledge_synonyms", "knowledge_entries", "complaints",
                  "consultation_records", "audit_log", "calls", "callbacks", "call_events",
                  "dialplan_versions", "agents", "users"):
        op.drop_table(table)
