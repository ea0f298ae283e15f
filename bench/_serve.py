"""Shared set-up of the load benches (bench/server_load.py, bench/load_locust.py): a throwaway
``neurorad serve`` as a real process on 127.0.0.1, with seeded studies and web sessions.

:func:`served` makes a data folder (SQLite, or ``backend="postgresql"``: a throwaway PostgreSQL
15 cluster, ``tests/store/pgcluster.py``) with a vault key and a config that accepts the
``LOADMOD`` calling AE title. It seeds ``n_studies`` studies in mixed states and ``n_sessions``
web sessions of one radiologist. The sessions are made in the database, so the load falls on
the pages, not on Argon2 sign-ins. It then starts ``neurorad serve`` (uvicorn, receiver,
scheduler, one local worker, the ``summary`` workflow, a 3 s quiet period) and waits until
``/api/health`` answers. On leaving the ``with`` block, it stops the server with its job
processes and the cluster, and deletes the folder.

The server gets a process group of its own, not a session of its own. It therefore stays in
the caller's scheduler autogroup, so a CPU priority given to the bench (``echo -20 >
/proc/self/autogroup``) applies to the server measured too. :func:`autogroup` reports which
autogroup and priority a process had.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: calling AE title of the benches' storescu
SENDER_AET = "LOADMOD"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(settings, n_studies: int, n_sessions: int) -> tuple[list[str], list[int]]:
    """Studies in varied states and ``n_sessions`` web sessions of one radiologist; returns
    (session cookies, study ids). Seeded study UIDs start with ``2.25.9``."""
    from neurorad.server.auth import create_session, create_user
    from neurorad.server.orchestration import DataPlane, transition_first
    from neurorad.store.models import Patient, Study, StudyTransition, utcnow

    plane = DataPlane(settings)
    plane.db.migrate()
    states = ["needs_review", "delivered", "failed", "received", "rejected"]
    ids = []
    with plane.db.session() as s:
        user = create_user(s, "loadrad", "load-test-password", "radiologist")
        for i in range(n_studies):
            p = Patient(pseudo_id=f"LOADP{i:05d}")
            s.add(p)
            s.flush()
            now = utcnow()
            st = Study(patient_id=p.id, study_uid=f"2.25.{9000000 + i}", state="received", source_aet="SEED",
                       received_at=now, last_instance_at=now, workflow="summary")
            s.add(st)
            s.flush()
            transition_first(s, st)
            st.state = states[i % len(states)]
            s.add(StudyTransition(study_id=st.id, from_state="received", to_state=st.state, at=now,
                                  actor="bench", reason="seeded", software_version="bench"))
            ids.append(st.id)
        cookies = [create_session(s, user, 2.0)[0] for _ in range(n_sessions)]
    plane.db.dispose()
    return cookies, ids


def autogroup(pid: int) -> str:
    """A process's scheduler autogroup and its nice value (``/autogroup-N nice -20``). On a shared
    machine the kernel divides the CPU between autogroups, so this tells whether a run had priority."""
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().strip()
    except OSError:
        return "unknown"


@dataclass
class Served:
    """A running ``neurorad serve`` of :func:`served`."""

    root: Path  # the throwaway folder (data/, keys/, server.log, room for the bench's files)
    base: str  # http://127.0.0.1:PORT
    dicom_port: int
    cookies: list[str]  # one web session cookie per simulated user
    study_ids: list[int]  # the seeded studies
    server: subprocess.Popen
    backend: str

    def log_text(self) -> str:
        return (self.root / "server.log").read_text()


@contextmanager
def served(backend: str = "sqlite", n_studies: int = 60, n_sessions: int = 50, prefix: str = "neurorad-load-",
           start_timeout_s: float = 120.0) -> Iterator[Served]:
    """A seeded ``neurorad serve`` for the duration of the block (see the module docstring)."""
    import httpx

    from neurorad.dicom.vault import write_key_file
    from neurorad.server.settings import Settings

    root = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = server = None
    try:
        db_url = None
        if backend == "postgresql":
            from tests.store.pgcluster import PostgresCluster

            cluster = PostgresCluster().start()
            db_url = cluster.create_database("load")
        elif backend != "sqlite":
            raise ValueError(f"backend must be sqlite or postgresql, not {backend!r}")
        http_port, dicom_port = free_port(), free_port()
        (root / "keys").mkdir()
        write_key_file(root / "keys" / "vault.key")
        cfg = {"allowed_calling_aets": [SENDER_AET], "vault_key_file": str(root / "keys" / "vault.key"),
               "scheduler_interval_s": 1.0}
        (root / "config.json").write_text(json.dumps(cfg))
        settings = Settings(data_dir=root / "data", database_url=db_url,
                            **{**cfg, "vault_key_file": root / "keys" / "vault.key"})
        cookies, study_ids = seed(settings, n_studies, n_sessions)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if db_url:
            env["NEURORAD_DATABASE_URL"] = db_url
        with open(root / "server.log", "w") as log:
            server = subprocess.Popen(
                [sys.executable, "-c", "from neurorad.cli import main; main()", "serve", "--data-dir",
                 str(root / "data"), "--port", str(http_port), "--dicom-port", str(dicom_port), "--quiet-period", "3",
                 "--workflows", "summary", "--config", str(root / "config.json")],
                env=env, stdout=subprocess.DEVNULL, stderr=log, process_group=0)
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + (root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield Served(root, base, dicom_port, cookies, study_ids, server, backend)
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
