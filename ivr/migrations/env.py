"""Alembic's environment: runs the revisions on the connection that ``ivr.migrations`` gives.

The caller (``ivr.db.init_schema``) holds the transaction and the lock around it, so that
several processes starting at once migrate one after the other.
"""

from __future__ import annotations

from alembic import context

from ivr.db import Base  # the models, with the callbot's tables registered


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("migrations run through ivr.migrations.upgrade(connection)")
    context.configure(connection=connection, target_metadata=Base.metadata,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


run()
