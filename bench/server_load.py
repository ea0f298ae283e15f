"""Bounded load test of ``neurorad serve`` (issue 16): signed-in clients on the worklist and
study pages while storescu sends a study; SQLite or PostgreSQL.

Everything runs on 127.0.0.1 and stops by itself (``--duration-s``, hard cap ``--max-s``):

1. A throwaway data folder (and, for ``--backend postgresql``, a throwaway PostgreSQL 15
   cluster, ``tests/store/pgcluster.py``) with ``--studies`` reviewed-looking studies and one
   radiologist with ``--clients`` web sessions (made in the database: the load is on the
   pages, not on Argon2 sign-ins).
2. ``neurorad serve`` as a real process (uvicorn, receiver, scheduler, local worker, the
   ``summary`` workflow, a 3 s quiet period). Steps 1 and 2 are ``bench/_serve.py``, shared
   with ``bench/load_locust.py``.
3. ``--clients`` concurrent clients (httpx, one event loop), each repeating: worklist page,
   a study page, ``GET /api/studies``, ``GET /api/studies/{id}``; a probe (a process of its
   own) reads ``/api/health`` every 250 ms with a 1 s limit. After a 5 s ramp, DCMTK ``storescu`` sends
   one study (FLAIR, ``--slices`` instances).
4. The run ends after ``--duration-s`` once the sent study has been processed
   (``needs_review``), or at ``--max-s``. Figures: requests, errors (any non-2xx or transport
   error), p50/p95/p99 latency per page, health max, time to receive and to process.

Usage::

    python bench/server_load.py --backend sqlite --clients 200 --duration-s 60
    python bench/server_load.py --backend postgresql --clients 200 --duration-s 60

Exit status 0 only when: no error, health always within 1 s, the study received and processed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

PAGES = ("worklist", "study_page", "api_studies", "api_study")


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def _client(base: str, cookie: str, study_ids: list[int], stop: asyncio.Event, lat: dict, errors: list,
                  idx: int) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base, cookies={"neurorad_session": cookie}, timeout=300.0,
                                 follow_redirects=False) as c:
        k = idx
        while not stop.is_set():
            sid = study_ids[k % len(study_ids)]
            k += 1
            pages = [("worklist", "/worklist?status=all"), ("study_page", f"/studies/{sid}"),
                     ("api_studies", "/api/studies?limit=50"), ("api_study", f"/api/studies/{sid}")]
            first = idx % len(pages)  # clients start on different pages: every page is sampled
            for page, url in pages[first:] + pages[:first]:
                if stop.is_set():
                    return
                t0 = time.perf_counter()
                try:
                    r = await c.get(url)
                    ok = r.status_code == 200
                    why = f"HTTP {r.status_code}"
                except Exception as exc:  # noqa: BLE001 - every transport error counts
                    ok, why = False, type(exc).__name__
                dt = time.perf_counter() - t0
                lat[page].append(dt)
                if not ok:
                    errors.append((page, why))


_PROBE = """
import json, sys, time, os
import httpx
base, out_path, stop_path = sys.argv[1:4]
with httpx.Client(base_url=base, timeout=5.0) as c, open(out_path, "w") as out:
    while not os.path.exists(stop_path):
        t0 = time.perf_counter()
        try:
            r = c.get("/api/health")
            ok = r.status_code == 200 and r.json().get("database") is True
        except Exception:
            ok = False
        out.write(json.dumps([time.perf_counter() - t0, ok, time.time()]) + "\\n")
        out.flush()
        time.sleep(0.25)
"""


def _start_probe(base: str, root: Path) -> tuple[subprocess.Popen, Path, Path]:
    """The health probe runs in a process of its own, so that the load generator's busy event
    loop does not add to the latency it measures."""
    out, stop = root / "health.jsonl", root / "health.stop"
    proc = subprocess.Popen([sys.executable, "-c", _PROBE, base, str(out), str(stop)])
    return proc, out, stop


def _read_probe(out: Path, t_start: float, slow: list) -> list:
    rows = []
    for line in out.read_text().splitlines():
        try:
            rows.append(tuple(json.loads(line))[:2])
            if rows[-1][0] > 1.0:
                slow.append(round(json.loads(line)[2] - t_start, 1))
        except ValueError:
            pass
    return rows


async def _watch_study(base: str, token_cookie: str, sent_at: list, stop: asyncio.Event, out: dict) -> None:
    """Poll the API (with one of the sessions) for the sent study until it is processed."""
    import httpx

    async with httpx.AsyncClient(base_url=base, cookies={"neurorad_session": token_cookie}, timeout=30.0) as c:
        while not stop.is_set():
            await asyncio.sleep(1.0)
            if not sent_at:
                continue
            try:
                rows = (await c.get("/api/studies?limit=5")).json()
            except Exception:  # noqa: BLE001
                continue
            new = [r for r in rows if not r["study_uid"].startswith("2.25.9")]
            if new:
                out.setdefault("received_s", time.perf_counter() - sent_at[0])
                out["state"] = new[0]["state"]
                out["n_instances"] = new[0]["n_instances"]
                if new[0]["state"] in ("needs_review", "failed"):
                    out.setdefault("processed_s", time.perf_counter() - sent_at[0])


def _send_study(files: list[Path], port: int) -> subprocess.Popen:
    from _serve import SENDER_AET

    return subprocess.Popen(["storescu", "-aec", "NEURORAD", "-aet", SENDER_AET, "127.0.0.1", str(port),
                             *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def _run(args, base: str, cookies: list[str], study_ids: list[int], files: list[Path], dicom_port: int) -> dict:
    stop = asyncio.Event()
    lat: dict[str, list[float]] = {p: [] for p in PAGES}
    errors: list = []
    health: list = []
    study: dict = {}
    sent_at: list = []
    probe, probe_out, probe_stop = _start_probe(base, args.root)
    tasks = [asyncio.create_task(_client(base, ck, study_ids, stop, lat, errors, i)) for i, ck in enumerate(cookies)]
    tasks.append(asyncio.create_task(_watch_study(base, cookies[0], sent_at, stop, study)))
    t0, t_wall0 = time.perf_counter(), time.time()
    await asyncio.sleep(5.0)
    sent_wall = time.time()
    proc = _send_study(files, dicom_port)
    sent_at.append(time.perf_counter())
    while True:
        await asyncio.sleep(0.5)
        el = time.perf_counter() - t0
        if proc.poll() is not None and "storescu_rc" not in study:
            study["storescu_rc"] = proc.returncode
            study["storescu_s"] = time.perf_counter() - sent_at[0]
            if proc.returncode != 0:
                study["storescu_err"] = proc.stderr.read()[-2000:]
        if (el >= args.duration_s and "processed_s" in study) or el >= args.max_s:
            break
    stop.set()
    probe_stop.touch()
    probe.wait(30)
    slow_at: list = []
    health.extend(_read_probe(probe_out, t_wall0, slow_at))
    study["sent_at_s"] = round(sent_wall - t_wall0, 1)
    await asyncio.wait(tasks, timeout=150)
    if proc.poll() is None:
        proc.kill()
    wall = time.perf_counter() - t0
    n = sum(len(v) for v in lat.values())
    out = {
        "backend": args.backend, "clients": args.clients, "studies_seeded": args.studies, "wall_s": round(wall, 1),
        "requests": n, "throughput_rps": round(n / wall, 1), "errors": len(errors),
        "error_kinds": sorted({f"{p}: {w}" for p, w in errors})[:20],
        "latency_s": {p: {"n": len(v), "p50": _pct(v, 0.5), "p95": _pct(v, 0.95), "p99": _pct(v, 0.99),
                          "max": max(v) if v else None} for p, v in lat.items()},
        "all_pages_s": {"p50": _pct(sum(lat.values(), []), 0.5), "p95": _pct(sum(lat.values(), []), 0.95)},
        "health": {"n": len(health), "max_s": max((h for h, _ in health), default=None),
                   "p95_s": _pct([h for h, _ in health], 0.95), "failures": sum(1 for _, ok in health if not ok),
                   "over_1s": sum(1 for h, _ in health if h > 1.0), "over_1s_at_s": slow_at},
        "study": study, "instances_sent": len(files),
    }
    for v in out["latency_s"].values():
        for k in ("p50", "p95", "p99", "max"):
            v[k] = None if v[k] is None else round(v[k], 3)
    for k in ("p50", "p95"):
        out["all_pages_s"][k] = round(out["all_pages_s"][k], 3) if out["all_pages_s"][k] is not None else None
    out["health"]["max_s"] = round(out["health"]["max_s"] or 0, 3)
    out["health"]["p95_s"] = round(out["health"]["p95_s"] or 0, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--studies", type=int, default=60, help="studies seeded before the run")
    ap.add_argument("--slices", type=int, default=24, help="instances of the study sent during the run")
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--max-s", type=float, default=300.0, help="hard stop")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    from _serve import served

    from tests.server.dicomdata import write_series

    if shutil.which("storescu") is None:
        print("DCMTK storescu is required", file=sys.stderr)
        return 2
    with served(args.backend, args.studies, args.clients) as srv:
        files = write_series(srv.root / "send", "FLAIR", n_slices=args.slices, size=64)
        args.root = srv.root
        out = asyncio.run(_run(args, srv.base, srv.cookies, srv.study_ids, files, srv.dicom_port))
        log_text = srv.log_text()
        out["server_log_locked"] = log_text.count("database is locked")
        out["server_log_tracebacks"] = log_text.count("Traceback")
        out["machine"] = {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    st = out["study"]
    ok = (out["errors"] == 0 and out["health"]["over_1s"] == 0 and out["health"]["failures"] == 0
          and st.get("storescu_rc") == 0 and st.get("state") == "needs_review"
          and st.get("n_instances") == args.slices)
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
