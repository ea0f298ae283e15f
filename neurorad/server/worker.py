"""Job execution: a worker claims jobs from the database queue and runs them on an executor.

* ``local`` (default): jobs run in child processes (``forkserver``), so a time-out or a
  cancellation can kill one and a crash in a workflow cannot take the worker down. A job process
  runs up to ``Settings.jobs_per_process`` jobs one after the other (leases through a pipe) and is
  then replaced; one whose job timed out, was cancelled or killed it is ended at once. Reuse is for
  speed: a fresh process pays first-run costs in every step (thread pools, TorchScript's profiling
  runs, ITK and allocator warm-up), 2-3 s of an MS job (``bench/ms_speed.py --job-process``), as a
  Dask worker pays them once. The child dies with its worker (a watchdog on the worker's pidfd;
  ``PR_SET_PDEATHSIG`` only covers the forkserver, the child's actual parent), so ``kill -9`` of a
  worker leaves no orphan that could finish a job someone else has taken over.
* ``dask://HOST:PORT``: jobs are submitted to a Dask distributed scheduler (for sites that
  outgrow one machine); the worker process keeps the lease alive while the task runs and
  Dask reruns a task whose Dask worker died. When the scheduler is lost, Dask cancels the
  client's futures: the worker gives each job back to the queue (a retry with back-off) and
  claims nothing until the client is connected again (Dask's client reconnects by itself), so
  no job waits, leased, on a scheduler that is gone. A neurorad worker killed while Dask runs
  its job leaves the task running: it completes the job under the lease it was given (a
  workflow's progress calls extend that lease), or, when the lease expires first, another
  worker takes the job over and the old task can no longer finish it (fencing, below).

In both, the worker heartbeats the lease every ``lease_s / 3`` seconds; a worker that dies
stops heartbeating, its lease expires and another worker takes the job over (at-least-once;
completion is fenced by the lease token, so a job finishes exactly once).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from neurorad.runtime import release_free_memory
from neurorad.server.settings import Destination, Settings
from neurorad.store.queue import Lease, LeaseLost

log = logging.getLogger("neurorad.worker")

# a job process that waits this long for its next job hands its free heap memory back (_serve_jobs)
JOB_PROCESS_TRIM_AFTER_S = 2.0


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    d = asdict(settings)
    d["data_dir"] = str(settings.data_dir)
    d["vault_key_file"] = str(settings.vault_key_file) if settings.vault_key_file else None
    return d


def settings_from_dict(d: dict[str, Any]) -> Settings:
    d = dict(d)
    d["destinations"] = [Destination(**x) for x in d.get("destinations", [])]
    d["allowed_modalities"] = tuple(d.get("allowed_modalities", ("MR", "CT")))
    if d.get("vault_key_file"):
        from pathlib import Path

        d["vault_key_file"] = Path(d["vault_key_file"])
    return Settings(**d)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def execute_job(settings_d: dict[str, Any], lease_d: dict[str, Any]) -> str:
    """Run one leased job in this process (child process or Dask task)."""
    from neurorad.server.logs import configure_job_process
    from neurorad.server.orchestration import DataPlane

    configure_job_process()
    plane = DataPlane(settings_from_dict(settings_d))
    try:
        return plane.run_job(Lease(**lease_d))
    finally:
        plane.db.dispose()


def execute_dask_job(settings_d: dict[str, Any], lease_d: dict[str, Any]) -> str:
    """A Dask task: :func:`execute_job`, then the process's free heap memory handed back to the system. A Dask
    worker is long-lived and :mod:`neurorad.runtime` keeps freed memory for speed, so without this it would hold
    its largest job's peak between jobs (a local job process does this when it waits, ``_serve_jobs``)."""
    try:
        return execute_job(settings_d, lease_d)
    finally:
        release_free_memory()


def _exit_with_worker(worker_pid: int) -> None:
    """End this process (SIGKILL) as soon as the worker process ``worker_pid`` is gone.

    The job's parent is the forkserver, not the worker, so ``PR_SET_PDEATHSIG`` alone does not
    fire when the worker (``neurorad serve``) is killed; a pidfd of the worker (Linux >= 5.3,
    ``os.pidfd_open``) becomes readable when it exits, and a watchdog thread waits on it.
    Without pidfds the thread polls the worker's pid once a second.
    """
    import select

    try:
        fd = os.pidfd_open(worker_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                time.sleep(1.0)
                try:
                    os.kill(worker_pid, 0)
                except ProcessLookupError:
                    break
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="neurorad-worker-watch", daemon=True).start()


def job_preload_modules(workflows: list[str] | tuple[str, ...]) -> list[str]:
    """What the forkserver of job processes imports once, before any job forks from it: the data plane, plus
    what the enabled ``workflows`` declare (``Workflow.preload``: e.g. ITK-elastix, ~8-14 s per cold process on
    2 cores). ``bench/ms_speed.py --job-process`` times a job with the same list."""
    from neurorad.workflows.registry import preload_modules

    return ["neurorad.server.orchestration", "neurorad.workflows.registry", "highdicom", "pydicom",
            *preload_modules(workflows)]


def _child(fn: Any, args: tuple, worker_pid: int) -> None:
    """Entry of a job process: dies with the forkserver (PDEATHSIG) and with the worker."""
    _die_with_parent()
    if os.getppid() == 1:
        os._exit(1)
    _exit_with_worker(worker_pid)
    fn(*args)


def _serve_jobs(conn: Any, settings_d: dict[str, Any]) -> None:
    """Loop of a job process: run each lease the worker sends (one at a time), answer ``("done", state)``
    after each (the job's state as ``DataPlane.run_job`` returns it: ``"succeeded"``, or the state its failure
    left it in), and return on ``None`` or when the worker's end of the pipe closes. A job that raises ends the
    process (exit code 1, its traceback on stderr) before any answer: the worker fails that job as before.
    When no next lease comes within ``JOB_PROCESS_TRIM_AFTER_S`` the process hands its free heap memory back to
    the system (:func:`neurorad.runtime.release_free_memory`), so an idle job process does not hold a job's peak."""
    while True:
        try:
            lease_d = conn.recv()
        except EOFError:
            return
        if lease_d is None:
            return
        state = execute_job(settings_d, lease_d)
        conn.send(("done", state))
        if not conn.poll(JOB_PROCESS_TRIM_AFTER_S):
            # no next job yet: hand the job's freed memory back (neurorad.runtime keeps it for speed)
            release_free_memory()


def _job_process_main(conn: Any, settings_d: dict[str, Any], worker_pid: int) -> None:
    _child(_serve_jobs, (conn, settings_d), worker_pid)


class _JobProcess:
    """A job process of the local executor: forked from the forkserver, it runs up to
    ``Settings.jobs_per_process`` jobs one after the other (leases through a pipe)."""

    def __init__(self, ctx: Any, settings_d: dict[str, Any], worker_pid: int) -> None:
        self.conn, child_end = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_job_process_main, args=(child_end, settings_d, worker_pid),
                                name="neurorad-job", daemon=True)
        self.proc.start()
        child_end.close()
        self.jobs = 0

    def stop(self, wait_s: float = 5.0) -> None:
        """Ask an idle process to exit; kill it if it has not after ``wait_s``."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(wait_s)
        self.kill()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class _LocalJob:
    """The executor handle of one job running in a :class:`_JobProcess`."""

    def __init__(self, host: _JobProcess, lease: Lease) -> None:
        self.host = host
        self.answered = False
        self.state: str | None = None  # the job's state as its process answered it ("succeeded", "failed", ...)
        host.jobs += 1
        host.conn.send(asdict(lease))

    def finished(self) -> bool:
        if self.answered:
            return True
        try:
            if self.host.conn.poll():
                msg = self.host.conn.recv()
                self.answered = isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "done"
                if self.answered:
                    self.state = str(msg[1])
                return True
        except (EOFError, OSError):
            return True
        # dead without an answer; poll again: the answer may have arrived between the poll and the death
        return not self.host.proc.is_alive() and not self.host.conn.poll()

    def error(self) -> str | None:
        if self.answered:
            return None
        self.host.proc.join(1)
        return f"job process died (exit code {self.host.proc.exitcode})"


@dataclass
class _Running:
    lease: Lease
    started: float
    handle: Any
    last_beat: float = field(default_factory=time.monotonic)


class Worker:
    """Claims and runs jobs until ``stop()``; ``concurrency`` jobs at a time."""

    def __init__(self, settings: Settings, executor: str | None = None, concurrency: int | None = None,
                 worker_id: str | None = None, kinds: list[str] | None = None) -> None:
        from neurorad.server.orchestration import DataPlane

        self.settings = settings
        self.plane = DataPlane(settings)
        self.executor = executor or settings.executor
        self.concurrency = max(1, concurrency or settings.workers)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self) % 10000}"
        self.kinds = kinds
        self._stop = threading.Event()
        self._running: dict[int, _Running] = {}
        # forkserver: children fork from a clean, single-threaded server process that has already
        # imported the data plane (fast start, unlike spawn; safe in a threaded server, unlike fork)
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(job_preload_modules(settings.workflows))
        self._client = None
        self._executor_down_since: float | None = None
        self._settings_d = settings_to_dict(settings)
        # local executor: job processes waiting for their next job (each runs <= jobs_per_process)
        self._idle: list[_JobProcess] = []

    @property
    def uses_dask(self) -> bool:
        return self.executor.startswith("dask://") or self.executor.startswith("tcp://")

    def _executor_ready(self) -> bool:
        """Whether a job may be claimed now: always for ``local``; for Dask, when the client is
        connected to the scheduler (made here on first use; a scheduler that cannot be reached is
        retried on the next poll, and nothing is claimed meanwhile)."""
        if not self.uses_dask:
            return True
        ok = False
        if self._client is not None and self._client.status in ("closed", "closing", "failed") and not self._running:
            try:  # it gave up reconnecting: a new one is made below
                self._client.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the old dask client failed", exc_info=True)
            self._client = None
        if self._client is None:
            from dask.distributed import Client

            try:
                self._client = Client("tcp://" + self.executor.split("://", 1)[1], timeout=10)
            except (OSError, TimeoutError) as exc:  # logged once below, as "not connected"
                log.debug("dask scheduler %s unreachable: %s", self.executor, type(exc).__name__)
        if self._client is not None:
            ok = self._client.status == "running"
        if not ok and self._executor_down_since is None:
            self._executor_down_since = time.monotonic()
            log.warning("dask scheduler %s not connected; claiming no job until it is", self.executor)
        elif ok and self._executor_down_since is not None:
            log.info("dask scheduler %s connected again after %.0f s", self.executor,
                     time.monotonic() - self._executor_down_since)
            self._executor_down_since = None
        return ok

    # -- executors -----------------------------------------------------------------------------
    def _start(self, lease: Lease) -> Any:
        if self.uses_dask:
            return self._client.submit(execute_dask_job, self._settings_d, asdict(lease), pure=False,
                                       key=f"neurorad-job-{lease.job_id}-{lease.attempt}")
        while self._idle:  # the most recently used idle process first
            host = self._idle.pop()
            if host.proc.is_alive():
                try:
                    return _LocalJob(host, lease)
                except OSError:  # it died since (its end of the pipe is gone): a fresh one below
                    log.warning("an idle job process had ended; starting a fresh one")
            host.kill()
        return _LocalJob(_JobProcess(self._ctx, self._settings_d, os.getpid()), lease)

    def _release(self, handle: Any, ok: bool) -> None:
        """After a job of the local executor: its process waits for the next job only when the job SUCCEEDED
        and the process has run fewer than ``jobs_per_process``; otherwise it ends (asked to exit when it
        answered, killed when it did not). A job that failed, even inside the workflow with its failure
        recorded, never hands its process to the next patient's job: whatever the failure left behind in
        module state, caches or memory ends with it (the next job pays a fresh process's start, 2-3 s for an
        MS pair, only after a failure)."""
        if not isinstance(handle, _LocalJob):
            return
        if (ok and handle.state == "succeeded" and handle.host.jobs < self.settings.jobs_per_process
                and handle.host.proc.is_alive()):
            self._idle.append(handle.host)
        elif ok:
            handle.host.stop()
        else:
            handle.host.kill()

    @staticmethod
    def _done(handle: Any) -> bool:
        if isinstance(handle, _LocalJob):
            return handle.finished()
        return handle.done() if hasattr(handle, "done") else not handle.is_alive()

    def _kill(self, handle: Any) -> None:
        if isinstance(handle, _LocalJob):
            handle.host.kill()
        elif hasattr(handle, "cancel"):
            try:
                handle.cancel()
            except Exception:  # noqa: BLE001 - scheduler gone: nothing left to cancel there
                log.debug("dask cancel failed", exc_info=True)
        elif handle.is_alive():
            handle.kill()
            handle.join(5)

    def _outcome_error(self, handle: Any) -> str | None:
        """None when the executor finished normally (the job recorded its own end)."""
        if isinstance(handle, _LocalJob):
            return handle.error()
        if hasattr(handle, "done"):
            if handle.status == "finished":
                return None
            if handle.status == "cancelled":  # the scheduler was lost, or released the task
                return "dask task cancelled (scheduler connection lost); retried"
            try:
                exc = handle.exception(timeout=1)
            except Exception as e:  # cancelled
                exc = e
            return f"dask task ended: {type(exc).__name__}: {exc}"
        handle.join(1)
        return None if handle.exitcode == 0 else f"job process died (exit code {handle.exitcode})"

    # -- loop ----------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self, poll_s: float = 0.5, max_jobs: int | None = None) -> None:
        """Claim and supervise jobs until stopped (or ``max_jobs`` jobs were started and ended)."""
        started = 0
        beat_s = max(0.2, self.settings.lease_s / 3)
        log.info("worker %s started (%s executor, %d slot(s))", self.worker_id, self.executor, self.concurrency)
        try:
            while not self._stop.is_set():
                while (len(self._running) < self.concurrency and (max_jobs is None or started < max_jobs)
                       and self._executor_ready()):
                    lease = self.plane.queue.claim(self.worker_id, self.kinds)
                    if lease is None:
                        break
                    log.info("job %s (%s) attempt %s started", lease.job_id, lease.kind, lease.attempt,
                             extra={"job_id": lease.job_id})
                    self._running[lease.job_id] = _Running(lease, time.monotonic(), self._start(lease))
                    started += 1
                now = time.monotonic()
                for jid, r in list(self._running.items()):
                    if self._done(r.handle):
                        err = self._outcome_error(r.handle)
                        self._release(r.handle, ok=err is None)
                        if err:
                            self.plane.queue.fail(r.lease, err)
                        del self._running[jid]
                        continue
                    if now - r.started > r.lease.timeout_s:
                        self._kill(r.handle)
                        self.plane.queue.fail(r.lease, f"timed out after {r.lease.timeout_s:.0f} s")
                        del self._running[jid]
                        continue
                    if now - r.last_beat >= beat_s:
                        try:
                            self.plane.queue.heartbeat(r.lease)
                            r.last_beat = now
                        except LeaseLost as exc:
                            self._kill(r.handle)
                            self.plane.queue.fail(r.lease, str(exc), retry=False)
                            del self._running[jid]
                if max_jobs is not None and started >= max_jobs and not self._running:
                    return
                self._stop.wait(poll_s)
        finally:
            for r in self._running.values():
                self._kill(r.handle)
            while self._idle:
                self._idle.pop().stop()
            if self._client is not None:
                self._client.close()
