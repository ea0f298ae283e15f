"""Crash safety: kill -9 the server mid-ingest and workers mid-job, repeatedly; every study
finishes exactly once, no instance is lost, the PACS holds no duplicate result."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pydicom
import pytest
from sqlalchemy import create_engine, text

from tests.integration.conftest import PACS_PASSWORD, PACS_USER, NeuroradServer, wait_for
from tests.server.dicomdata import write_series

N_STUDIES, N_SLICES = 3, 8


def _send(srv, files) -> subprocess.Popen:
    return subprocess.Popen(["storescu", "-aec", "NEURORAD", "-aet", "SCANNER01", "127.0.0.1",
                             str(srv.dicom_port), *map(str, files)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.parametrize(("backend", "server_kills", "worker_kills"), [("sqlite", 2, 3), ("postgresql", 1, 2)])
def test_kill_server_and_workers_repeatedly(orthanc, workdir, backend, server_kills, worker_kills):
    db_url = None
    cluster = None
    if backend == "postgresql":
        from tests.store.pgcluster import PostgresCluster

        cluster = PostgresCluster().start()
        db_url = cluster.create_database()
    studies = []
    for i in range(N_STUDIES):
        files = write_series(workdir / f"s{i}", "FLAIR", n_slices=N_SLICES, size=64,
                             identity={"PatientID": f"MRN-CRASH-{i:04d}", "PatientName": f"Crash^Patient{i}"})
        studies.append((pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID, files))
    all_files = [f for _, fs in studies for f in fs]
    config = {"quiet_period_s": 2.0, "scheduler_interval_s": 0.5, "workflows": ["summary"], "lease_s": 3.0,
              "backoff_base_s": 0.5, "max_attempts": 10, "review_required": False,
              "destinations": [{"name": "orthanc", "dicomweb_url": orthanc.dicomweb, "username": PACS_USER,
                                "password": PACS_PASSWORD}]}
    # each workflow job lasts ~3 s so that a worker can be killed in the middle of one
    srv = NeuroradServer(workdir / "data", config, db_url, env={"NEURORAD_SUMMARY_DELAY_S": "3"})
    try:
        t0 = time.time()
        srv.start(workers=0)
        print(f"[{time.time() - t0:.1f}s] server up")
        # 1. kill -9 the server while storescu is sending, repeatedly, then send everything again
        for _ in range(server_kills):
            sender = _send(srv, all_files)
            wait_for(lambda: sum(s["n_instances"] for s in srv.api("/api/studies")) > 0, 30, "first instances",
                     interval_s=0.05)
            srv.kill()
            sender.wait(60)
            srv.start(workers=0)
        sender = _send(srv, all_files)
        assert sender.wait(120) == 0
        print(f"[{time.time() - t0:.1f}s] ingest done after {server_kills} server kill(s)")
        # 2. two workers; kill -9 one in the middle of a job, repeatedly
        srv.start_worker()
        srv.start_worker()
        kills = 0
        deadline = time.time() + 240
        while kills < worker_kills and time.time() < deadline:
            running = srv.api("/api/jobs?state=running")
            if running and any(j["kind"] == "workflow" and j["progress"] > 0 for j in running):
                victim = next(w for w in srv.workers if w.poll() is None)
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait(10)
                kills += 1
                srv.start_worker()
            time.sleep(0.3)
        assert kills == worker_kills, "never caught a worker mid-job"
        print(f"[{time.time() - t0:.1f}s] {kills} workers killed mid-job")
        wait_for(lambda: all(s["state"] == "delivered" for s in srv.api("/api/studies"))
                 and len(srv.api("/api/studies")) == N_STUDIES, 300, "all studies delivered", interval_s=1)
        print(f"[{time.time() - t0:.1f}s] all delivered")
        got = srv.api("/api/studies")
        assert sorted(s["n_instances"] for s in got) == [N_SLICES] * N_STUDIES  # no instance lost or doubled
        n_objects = set()
        for s in got:
            d = srv.api(f"/api/studies/{s['id']}")
            states = Counter(t["to_state"] for t in d["transitions"])
            # the workflow's steps are recorded on its run, the study's aggregate on the study
            run_states = Counter(t["to_state"] for r in d["runs"] for t in r["transitions"])
            assert len(d["runs"]) == 1, d["runs"]
            assert states["delivered"] == 1 and run_states["needs_review"] == 1 and run_states["delivered"] == 1, (
                d["transitions"], d["runs"])  # exactly once
            # one workflow job succeeded; any other was cancelled because more instances arrived after
            # a quiet period (the study re-opened while the server was down), never run twice
            wf = [j for j in d["jobs"] if j["kind"] == "workflow"]
            assert [j["state"] for j in wf].count("succeeded") == 1, wf
            assert all(j["state"] == "cancelled" and j["error"] == "new instances arrived" for j in wf
                       if j["state"] != "succeeded"), wf
            objects = [r for r in d["results"] if r["sop_uid"]]  # the DICOM objects (report, SC, SR)
            assert len(objects) >= 2 and len({r["sop_uid"] for r in objects}) == len(objects), objects
            n_objects.add(len(objects))
        assert len(n_objects) == 1, n_objects  # every study made the same set of objects
        n = n_objects.pop()
        # the PACS: every original study holds exactly its result objects, once
        for uid, _ in studies:
            inst = orthanc.qido(f"/studies/{uid}/instances")
            assert len(inst) == n, (uid, len(inst), n)
        srv.stop()
        # no instance lost on disk either: every stored path exists (SQLite/PostgreSQL alike)
        url = db_url or f"sqlite:///{srv.data_dir / 'neurorad.db'}"
        eng = create_engine(url)
        with eng.connect() as conn:
            paths = [r[0] for r in conn.execute(text("SELECT path FROM instances"))]
        eng.dispose()
        assert len(paths) == N_STUDIES * N_SLICES and all((srv.data_dir / p).is_file() for p in paths)
    finally:
        srv.stop()
        if cluster is not None:
            cluster.stop()
