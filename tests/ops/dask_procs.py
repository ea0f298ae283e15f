"""Real processes for scale-out tests and ``bench/throughput.py``: a Dask scheduler, Dask workers
(``dask scheduler`` / ``dask worker``, the commands a site runs) and ``neurorad worker``s, on
127.0.0.1; plus the exactly-once check every scale-out test and the benchmark share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NEURORAD = [sys.executable, "-c", "from neurorad.cli import main; main()"]
DASK = [sys.executable, "-m", "dask"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout_s: float, proc: subprocess.Popen, log: Path, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}): " + log.read_text()[-2000:])
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s: " + log.read_text()[-2000:])


def kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL one process this module started (by its pid) and reap it."""
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        try:
            proc.wait(60)  # a killed process is reaped late on an overloaded machine
        except subprocess.TimeoutExpired:
            pass


class DaskProcesses:
    """A ``dask scheduler`` and ``dask worker`` processes (no nanny: a killed worker stays dead)."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, nthreads: int = 1,
                 host: str = "127.0.0.1", preload: tuple[str, ...] = ("neurorad.server.orchestration",)) -> None:
        self.host = host
        self.preload = preload
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, **(env or {}))
        self.env.setdefault("PYTHONPATH", str(REPO))
        self.port = free_port()
        self.nthreads = nthreads
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        """The ``--executor`` value of neurorad workers."""
        return f"dask://{self.host}:{self.port}"

    def start_scheduler(self) -> DaskProcesses:
        log = self.root / "scheduler.log"
        self.scheduler = subprocess.Popen([*DASK, "scheduler", "--host", self.host, "--port", str(self.port),
                                           "--no-dashboard"], env=self.env, cwd=REPO,
                                          stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        _wait_port(self.port, 60, self.scheduler, log, self.host)
        return self

    def start_worker(self) -> subprocess.Popen:
        log = self.root / f"worker{len(self.workers)}.log"
        w = subprocess.Popen([*DASK, "worker", f"tcp://{self.host}:{self.port}", "--host", self.host,
                              "--nthreads", str(self.nthreads), "--no-nanny", "--no-dashboard",
                              "--memory-limit", "0", *(x for m in self.preload for x in ("--preload", m))],
                             env=self.env, cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        self.workers.append(w)
        return w

    def wait_for_workers(self, n: int, timeout_s: float = 60) -> None:
        from dask.distributed import Client

        with Client(f"tcp://{self.host}:{self.port}", timeout=timeout_s) as c:
            c.wait_for_workers(n, timeout=timeout_s)

    def stop(self) -> None:
        for w in self.workers:
            kill(w)
        kill(self.scheduler)


def start_neurorad_worker(data_dir: Path, config: Path, executor: str, log: Path, database_url: str | None = None,
                          concurrency: int = 1, env: dict[str, str] | None = None,
                          prefix: list[str] | None = None) -> subprocess.Popen:
    """``neurorad worker`` as a real process (``prefix``: e.g. ``ip netns exec NS``)."""
    db = ["--database-url", database_url] if database_url else []
    e = dict(os.environ, **(env or {}))
    e.setdefault("PYTHONPATH", str(REPO))
    return subprocess.Popen([*(prefix or []), *NEURORAD, "worker", "--data-dir", str(data_dir), "--config",
                             str(config), "--executor", executor, "--concurrency", str(concurrency), *db],
                            env=e, cwd=REPO,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def exactly_once_report(db) -> dict[str, object]:
    """How the studies of one installation ended: every workflow run should have reached
    ``needs_review`` exactly once, through one succeeded job, with the results of that job only.

    Returns counts: ``studies``, ``ended_once``, ``lost`` (a run or study that never reached a
    result and is not running: failed or cancelled), ``duplicated`` (a run that reached
    ``needs_review`` more than once, or two succeeded jobs, or results of two jobs), ``stuck``
    (jobs pending or running), and ``problems`` (one line per run that is not ended once).
    """
    from sqlalchemy import select

    from neurorad.store.models import Job, Result, Study, StudyTransition, WorkflowRun

    out: dict[str, object] = {"studies": 0, "ended_once": 0, "lost": 0, "duplicated": 0, "stuck": 0}
    problems: list[str] = []
    with db.read_session() as s:
        studies = s.scalars(select(Study)).all()
        out["studies"] = len(studies)
        jobs = s.scalars(select(Job)).all()
        out["stuck"] = sum(j.state in ("pending", "running") for j in jobs)
        reached = Counter(t.run_id for t in s.scalars(select(StudyTransition).where(
            StudyTransition.run_id.is_not(None), StudyTransition.to_state == "needs_review")))
        succeeded = Counter(j.run_id for j in jobs if j.state == "succeeded" and j.kind == "workflow")
        result_jobs: dict[int, set[int]] = {}
        for r in s.scalars(select(Result)):
            result_jobs.setdefault(r.run_id, set()).add(r.job_id)
        runs = {r.study_id: r for r in s.scalars(select(WorkflowRun))}
        for st in studies:
            run = runs.get(st.id)
            if run is None:
                out["lost"] += 1
                problems.append(f"study {st.id}: no workflow run ({st.state})")
                continue
            n, ok_jobs, rj = reached[run.id], succeeded[run.id], result_jobs.get(run.id, set())
            if n == 1 and ok_jobs == 1 and len(rj) == 1 and run.state == "needs_review":
                out["ended_once"] += 1
            elif n > 1 or ok_jobs > 1 or len(rj) > 1:
                out["duplicated"] += 1
                problems.append(f"study {st.id}: needs_review {n}x, {ok_jobs} succeeded job(s), results of "
                                f"{len(rj)} job(s)")
            elif run.state not in ("queued", "running"):
                out["lost"] += 1
                problems.append(f"study {st.id}: run {run.state}, " + "; ".join(
                    f"job {j.id} {j.state} ({j.error})" for j in jobs if j.run_id == run.id))
            else:
                problems.append(f"study {st.id}: run still {run.state}")
    out["problems"] = problems
    return out
