"""One workflow run per (study, workflow): several workflows per study

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 10:20:00

Adds ``workflow_runs`` (state, latest job, result version and latest decision of one workflow on
one study) and a ``run_id`` on jobs, results, qa_decisions and study_transitions; QA decisions
also get the review form's ``form_values`` and the amendment link (``amends_id``,
``amendment_reason``). Existing rows are kept: every study that had a workflow gets one run
carrying its state, latest workflow job and result version, and its jobs, results and decisions
are linked to that run.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: study states a run can be in (received/selected belong to the study before any run exists)
_RUN_STATES = ("queued", "running", "needs_review", "accepted", "rejected", "reported", "delivered", "failed")


def upgrade() -> None:
    op.create_table(
        "workflow_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("workflow", sa.String(length=64), nullable=False),
        sa.Column("workflow_version", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("series", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("result_id", sa.Integer(), nullable=True),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id", "workflow", name="uq_run_study_workflow"),
    )
    with op.batch_alter_table("workflow_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workflow_runs_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_workflow_runs_state"), ["state"], unique=False)
    for table in ("jobs", "results", "qa_decisions", "study_transitions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("run_id", sa.Integer(), nullable=True))
            batch_op.create_index(batch_op.f(f"ix_{table}_run_id"), ["run_id"], unique=False)
    with op.batch_alter_table("qa_decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("form_values", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("amends_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("amendment_reason", sa.Text(), nullable=True))
    _backfill()


def _backfill() -> None:
    """One run per study that had a workflow, carrying the study's state; link its rows."""
    conn = op.get_bind()
    studies = conn.execute(sa.text(
        "SELECT id, workflow, state, state_reason, updated_at FROM studies WHERE workflow IS NOT NULL")).all()
    for sid, wf, state, reason, updated in studies:
        job = conn.execute(sa.text("SELECT id FROM jobs WHERE study_id = :s AND kind = 'workflow' "
                                   "ORDER BY id DESC LIMIT 1"), {"s": sid}).scalar()
        if job is None:
            continue  # selected or failed before any job: nothing ran, no run to carry
        run_state = state if state in _RUN_STATES else "failed"
        if run_state != state:
            reason = f"study was {state} at migration 0004" + (f" ({reason})" if reason else "")
        succeeded = conn.execute(sa.text("SELECT id FROM jobs WHERE study_id = :s AND kind = 'workflow' AND "
                                         "state = 'succeeded' ORDER BY id DESC LIMIT 1"), {"s": sid}).scalar()
        result = None
        if succeeded is not None:
            result = conn.execute(sa.text("SELECT min(id) FROM results WHERE study_id = :s AND job_id = :j AND "
                                          "kind NOT LIKE 'review%'"), {"s": sid, "j": succeeded}).scalar()
        decision = conn.execute(sa.text("SELECT max(id) FROM qa_decisions WHERE study_id = :s"), {"s": sid}).scalar()
        conn.execute(sa.text(
            "INSERT INTO workflow_runs (study_id, workflow, state, state_reason, series, job_id, result_id, "
            "decision_id, created_at, updated_at, version) VALUES (:s, :w, :st, :r, :series, :j, :res, :d, :u, :u, 1)"),
            {"s": sid, "w": wf, "st": run_state, "r": reason, "series": "{}", "j": job, "res": result, "d": decision,
             "u": updated})
        run_id = conn.execute(sa.text("SELECT id FROM workflow_runs WHERE study_id = :s AND workflow = :w"),
                              {"s": sid, "w": wf}).scalar()
        for table in ("jobs", "results", "qa_decisions"):
            conn.execute(sa.text(f"UPDATE {table} SET run_id = :r WHERE study_id = :s"), {"r": run_id, "s": sid})


def downgrade() -> None:
    with op.batch_alter_table("qa_decisions", schema=None) as batch_op:
        batch_op.drop_column("amendment_reason")
        batch_op.drop_column("amends_id")
        batch_op.drop_column("form_values")
    for table in ("study_transitions", "qa_decisions", "results", "jobs"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_run_id"))
            batch_op.drop_column("run_id")
    op.drop_table("workflow_runs")
