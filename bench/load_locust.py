"""Load test of the web app and API with Locust (issue 15): ``--users`` signed-in radiologists
browse the worklist and open studies while DCMTK ``storescu`` sends studies; loopback only.

Run as a script it sets everything up and runs Locust headless as a child process on this same
file (which then only defines the Locust user, ``NEURORAD_LOCUST=1``):

1. a throwaway data folder (SQLite, or ``--backend postgresql``: a throwaway PostgreSQL 15) with
   ``--studies`` seeded studies in mixed states, one web session per user, and ``neurorad serve``
   (real process: uvicorn, receiver, scheduler, one local worker, the ``summary`` workflow, 3 s
   quiet period) on 127.0.0.1 (``bench/_serve.py``, shared with ``bench/server_load.py``: the load
   is on the pages, not on Argon2 sign-ins);
2. ``locust --headless -u USERS``: each user, after a think time of ``--wait-min``..``--wait-max``
   seconds, either opens the worklist page and ``GET /api/studies`` (weight 1) or a study's page
   and ``GET /api/studies/{id}`` (weight 2); meanwhile ``--ingest`` studies are sent by storescu,
   spread over the run.

Printed: requests, errors, p50/p95 latency per endpoint (Locust's own statistics) and the load
average; exit 0 when there is no error and p95 < ``--target-ms`` for every ``/api/`` endpoint.

Usage::

    python bench/load_locust.py --users 50 --duration-s 60
    # on a shared machine, with CPU priority for the bench and the server it starts (root; plain
    # nice does not reach across autogroups):
    sh -c 'echo -20 > /proc/self/autogroup; exec python bench/load_locust.py --users 50 --duration-s 60'
"""

from __future__ import annotations

import os

if os.environ.get("NEURORAD_LOCUST") == "1":  # imported by locust -f: only the user class
    import json as _json
    import random

    from locust import HttpUser, between, task

    _COOKIES = _json.loads(os.environ["NEURORAD_LOCUST_COOKIES"])
    _STUDIES = _json.loads(os.environ["NEURORAD_LOCUST_STUDIES"])
    _WAIT = (float(os.environ.get("NEURORAD_LOCUST_WAIT_MIN", "2")), float(os.environ.get("NEURORAD_LOCUST_WAIT_MAX",
                                                                                         "6")))
    _next = [0]

    class Radiologist(HttpUser):
        wait_time = between(*_WAIT)

        def on_start(self) -> None:
            self.client.cookies.set("neurorad_session", _COOKIES[_next[0] % len(_COOKIES)])
            _next[0] += 1

        @task(1)
        def worklist(self) -> None:
            self.client.get("/worklist?status=all", name="/worklist")
            self.client.get("/api/studies?limit=50", name="/api/studies")

        @task(2)
        def open_study(self) -> None:
            sid = random.choice(_STUDIES)
            self.client.get(f"/studies/{sid}", name="/studies/{id}")
            self.client.get(f"/api/studies/{sid}", name="/api/studies/{id}")

else:
    import argparse
    import csv
    import json
    import shutil
    import signal
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    REPO = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    from _serve import SENDER_AET, autogroup, served

    def _send_stream(files_per_study: list[list[Path]], port: int, duration_s: float, out: dict) -> None:
        """Send the studies spread over the run (one storescu association each)."""
        gap = duration_s / (len(files_per_study) + 1)
        for files in files_per_study:
            time.sleep(gap)
            r = subprocess.run(["storescu", "-aec", "NEURORAD", "-aet", SENDER_AET, "127.0.0.1", str(port),
                                *map(str, files)], capture_output=True, text=True)
            out.setdefault("storescu_rc", []).append(r.returncode)

    def _cpu_s(pid: int) -> float:
        """CPU seconds (user + system) of the server process itself (not its job processes)."""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _stats(prefix: Path) -> list[dict]:
        rows = []
        with open(f"{prefix}_stats.csv") as fh:
            for r in csv.DictReader(fh):
                rows.append({"name": r["Name"], "requests": int(r["Request Count"]), "errors": int(r["Failure Count"]),
                             "p50_ms": float(r["50%"] or 0), "p95_ms": float(r["95%"] or 0),
                             "max_ms": float(r["Max Response Time"] or 0), "rps": float(r["Requests/s"] or 0)})
        return rows

    def main(argv: list[str] | None = None) -> int:
        ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
        ap.add_argument("--users", type=int, default=50)
        ap.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second")
        ap.add_argument("--duration-s", type=int, default=60)
        ap.add_argument("--studies", type=int, default=60, help="studies seeded before the run")
        ap.add_argument("--ingest", type=int, default=3, help="studies sent by storescu during the run")
        ap.add_argument("--slices", type=int, default=8, help="instances per sent study")
        ap.add_argument("--wait-min", type=float, default=2.0, help="think time between a user's actions (s)")
        ap.add_argument("--wait-max", type=float, default=6.0)
        ap.add_argument("--target-ms", type=float, default=300.0, help="p95 target of the /api/ endpoints")
        ap.add_argument("--out", type=Path, help="write the figures as JSON here")
        args = ap.parse_args(argv)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        if shutil.which("storescu") is None:
            print("DCMTK storescu is required", file=sys.stderr)
            return 2
        from tests.server.dicomdata import write_series

        load_before = os.getloadavg()
        with served(args.backend, args.studies, args.users, prefix="neurorad-locust-") as srv:
            root, server = srv.root, srv.server
            sends = [write_series(root / "send" / str(k), "FLAIR", n_slices=args.slices, size=64)
                     for k in range(args.ingest)]
            ingest: dict = {}
            sender = threading.Thread(target=_send_stream, args=(sends, srv.dicom_port, args.duration_s, ingest),
                                      daemon=True)
            lenv = dict(os.environ, PYTHONPATH=str(REPO), NEURORAD_LOCUST="1",
                        NEURORAD_LOCUST_COOKIES=json.dumps(srv.cookies), NEURORAD_LOCUST_STUDIES=json.dumps(
                            srv.study_ids), NEURORAD_LOCUST_WAIT_MIN=str(args.wait_min),
                        NEURORAD_LOCUST_WAIT_MAX=str(args.wait_max))
            prefix = root / "locust"
            cpu0 = _cpu_s(server.pid)
            sender.start()
            t0 = time.time()
            lrun = subprocess.run([sys.executable, "-m", "locust", "-f", str(Path(__file__).resolve()), "--headless",
                                   "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.duration_s}s",
                                   "--host", srv.base, "--csv", str(prefix), "--only-summary", "--stop-timeout",
                                   "30", "--loglevel", "WARNING"], env=lenv, capture_output=True, text=True,
                                  timeout=args.duration_s + 180)
            wall = time.time() - t0
            cpu1 = _cpu_s(server.pid)
            sender.join(120)
            rows = _stats(prefix)
            failures = (Path(f"{prefix}_failures.csv").read_text().splitlines()[1:]
                        if Path(f"{prefix}_failures.csv").exists() else [])
            out = {"backend": args.backend, "users": args.users, "think_time_s": [args.wait_min, args.wait_max],
                   "duration_s": args.duration_s, "wall_s": round(wall, 1), "studies_seeded": args.studies,
                   "ingest": {"studies": args.ingest, "slices": args.slices, "storescu_rc": ingest.get("storescu_rc")},
                   "endpoints": rows, "failures": failures[:20], "locust_rc": lrun.returncode,
                   "server_tracebacks": srv.log_text().count("Traceback"),
                   "server_cpu_ms_per_request": round((cpu1 - cpu0) * 1000 / max(1, sum(
                       r["requests"] for r in rows if r["name"] != "Aggregated")), 1),
                   "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 1) for x in load_before],
                               "loadavg_after": [round(x, 1) for x in os.getloadavg()],
                               "server_autogroup": autogroup(server.pid)}}
        print(f"{args.users} users, think time {args.wait_min}-{args.wait_max} s, {args.duration_s} s, "
              f"{args.backend}; {args.ingest} studies x {args.slices} instances sent during the run "
              f"(storescu exit {out['ingest']['storescu_rc']}); load average {out['machine']['loadavg_before'][0]} "
              f"before, {out['machine']['loadavg_after'][0]} after, {os.cpu_count()} CPUs; server autogroup "
              f"{out['machine']['server_autogroup']}")
        print(f"{'endpoint':<22} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for r in rows:
            print(f"{r['name']:<22} {r['requests']:>8} {r['errors']:>6} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} "
                  f"{r['max_ms']:>8.0f}")
        print(f"server CPU per request: {out['server_cpu_ms_per_request']} ms (the server process's user + "
              "system time during the run, ingest and scheduler included, job processes not)")
        for f in out["failures"]:
            print("  failure: " + f)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=1) + "\n")
        api = [r for r in rows if r["name"].startswith("/api/")]
        errors = sum(r["errors"] for r in rows if r["name"] != "Aggregated")
        ok = (errors == 0 and api and all(r["p95_ms"] < args.target_ms for r in api)
              and all(rc == 0 for rc in out["ingest"]["storescu_rc"] or [1]))
        print(("PASS" if ok else "FAIL") + f": errors {errors}, /api/ p95 target {args.target_ms:.0f} ms",
              file=sys.stderr)
        return 0 if ok else 1

    if __name__ == "__main__":
        sys.exit(main())
