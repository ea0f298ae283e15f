"""API tokens: an expiry, and the web session that minted one (revoked with it at sign-out)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:40:00

Adds to ``api_tokens``: ``expires_at`` (NULL for tokens made before this revision: they keep
working until revoked; ``neurorad token list`` shows them as "never") and ``session_id`` (the
``web_sessions`` row of a token minted through the web/API sign-in; NULL for the CLI's).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("session_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_api_tokens_session_id"), ["session_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_session_id"))
        batch_op.drop_column("session_id")
        batch_op.drop_column("expires_at")
