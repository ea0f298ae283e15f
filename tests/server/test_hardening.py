"""Regression tests of issue 16 (hardening): roles on every decision path, bounded input,
no open redirect, security headers, no tracebacks shown to users.

Each test fails on the code before the fix (named in its docstring)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from neurorad.server.auth import safe_redirect_target
from neurorad.store.models import Job, Patient, Study, utcnow
from tests.server.conftest import login


def _bearer(app, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.state.test_tokens[role]}"}


def _study(app, state: str = "needs_review") -> int:
    now = utcnow()
    with app.state.db.session() as s:
        p = Patient(pseudo_id=f"P{now.timestamp()}")
        s.add(p)
        s.flush()
        st = Study(patient_id=p.id, study_uid=f"2.25.{int(now.timestamp() * 1e6)}", state=state, received_at=now,
                   last_instance_at=now, workflow="summary")
        s.add(st)
        s.flush()
        return st.id


def _decision_paths(app) -> list[str]:
    """Every POST route that records a QA decision (REST and web), found from the app itself so
    that merging or renaming the decision endpoints keeps them under test."""
    def flat(routes):
        for r in routes:
            inner = getattr(r, "original_router", None)  # FastAPI >= 0.16x wraps included routers
            yield from (flat(inner.routes) if inner is not None else [r])

    out = []
    for r in flat(app.routes):
        path = getattr(r, "path", "")
        if "POST" in (getattr(r, "methods", None) or set()) and "{study_id}" in path \
                and path.rsplit("/", 1)[-1] in ("review", "decision"):
            out.append(path)
    return out


_DECISION_BODY = {"decision": "ACCEPTABLE", "score": 4, "result_version": 1}


def test_only_radiologists_decide_on_every_decision_path_and_before_lookup(client, app):
    """Item 2: an admin got 200 from POST /api/studies/{id}/review (study accepted and delivered);
    a role that may not decide gets 403 whatever id it names (existing, missing, out of range)."""
    sid = _study(app)
    paths = _decision_paths(app)
    assert any(p.startswith("/api/") for p in paths) and len(paths) >= 1
    for role in ("admin", "technologist"):
        for path in paths:
            for target in (sid, sid + 1000, 99999999999999999999):
                r = client.post(path.replace("{study_id}", str(target)), json=_DECISION_BODY,
                                headers=_bearer(app, role))
                assert r.status_code == 403, (role, path, target, r.status_code, r.text)
    with app.state.db.session() as s:
        assert s.get(Study, sid).state == "needs_review"


def test_radiologist_still_decides_through_rest(client, app):
    """The radiologist passes the role gate and reaches the decision code, which names the result
    version it needs (a study without a workflow result has none: 409, not 403)."""
    sid = _study(app)
    r = client.post(f"/api/studies/{sid}/review", json={"result_version": 1, "decision": "UNACCEPTABLE",
                                                         "score": 2}, headers=_bearer(app, "radiologist"))
    assert r.status_code == 409, r.text
    assert "result version 1 is not a current result" in r.json()["detail"]


def test_login_next_never_leaves_the_site(client):
    """Item 4: /login?next=/%5Cevil.example sent a signed-in browser to another host."""
    login(client, "radiologist")
    for query in ("/%5Cevil.example", "/%09/evil.example", "//evil.example", "/%0A/evil.example",
                  "https://evil.example", "/%5C%5Cevil.example"):
        r = client.get(f"/login?next={query}", follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == "/worklist", query
    assert client.get("/login?next=/studies/7", follow_redirects=False).headers["location"] == "/studies/7"


def test_safe_redirect_target_unit():
    for bad in ("/\\evil.example", "/\t/evil.example", "//evil.example", "/\n/evil", "http://x", "", None,
                "javascript:alert(1)", "/ok\\..\\x"):
        assert safe_redirect_target(bad) == "/worklist", bad
    for good in ("/worklist", "/studies/3", "/worklist?status=all&alarms=true"):
        assert safe_redirect_target(good) == good


_OUT_OF_RANGE = ["/api/studies/99999999999999999999", "/api/series/99999999999999999999",
                 "/api/jobs/99999999999999999999", "/api/results/99999999999999999999",
                 "/api/results/99999999999999999999/file", "/api/studies?offset=1e20",
                 "/api/studies?offset=100000000000000000000", "/api/studies?limit=-1",
                 "/api/jobs?limit=0", "/api/quarantine?limit=-1", "/api/studies/0",
                 "/web/api/studies/99999999999999999999/review"]


def test_out_of_range_ids_and_limits_are_422_not_500(client, app):
    """Item 8: huge ids overflowed the driver (500 + traceback); limit=-1 returned whole tables."""
    for url in _OUT_OF_RANGE:
        r = client.get(url, headers=_bearer(app, "technologist"))
        assert r.status_code == 422, (url, r.status_code, r.text)


def test_lone_surrogate_in_username_is_422_not_500(client):
    """Item 8: a lone surrogate in a username reached SQLite's encoder (500 with a traceback)."""
    r = client.post("/api/auth/login", content=b'{"username": "ad\\ud800min", "password": "whatever-123"}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code in (401, 422), r.text


def test_job_errors_show_no_traceback(app):
    """Item 8: a failed job's error (shown to every role) carried a Python traceback with paths."""
    plane = app.state.plane
    sid = _study(app, "queued")
    plane.queue.enqueue("workflow", {"workflow": "summary", "series": {}}, study_id=sid, max_attempts=1)
    lease = plane.queue.claim("test-worker")

    def boom(_lease):
        raise RuntimeError(f"cannot read {plane.settings.data_dir}/results/secret/file.nii.gz")

    plane._run_workflow_job = boom
    plane.run_job(lease)
    with app.state.db.session() as s:
        err = s.scalar(select(Job.error).where(Job.id == lease.job_id))
    assert err.startswith("RuntimeError: cannot read")
    assert "Traceback" not in err and 'File "' not in err and str(plane.settings.data_dir) not in err


def test_security_headers_on_api_files_and_sign_in(client, app):
    """Item 9: JSON answers, result files and the sign-in (which carries the CSRF token) had no
    Cache-Control: no-store / nosniff."""
    r = client.post("/api/auth/login", json={"username": "radiologist", "password": "rad-pass-1234"})
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    for resp in (r, client.get("/api/studies"), client.get("/api/health"), client.get("/api/jobs/12345"),
                 client.get("/worklist")):
        assert resp.headers["x-content-type-options"] == "nosniff", resp.url
    assert client.get("/api/studies").headers["cache-control"] == "no-store"


def test_api_docs_need_sign_in_and_load_nothing_from_outside(client, app):
    """Item 9: /api/docs needed no sign-in and loaded Swagger UI from a CDN."""
    assert client.get("/api/docs").status_code == 401
    assert client.get("/api/openapi.json").status_code == 401
    h = _bearer(app, "technologist")
    r = client.get("/api/docs", headers=h)
    assert r.status_code == 200
    assert "/api/studies/{study_id}" in r.text
    assert "http://" not in r.text and "https://" not in r.text and "<script" not in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert client.get("/api/openapi.json", headers=h).json()["info"]["title"] == "neurorad"


def test_request_bodies_are_bounded(client, app):
    """Item 5: 20 failed sign-ins with 10 MB usernames grew the server by 230 MB, unauthenticated."""
    big = json.dumps({"username": "x" * (10 << 20), "password": "whatever-123"})
    r = client.post("/api/auth/login", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.post("/api/auth/login", json={"username": "x" * 5000, "password": "whatever-123"})
    assert r.status_code == 422  # under the body limit, over the username limit: never reaches the throttle
    assert not app.state.login_throttle._user


def test_reads_and_health_do_not_wait_for_a_writer(client, app):
    """Item 1: every transaction took BEGIN IMMEDIATE, so while one writer held SQLite's lock
    every page, /api/health and the receiver queued behind it (30 s busy timeout, then 500).
    Now GET requests read a WAL snapshot and answer at once while a write transaction is open."""
    import threading
    import time

    from neurorad.store.models import AuditEvent

    sid = _study(app)
    holding, release = threading.Event(), threading.Event()

    def writer():
        with app.state.db.session() as s:
            s.add(AuditEvent(actor="test", action="hold", at=utcnow(), software_version="t"))
            s.flush()  # the write lock is taken
            holding.set()
            release.wait(20)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(10)
        h = _bearer(app, "radiologist")
        t0 = time.monotonic()
        assert client.get("/api/health").json()["database"] is True
        assert app.state.db.ping() is True  # what the health monitor runs, during the write
        assert client.get("/api/studies", headers=h).status_code == 200
        assert client.get(f"/api/studies/{sid}", headers=h).status_code == 200
        assert time.monotonic() - t0 < 5.0
    finally:
        release.set()
        t.join(30)


def test_many_concurrent_readers_get_connections(app):
    """Item 1: the pool (5 + 10 connections) was smaller than the request thread pool (40):
    requests waited 30 s for a connection. 60 threads now read at once."""
    import threading

    from sqlalchemy import func

    barrier = threading.Barrier(60, timeout=30)
    errors: list[BaseException] = []

    def reader():
        try:
            with app.state.db.read_session() as s:
                s.scalar(select(func.count(Study.id)))
                barrier.wait()  # all 60 hold a connection at the same time
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(60)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []


def test_read_sessions_refuse_to_write(app):
    from neurorad.store.db import ReadOnlySessionError

    with pytest.raises(ReadOnlySessionError), app.state.db.read_session() as s:
        s.add(Patient(pseudo_id="X"))
        s.flush()


def test_parallel_wrong_passwords_are_throttled(client, app):
    """Item 3: the limit was checked before and counted after the (slow) password check, so 40
    concurrent wrong passwords for one user all got 401 and none 429."""
    from concurrent.futures import ThreadPoolExecutor

    limit = app.state.login_throttle.max_user

    def attempt(_):
        return client.post("/api/auth/login", json={"username": "radiologist", "password": "wrong-password"}
                           ).status_code

    with ThreadPoolExecutor(40) as ex:
        codes = list(ex.map(attempt, range(40)))
    assert codes.count(401) <= limit, codes
    assert codes.count(429) >= 40 - limit
    # the right password is refused too while the username is over its limit
    r = client.post("/api/auth/login", json={"username": "radiologist", "password": "rad-pass-1234"})
    assert r.status_code == 429


def test_throttle_memory_does_not_grow_with_username_size():
    """Item 5: failed usernames were kept verbatim for the window (10 MB each)."""
    from neurorad.server.auth import LoginThrottle

    th = LoginThrottle(5, 20, 300.0)
    th.max_keys = 50
    for i in range(200):
        th.failure(f"10.0.0.{i % 250}", f"user{i}-" + "x" * 100_000)
    assert len(th._user) <= 50 and len(th._ip) <= 50
    assert all(len(k) == 32 for k in th._user)
    # the limit still holds per username (keys are a hash of the case-folded name)
    for _ in range(5):
        th.failure("10.1.1.1", "Alice")
    assert th.retry_after_s("10.9.9.9", " alice ") is not None


def test_retry_only_from_failed_rejected_or_delivered(client, app):
    """Item 6: a technologist's retry moved a study from needs_review back to queued (not in the
    documented state machine), and a retry while a job ran started a second, racing job."""
    h = _bearer(app, "technologist")
    for state in ("needs_review", "running", "queued"):
        sid = _study(app, state)
        r = client.post(f"/api/studies/{sid}/retry", json={"reason": "again"}, headers=h)
        assert r.status_code == 409, (state, r.text)
        with app.state.db.session() as s:
            assert s.get(Study, sid).state == state
            assert s.scalar(select(Job.id).where(Job.study_id == sid)) is None
    sid = _study(app, "rejected")
    r = client.post(f"/api/studies/{sid}/retry", json={"reason": "again"}, headers=h)
    assert r.status_code == 200 and r.json()["state"] == "queued"


def test_a_superseded_job_ending_late_does_not_fail_the_study(app):
    """Item 6: the older job of a retried study failed late ("study is needs_review, not queued")
    and flipped the study to failed although the newer job's good result waited for review."""
    plane = app.state.plane
    sid = _study(app, "running")
    plane.queue.enqueue("workflow", {"workflow": "summary", "series": {}}, study_id=sid, max_attempts=1,
                        idempotency_key="old")
    old = plane.queue.claim("worker-old")
    plane.queue.enqueue("workflow", {"workflow": "summary", "series": {}}, study_id=sid, max_attempts=1,
                        idempotency_key="new")
    with app.state.db.session() as s:  # the newer run finished first: its result waits for review
        st = s.get(Study, sid)
        st.state = "needs_review"
    assert plane.run_job(old) == "failed"
    with app.state.db.session() as s:
        assert s.get(Study, sid).state == "needs_review"


def test_tokens_expire_are_listed_revoked_and_die_with_their_session(client, app):
    """Item 7: API tokens never expired, could not be listed or revoked, and a token minted in a
    web session kept working after that session signed out."""
    from datetime import timedelta

    from neurorad.store.models import ApiToken

    csrf = login(client, "technologist")
    r = client.post("/api/tokens", json={"name": "script"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    minted = {"Authorization": f"Bearer {r.json()['token']}"}
    assert r.json()["expires_at"] is not None
    assert client.get("/api/auth/me", headers=minted).status_code == 200
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    client.cookies.clear()
    assert client.get("/api/auth/me", headers=minted).status_code == 401  # ended with its session

    # listing (own only) and revoking (own; others' are 404)
    tech = _bearer(app, "technologist")
    rows = client.get("/api/tokens", headers=tech).json()
    assert rows and {r["user"] for r in rows} == {"technologist"} and all("token" not in r for r in rows)
    assert {r["state"] for r in rows} >= {"revoked", "active"}
    admin_rows = client.get("/api/tokens", headers=_bearer(app, "admin")).json()
    assert {r["user"] for r in admin_rows} >= {"admin", "radiologist", "technologist"}
    rad_id = next(r["id"] for r in admin_rows if r["user"] == "radiologist")
    assert client.delete(f"/api/tokens/{rad_id}", headers=tech).status_code == 404
    own_id = next(r["id"] for r in rows if r["state"] == "active")
    assert client.delete(f"/api/tokens/{own_id}", headers=tech).status_code == 200
    assert client.get("/api/auth/me", headers=tech).status_code == 401

    # expiry
    rad = _bearer(app, "radiologist")
    assert client.get("/api/auth/me", headers=rad).status_code == 200
    with app.state.db.session() as s:
        s.get(ApiToken, rad_id).expires_at = utcnow() - timedelta(seconds=1)
    assert client.get("/api/auth/me", headers=rad).status_code == 401


def test_cli_token_list_and_revoke(tmp_path):
    """Item 7: `neurorad token list|revoke`."""
    from typer.testing import CliRunner

    from neurorad.cli import app as cli

    runner = CliRunner()
    d = ["--data-dir", str(tmp_path)]
    assert runner.invoke(cli, ["db", "upgrade", *d]).exit_code == 0
    assert runner.invoke(cli, ["user", "add", "bot", "--role", "technologist", "--password", "bot-password1", *d]
                         ).exit_code == 0
    token = runner.invoke(cli, ["token", "create", "bot", "--name", "pacs-sync", "--days", "7", *d]
                          ).output.strip().splitlines()[-1]
    r = runner.invoke(cli, ["token", "list", *d])
    assert r.exit_code == 0 and "pacs-sync" in r.output and "active" in r.output and token not in r.output
    tid = int(r.output.splitlines()[1].split()[0])
    r = runner.invoke(cli, ["token", "revoke", str(tid), *d])
    assert r.exit_code == 0, r.output
    assert "revoked" in runner.invoke(cli, ["token", "list", "--user", "bot", *d]).output
    assert runner.invoke(cli, ["token", "revoke", "999", *d]).exit_code != 0
    assert runner.invoke(cli, ["token", "create", "bot", "--days", "1000", *d]).exit_code != 0


def test_receiver_accepts_only_named_senders_by_default(tmp_path, caplog):
    """Item 10: the receiver accepted any calling AE title unless an allow-list was configured."""
    import logging

    from neurorad.server.orchestration import DataPlane
    from neurorad.server.services import ReceiverNotAllowed, Services, make_receiver, receiver_allow_list
    from neurorad.server.settings import Settings

    settings = Settings(data_dir=tmp_path / "d", dicom_port=0, run_receiver=True)
    plane = DataPlane(settings)
    plane.db.migrate()
    with caplog.at_level(logging.WARNING, logger="neurorad.server"):
        services = Services(settings, plane).start()
    try:
        assert services.receiver is None
        assert "no calling AE title is allowed" in caplog.text
    finally:
        services.stop()
    with pytest.raises(ReceiverNotAllowed):
        make_receiver(settings, plane)
    assert receiver_allow_list(Settings(data_dir=tmp_path / "d", allowed_calling_aets=["*"])) is None
    assert receiver_allow_list(Settings(data_dir=tmp_path / "d", allowed_calling_aets=[" CT1 ", ""])) == ["CT1"]


def test_server_trouble_answers_out_of_resources_never_a_permanent_failure(settings, tmp_path):
    """Item 1 / DICOM: a valid C-STORE during a database storm was answered 0xC000 (the sender
    does not retry). Server-side trouble (database, disk, vault key) now answers 0xA700."""
    from sqlalchemy.exc import OperationalError

    from neurorad.dicom.transport import send_cstore
    from neurorad.server.app import create_app
    from neurorad.server.services import make_receiver
    from tests.server.dicomdata import write_series

    app = create_app(settings)
    plane = app.state.plane
    files = write_series(tmp_path / "s", "FLAIR", n_slices=1, size=32)

    def locked(*_a, **_k):
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    plane._record = locked
    receiver = make_receiver(settings, plane).start()
    try:
        out = send_cstore(files, "127.0.0.1", receiver.port, settings.ae_title, calling_aet="MOD1")
    finally:
        receiver.stop()
    assert out[0].status == 0xA700, hex(out[0].status or 0)
    with plane.db.session() as s:
        from neurorad.store.models import QuarantineItem

        assert s.scalar(select(QuarantineItem.id)) is None  # a valid instance is not quarantined


def test_job_process_dies_when_its_worker_is_killed(tmp_path):
    """Item 11: after kill -9 of the server, the job process (a child of the forkserver, so the
    "dies with its worker" PDEATHSIG guard did not fire) kept running."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    pid_file = tmp_path / "job.pid"
    helper = Path(__file__).with_name("job_lifetime_helper.py")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    worker = subprocess.Popen([sys.executable, str(helper), str(pid_file)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        job_pid = int(pid_file.read_text())
        os.kill(job_pid, 0)  # the job runs
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        deadline = time.monotonic() + 10
        alive = True
        while alive and time.monotonic() < deadline:
            try:
                os.kill(job_pid, 0)
                time.sleep(0.1)
            except ProcessLookupError:
                alive = False
        if alive:
            os.kill(job_pid, signal.SIGKILL)
        assert not alive, "the job process outlived its killed worker"
    finally:
        if worker.poll() is None:
            worker.kill()


def test_database_and_key_are_private_and_apart_and_cookies_secure_over_tls(tmp_path, monkeypatch):
    """Item 12: neurorad.db was created 0644 (password hashes, CSRF tokens), the vault key sat
    inside the data folder (a backup of the folder carried vault and key), and session cookies
    were not Secure behind TLS unless configured."""
    import os
    import stat

    from fastapi.testclient import TestClient

    from neurorad.server.app import create_app
    from neurorad.server.auth import create_user
    from neurorad.server.settings import Settings

    monkeypatch.setenv("NEURORAD_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("NEURORAD_VAULT_KEY", raising=False)
    old_umask = os.umask(0o022)
    try:
        settings = Settings(data_dir=tmp_path / "data")
        app = create_app(settings)
    finally:
        os.umask(old_umask)
    db_file = settings.data_dir / "neurorad.db"
    assert stat.S_IMODE(db_file.stat().st_mode) == 0o600
    app.state.plane.vault  # noqa: B018 - creates the key on first use
    keys = list((tmp_path / "keys").glob("vault-*.key"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert not list(settings.data_dir.rglob("*.key"))
    with app.state.db.session() as s:
        create_user(s, "rad", "rad-password-1", "radiologist")
    with TestClient(app, base_url="https://neurorad.example") as c:  # TLS (directly or X-Forwarded-Proto)
        r = c.post("/api/auth/login", json={"username": "rad", "password": "rad-password-1"})
        assert r.status_code == 200
        cookies = r.headers.get_list("set-cookie")
        assert cookies and all("secure" in h.lower() for h in cookies), cookies
    with TestClient(app, base_url="http://127.0.0.1") as c:  # plain HTTP on loopback: no Secure (it would not be sent)
        r = c.post("/api/auth/login", json={"username": "rad", "password": "rad-password-1"})
        assert all("secure" not in h.lower() for h in r.headers.get_list("set-cookie"))
