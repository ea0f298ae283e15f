"""Store: migrations, state machine, job queue semantics, retention (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select

from neurorad import __version__
from neurorad.store import JobQueue, LeaseLost, Storage, StudyState, TransitionError, transition
from neurorad.store.models import (
    AuditEvent,
    Base,
    Instance,
    Job,
    Patient,
    Result,
    Series,
    Study,
    StudyTransition,
    utcnow,
)
from neurorad.store.retention import purge_images


def _study(s, uid="1.2.3") -> Study:
    p = Patient(pseudo_id=f"P-{uid}")
    s.add(p)
    s.flush()
    st = Study(patient_id=p.id, study_uid=uid, state="received")
    s.add(st)
    s.flush()
    return st


def test_migrations_match_models(db):
    """The shipped Alembic migration creates exactly the tables and columns the models declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == []
    assert set(Base.metadata.tables) <= tables
    db.migrate()  # idempotent


def test_sqlite_uses_wal(tmp_path):
    from neurorad.store import Database, sqlite_url

    d = Database(sqlite_url(tmp_path / "x.db"))
    with d.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    d.dispose()


def test_state_machine_records_every_transition(db):
    with db.session() as s:
        st = _study(s)
        path = ["selected", "queued", "running", "needs_review", "accepted", "reported", "delivered"]
        for target in path:
            transition(s, st, target, actor="tester", reason=f"to {target}")
        sid = st.id
    with db.session() as s:
        rows = s.scalars(select(StudyTransition).where(StudyTransition.study_id == sid)
                         .order_by(StudyTransition.id)).all()
        assert [r.to_state for r in rows] == path
        assert [r.from_state for r in rows] == ["received", *path[:-1]]
        assert all(r.actor == "tester" and r.software_version == __version__ and r.at is not None for r in rows)
        assert s.get(Study, sid).state == "delivered"


def test_state_machine_refuses_illegal_moves_and_keeps_failure_reason(db):
    with db.session() as s:
        st = _study(s)
        with pytest.raises(TransitionError):
            transition(s, st, StudyState.DELIVERED, actor="x")
        transition(s, st, "failed", actor="system", reason="missing required series: FLAIR")
        assert st.state == "failed" and "FLAIR" in st.state_reason
        transition(s, st, "queued", actor="alice", reason="retry")
        assert st.state == "queued"


def test_queue_lease_fencing_and_expiry(db):
    q = JobQueue(db, lease_s=0.5, backoff_base_s=0.01)
    jid = q.enqueue("workflow", {"x": 1})
    lease = q.claim("w1")
    assert lease is not None and lease.job_id == jid and lease.attempt == 1
    assert q.claim("w2") is None  # leased
    time.sleep(0.7)  # w1 "dies": its lease expires
    lease2 = q.claim("w2")
    assert lease2 is not None and lease2.job_id == jid and lease2.attempt == 2
    with pytest.raises(LeaseLost):
        q.heartbeat(lease)
    assert q.complete(lease) is False  # fenced: the old holder cannot finish it
    q.heartbeat(lease2, progress=0.5, message="half")
    assert q.complete(lease2) is True
    assert q.complete(lease2) is False  # finishes exactly once
    with db.session() as s:
        job = s.get(Job, jid)
        assert job.state == "succeeded" and job.attempts == 2 and job.progress == 1.0


def test_queue_retries_with_backoff_then_fails(db):
    q = JobQueue(db, lease_s=30, backoff_base_s=0.2)
    jid = q.enqueue("workflow", max_attempts=2)
    lease = q.claim("w")
    t0 = utcnow()
    assert q.fail(lease, "boom") == "pending"
    with db.session() as s:
        job = s.get(Job, jid)
        assert job.run_after - t0 >= timedelta(seconds=0.15)
    assert q.claim("w") is None  # backing off
    time.sleep(0.3)
    lease = q.claim("w")
    assert lease.attempt == 2
    assert q.fail(lease, "boom again") == "failed"
    with db.session() as s:
        assert s.get(Job, jid).error == "boom again"


def test_queue_gives_up_on_a_job_that_kills_its_workers(db):
    q = JobQueue(db, lease_s=0.2)
    jid = q.enqueue("workflow", max_attempts=2)
    for _ in range(2):
        assert q.claim("w") is not None
        time.sleep(0.3)
    assert q.claim("w") is None
    with db.session() as s:
        job = s.get(Job, jid)
        assert job.state == "failed" and "lease expired" in job.error


def test_queue_cancel_and_idempotency_key(db):
    q = JobQueue(db, lease_s=30)
    a = q.enqueue("workflow", idempotency_key="study-1")
    assert q.enqueue("workflow", idempotency_key="study-1") == a
    b = q.enqueue("deliver")
    assert q.cancel(a) == "cancelled"
    lease = q.claim("w")
    assert lease.job_id == b
    assert q.cancel(b) == "running"
    with pytest.raises(LeaseLost):
        q.heartbeat(lease)
    assert q.fail(lease, "cancelled by user") == "cancelled"


def test_queue_claim_is_exclusive_under_concurrency(db):
    q = JobQueue(db, lease_s=60)
    ids = [q.enqueue("workflow", {"i": i}) for i in range(30)]
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name):
        while True:
            lease = q.claim(name)
            if lease is None:
                return
            with lock:
                claimed.append(lease.job_id)
            q.complete(lease)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)  # every job once, none twice


def test_retention_purges_images_keeps_results_and_audit(db, tmp_path):
    storage = Storage(tmp_path / "data")
    with db.session() as s:
        old = _study(s, "1.1")
        new = _study(s, "1.2")
        for st in (old, new):
            se = Series(study_id=st.id, series_uid=st.study_uid + ".1", modality="MR")
            s.add(se)
            s.flush()
            rel = storage.instance_relpath(st.study_uid, se.series_uid, st.study_uid + ".1.1")
            storage.write_instance(rel, b"x" * 100)
            s.add(Instance(series_id=se.id, sop_uid=st.study_uid + ".1.1", sop_class_uid="1.2", path=rel,
                           sha256="0" * 64, size_bytes=100))
            s.add(Result(study_id=st.id, kind="pdf", path="results/x.pdf", sha256="0" * 64, workflow="w",
                         software_version=__version__))
            transition(s, st, "failed", actor="t")
        old.received_at = utcnow() - timedelta(days=200)
        old_id, new_id = old.id, new.id
    rep = purge_images(db, storage, retention_days=183)
    assert (rep.studies, rep.instances, rep.bytes_freed) == (1, 1, 100)
    assert not (storage.root / "images" / "1.1").exists()
    assert (storage.root / "images" / "1.2").exists()
    with db.session() as s:
        assert s.get(Study, old_id).images_purged_at is not None
        assert s.get(Study, new_id).images_purged_at is None
        assert len(s.scalars(select(Result)).all()) == 2
        assert s.scalars(select(AuditEvent).where(AuditEvent.action == "retention.purge")).one().object_id == \
            str(old_id)
    assert purge_images(db, storage, retention_days=183).studies == 0


def test_migration_0002_upgrades_a_database_created_by_0001(db_url):
    """A site's database at revision 0001 (with a decision in it) upgrades in place: the new
    QA-decision columns and results.qa_decision_id appear, old rows stay, their details NULL."""
    from sqlalchemy import text

    from neurorad.store.db import make_engine, migrate

    engine = make_engine(db_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO patients (id, pseudo_id, created_at) VALUES (1, 'NR-X', '2026-01-01')"))
        conn.execute(text("INSERT INTO studies (id, patient_id, study_uid, state, received_at, last_instance_at, "
                          "updated_at, version) VALUES (1, 1, '1.2', 'accepted', '2026-01-01', '2026-01-01', "
                          "'2026-01-01', 1)"))
        conn.execute(text("INSERT INTO qa_decisions (id, study_id, decision, score, created_at) "
                          "VALUES (1, 1, 'ACCEPTABLE', 4, '2026-01-01')"))
        cols = {c["name"] for c in inspect(conn).get_columns("qa_decisions")}
    assert "candidates" not in cols
    migrate(engine)
    with engine.connect() as conn:
        cols = {c["name"] for c in inspect(conn).get_columns("qa_decisions")}
        rcols = {c["name"] for c in inspect(conn).get_columns("results")}
        row = conn.execute(text("SELECT decision, score, candidates, software_version FROM qa_decisions")).one()
    assert {"software_version", "candidates", "missed_lesions", "timepoints_accepted", "report_version"} <= cols
    assert "qa_decision_id" in rcols
    assert tuple(row) == ("ACCEPTABLE", 4, None, None)
    engine.dispose()


def test_rejected_study_with_a_report_is_reported_then_delivered(db):
    with db.session() as s:
        st = _study(s)
        path = ["selected", "queued", "running", "needs_review", "rejected", "reported", "delivered", "queued"]
        for target in path:
            transition(s, st, target, actor="tester")
        with pytest.raises(TransitionError):
            transition(s, st, "accepted", actor="tester")


def test_migration_0004_keeps_every_row_and_gives_each_workflow_study_a_run(db_url):
    """A site's database at 0003, the previous head (a study under review, its job, results, a decision) upgrades
    in place: no row is lost, the study gets one run carrying its state, latest job, result version
    and decision, and its rows are linked to the run; a study without a workflow gets none."""
    from sqlalchemy import text

    from neurorad.store.db import make_engine, migrate

    engine = make_engine(db_url)
    migrate(engine, "0003")
    t = "'2026-01-01'"
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO patients (id, pseudo_id, created_at) VALUES (1, 'NR-X', {t})"))
        for sid, wf, state in ((1, "'ms-lesions'", "'needs_review'"), (2, "NULL", "'received'")):
            conn.execute(text(f"INSERT INTO studies (id, patient_id, study_uid, state, workflow, received_at, "
                              f"last_instance_at, updated_at, version) VALUES ({sid}, 1, '1.2.{sid}', {state}, {wf}, "
                              f"{t}, {t}, {t}, 1)"))
        for jid, st in ((1, "'failed'"), (2, "'succeeded'")):
            conn.execute(text(f"INSERT INTO jobs (id, kind, study_id, payload, state, attempts, max_attempts, "
                              f"timeout_s, run_after, progress, cancel_requested, created_at) VALUES ({jid}, "
                              f"'workflow', 1, '{{}}', {st}, 1, 3, 60, {t}, 1, FALSE, {t})"))
        for rid, job in ((1, 1), (2, 2), (3, 2)):
            conn.execute(text(f"INSERT INTO results (id, study_id, job_id, kind, path, sha256, workflow, "
                              f"software_version, created_at) VALUES ({rid}, 1, {job}, 'json', 'r{rid}', 'x', "
                              f"'ms-lesions', '0', {t})"))
        conn.execute(text(f"INSERT INTO qa_decisions (id, study_id, result_id, decision, score, created_at) "
                          f"VALUES (1, 1, 2, 'ACCEPTABLE', 4, {t})"))
        before = {tb: conn.execute(text(f"SELECT count(*) FROM {tb}")).scalar()
                  for tb in ("patients", "studies", "jobs", "results", "qa_decisions")}
    migrate(engine)
    with engine.connect() as conn:
        after = {tb: conn.execute(text(f"SELECT count(*) FROM {tb}")).scalar() for tb in before}
        runs = conn.execute(text("SELECT study_id, workflow, state, job_id, result_id, decision_id "
                                 "FROM workflow_runs")).all()
        linked = {tb: conn.execute(text(f"SELECT count(*) FROM {tb} WHERE run_id = 1")).scalar()
                  for tb in ("jobs", "results", "qa_decisions")}
        cols = {c["name"] for c in inspect(conn).get_columns("qa_decisions")}
    assert after == before
    assert [tuple(r) for r in runs] == [(1, "ms-lesions", "needs_review", 2, 2, 1)]
    assert linked == {"jobs": 2, "results": 3, "qa_decisions": 1}
    assert {"run_id", "form_values", "amends_id", "amendment_reason"} <= cols
    engine.dispose()
