"""QA decision details on the decision row; results linked to the decision they review

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 12:10:00

Adds to ``qa_decisions``: software_version, candidates (per-candidate keep/discard verdicts),
missed_lesions (world mm markers), timepoints_accepted, report_version; and to ``results``:
qa_decision_id (the decision whose reviewed version an object is; delivery sends the latest
decision's objects, never the drafts they supersede). All nullable: rows of databases created
by 0001 keep working (their details stay in the qa.decision audit events).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("qa_decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("software_version", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("candidates", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("missed_lesions", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("timepoints_accepted", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("report_version", sa.Integer(), nullable=True))
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qa_decision_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_results_qa_decision_id"), ["qa_decision_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_results_qa_decision_id"))
        batch_op.drop_column("qa_decision_id")
    with op.batch_alter_table("qa_decisions", schema=None) as batch_op:
        batch_op.drop_column("report_version")
        batch_op.drop_column("timepoints_accepted")
        batch_op.drop_column("missed_lesions")
        batch_op.drop_column("candidates")
        batch_op.drop_column("software_version")
