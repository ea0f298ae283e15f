"""Scale-out throughput (issue 15): a Dask scheduler with N Dask workers, PostgreSQL, N ``neurorad
worker`` processes each in its own network namespace (standing in for N hosts), ``neurorad
serve`` receiving a bounded stream of studies from DCMTK ``storescu``; for each N in one run.

Set-up per N (fresh database and data folder, so the N do not share a backlog):

* a throwaway PostgreSQL 15 (``tests/store/pgcluster.py``) listening on 127.0.0.1 and on a
  bridge ``nrops0`` (10.231.0.1/24) that only the namespaces reach (no route leaves the machine);
* ``dask scheduler`` + N ``dask worker --nthreads 1`` (root namespace, on the bridge address);
* ``neurorad serve --workers 0`` (receiver, scheduler, API on 127.0.0.1; no local worker);
* N ``ip netns exec nrops-hI neurorad worker --executor dask://10.231.0.1:PORT`` (one job at a
  time each), reaching PostgreSQL and Dask through a veth pair on the bridge; the data folder
  is shared (the ``shared`` storage setting: the same path on every host, as over NFS).

``--no-netns`` (or when not root) runs the neurorad workers as plain processes on 127.0.0.1.
Then ``--studies`` studies (``--slices`` FLAIR slices each) are sent one association after the
other; the run for N ends when every study has a result (``needs_review``) or at ``--max-s``.

Printed per N: studies per hour (studies / time from the first study queued to the last
result), queue latency p50/p95 (a run's ``queued`` -> first ``running`` transition), receive-to-
result p50, lost / duplicated / stuck counts (``tests/ops/dask_procs.exactly_once_report``) and
the scaling efficiency ``rate(N) / (N * rate(1))``. The workflow is ``summary`` (reads the series,
renders a secondary capture and the PDF report: about a CPU second per study), plus
``--job-s`` seconds of waiting per job (``NEURORAD_SUMMARY_DELAY_S``) to stand in for time spent
off this machine's CPUs. Exit status 0 only when nothing was lost, duplicated or stuck.

Usage (as root, for the namespaces)::

    nice -n 19 python bench/throughput.py --studies 12 --ns 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BRIDGE, HOST_IP, NET = "nrops0", "10.231.0.1", "10.231.0"


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    subprocess.run(cmd, check=True, capture_output=True)


@contextmanager
def namespaces(n: int):
    """``n`` network namespaces ``nrops-h0..`` on a bridge with this host at HOST_IP; removed on exit."""
    names = [f"nrops-h{i}" for i in range(n)]
    try:
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for i, ns in enumerate(names):
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            host_if, ns_if = f"nrops{i}h", f"nrops{i}n"
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", ns)
            _ip("link", "set", host_if, "master", BRIDGE)
            _ip("link", "set", host_if, "up")
            _ip("addr", "add", f"{NET}.{10 + i}/24", "dev", ns_if, ns=ns)
            _ip("link", "set", ns_if, "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
        yield names
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _timings(db) -> dict[str, list[float]]:
    """Per run: queue latency (queued -> first running), receive -> result, and the times bounding the run."""
    from sqlalchemy import select

    from neurorad.store.models import StudyTransition

    first: dict[tuple[int, str], float] = {}
    received: dict[int, float] = {}
    study_of: dict[int, int] = {}
    with db.read_session() as s:
        for t in s.scalars(select(StudyTransition).order_by(StudyTransition.id)):
            ts = t.at.timestamp()
            if t.run_id is None:
                if t.to_state == "received":
                    received.setdefault(t.study_id, ts)
                continue
            first.setdefault((t.run_id, t.to_state), ts)
            study_of[t.run_id] = t.study_id
    runs = set(study_of)
    latency, e2e, queued, done = [], [], [], []
    for r in runs:
        q, run, end = first.get((r, "queued")), first.get((r, "running")), first.get((r, "needs_review"))
        if q is not None:
            queued.append(q)
        if q is not None and run is not None:
            latency.append(run - q)
        if end is not None:
            done.append(end)
            rec = received.get(study_of[r])
            if rec is not None:
                e2e.append(end - rec)
    return {"latency": latency, "e2e": e2e, "queued": queued, "done": done}


def run_one(n: int, args, pg, root: Path, ns_names: list[str] | None) -> dict:
    from neurorad.store import Database
    from tests.ops.dask_procs import (
        NEURORAD,
        DaskProcesses,
        exactly_once_report,
        free_port,
        kill,
        start_neurorad_worker,
    )
    from tests.server.dicomdata import write_series

    host = HOST_IP if ns_names else "127.0.0.1"
    work = root / f"n{n}"
    data = work / "data"
    data.mkdir(parents=True)
    db_url = pg.create_database(f"n{n}")
    worker_db_url = db_url.replace("@127.0.0.1:", f"@{host}:")
    config = {"workflows": ["summary"], "quiet_period_s": 1.0, "scheduler_interval_s": 0.5,
              "allowed_calling_aets": ["BENCHMOD"], "lease_s": 15.0}
    cfg = work / "site.json"
    cfg.write_text(json.dumps(config))
    env = {"NEURORAD_SUMMARY_DELAY_S": str(args.job_s), "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    dask = DaskProcesses(work / "dask", env=env, nthreads=1, host=host,  # imports done before the first job
                         preload=("neurorad.server.orchestration", "neurorad.workflows.summary",
                                  "neurorad.workflows.runner", "neurorad.workflows.outputs",
                                  "neurorad.image.dicom_series", "neurorad.image.nifti", "matplotlib.pyplot"))
    procs: list[subprocess.Popen] = []
    out: dict = {"n": n}
    try:
        dask.start_scheduler()
        for _ in range(n):
            dask.start_worker()
        dask.wait_for_workers(n, timeout_s=120)
        port, dicom_port = free_port(), free_port()
        serve = subprocess.Popen([*NEURORAD, "serve", "--data-dir", str(data), "--database-url", db_url, "--port",
                                  str(port), "--dicom-port", str(dicom_port), "--workers", "0", "--config", str(cfg)],
                                 env=dict(os.environ, **env), cwd=REPO, stdout=open(work / "serve.log", "ab"),
                                 stderr=subprocess.STDOUT)
        procs.append(serve)
        deadline = time.monotonic() + 120
        while subprocess.run(["echoscu", "-aet", "BENCHMOD", "-aec", "NEURORAD", "127.0.0.1", str(dicom_port)],
                             capture_output=True).returncode != 0:
            if serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("neurorad serve did not start: " + (work / "serve.log").read_text()[-2000:])
            time.sleep(0.3)
        for i in range(n):
            prefix = ["ip", "netns", "exec", ns_names[i]] if ns_names else None
            procs.append(start_neurorad_worker(data, cfg, dask.address, work / f"nworker{i}.log",
                                               database_url=worker_db_url, env=env, prefix=prefix))
        deadline = time.monotonic() + 120
        logs = [work / f"nworker{i}.log" for i in range(n)]
        while not all(" started (" in p.read_text() for p in logs if p.exists()) or not all(p.exists() for p in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("a neurorad worker did not start: " + logs[0].read_text()[-2000:])
            time.sleep(0.3)
        time.sleep(1.0)  # its Dask client connects on its first poll
        series = [write_series(work / "in" / str(k), "FLAIR", n_slices=args.slices, size=args.size)
                  for k in range(args.studies)]
        t0 = time.time()
        out["storescu_failures"] = []
        for files in series:  # one association per study, back to back: a bounded stream
            for _attempt in range(3):  # a failed association is sent again, as a PACS would
                r = subprocess.run(["storescu", "-aet", "BENCHMOD", "-aec", "NEURORAD", "127.0.0.1",
                                    str(dicom_port), *map(str, files)], capture_output=True, text=True)
                if r.returncode == 0:
                    break
                out["storescu_failures"].append(r.stderr.strip().splitlines()[-1][:200] if r.stderr.strip() else
                                                f"exit {r.returncode}")
                time.sleep(2.0)
        out["send_s"] = time.time() - t0
        db = Database(db_url)
        deadline = time.monotonic() + args.max_s
        while time.monotonic() < deadline:
            rep = exactly_once_report(db)
            if rep["studies"] == args.studies and rep["ended_once"] + rep["lost"] + rep["duplicated"] \
                    >= args.studies and rep["stuck"] == 0:
                break
            time.sleep(1.0)
        rep = exactly_once_report(db)
        tm = _timings(db)
        db.dispose()
        span = (max(tm["done"]) - min(tm["queued"])) if tm["done"] and tm["queued"] else None
        out.update({k: rep[k] for k in ("studies", "ended_once", "lost", "duplicated", "stuck")})
        out["problems"] = rep["problems"][:5]
        if out["storescu_failures"]:  # what the server said about it
            out["serve_log_errors"] = [ln[:300] for ln in (work / "serve.log").read_text().splitlines()
                                       if "ERROR" in ln or "WARNING" in ln][-10:]
        out["missing"] = args.studies - int(rep["studies"])  # sent but never stored as a study
        out["span_s"] = span
        out["studies_per_hour"] = (len(tm["done"]) / span * 3600) if span else None
        out["queue_latency_p50_s"] = _pct(tm["latency"], 0.5)
        out["queue_latency_p95_s"] = _pct(tm["latency"], 0.95)
        out["receive_to_result_p50_s"] = _pct(tm["e2e"], 0.5)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    kill(p)
        dask.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4], help="numbers of hosts (Dask + neurorad workers)")
    ap.add_argument("--studies", type=int, default=12, help="studies sent per N")
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="matrix size of each slice")
    ap.add_argument("--job-s", type=float, default=0.0, help="extra seconds each job waits (off-CPU work)")
    ap.add_argument("--max-s", type=float, default=600.0, help="give up on an N after this long")
    ap.add_argument("--no-netns", action="store_true", help="neurorad workers as plain local processes")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (processes, namespaces) on kill
    if shutil.which("storescu") is None:
        print("DCMTK storescu is required", file=sys.stderr)
        return 2
    use_netns = not args.no_netns and os.geteuid() == 0 and shutil.which("ip") is not None
    from tests.store.pgcluster import PostgresCluster

    root = Path(tempfile.mkdtemp(prefix="neurorad-throughput-"))
    os.environ.setdefault("NEURORAD_KEY_DIR", str(root / "keys"))
    rows = []
    load_before = os.getloadavg()
    try:
        ctx = namespaces(max(args.ns)) if use_netns else None
        ns_names = ctx.__enter__() if ctx else None
        pg = PostgresCluster(extra_listen=HOST_IP if use_netns else None).start()
        try:
            for n in args.ns:
                row = run_one(n, args, pg, root, ns_names[:n] if ns_names else None)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            pg.stop()
            if ctx:
                ctx.__exit__(None, None, None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = next((r["studies_per_hour"] for r in rows if r["n"] == 1 and r["studies_per_hour"]), None)
    for r in rows:
        r["efficiency"] = (r["studies_per_hour"] / (r["n"] * base)) if base and r["studies_per_hour"] else None
    load_after = os.getloadavg()
    print(f"hosts: {'network namespaces' if use_netns else 'local processes (no namespaces)'}; "
          f"{args.studies} studies x {args.slices} slices {args.size}^2 per N; job wait {args.job_s} s; "
          f"{os.cpu_count()} CPUs; load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    print(f"{'N':>3} {'studies/h':>10} {'eff':>5} {'lat p50':>8} {'lat p95':>8} {'e2e p50':>8} "
          f"{'done':>5} {'lost':>5} {'dup':>4} {'stuck':>5} {'missing':>7}")

    def f(x, fmt):
        return format(x, fmt) if x is not None else "-"

    for r in rows:
        print(f"{r['n']:>3} {f(r['studies_per_hour'], '10.0f')} {f(r['efficiency'], '5.2f')} "
              f"{f(r['queue_latency_p50_s'], '7.1f')}s {f(r['queue_latency_p95_s'], '7.1f')}s "
              f"{f(r['receive_to_result_p50_s'], '7.1f')}s {r['ended_once']:>5} {r['lost']:>5} {r['duplicated']:>4} "
              f"{r['stuck']:>5} {r['missing']:>7}")
        for p in r["problems"] + [f"storescu: {x}" for x in r.get("storescu_failures", [])] + \
                r.get("serve_log_errors", []):
            print("    " + p)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load_before": load_before, "load_after": load_after,
                                         "netns": use_netns, "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=1))
    ok = all(r["lost"] == 0 and r["duplicated"] == 0 and r["stuck"] == 0 and r["missing"] == 0
             and r["ended_once"] == args.studies for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
