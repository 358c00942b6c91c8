"""The live dialplan's numbers, for the cluster's SIP edge to check calls against.

Revision ID: 0002
Revises: 0001
Created: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dialplan_numbers",
        sa.Column("number", sa.String(32), primary_key=True),
        if_not_exists=True,  # as in 0001: a database made by create_all may have it already
    )


def downgrade() -> None:
    op.drop_table("dialplan_numbers")
