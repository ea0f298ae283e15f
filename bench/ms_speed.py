"""Speed of the MS workflow end to end on a 1 mm^3 pair of about 256 x 256 x 176 voxels.

Runs the default (fast) engines: deepbet + elastix rigid, then, in the same run, the slow
engines for comparison on the same single pair, once: HD-BET accurate (5-fold ensemble) + ANTs
rigid when ANTsPy is installed, else SimpleITK regular-step gradient descent (ANTsPy is not
installable here: its wheel would downgrade numpy/scipy, so the slow column uses SimpleITK).
The slow column is dominated by HD-BET accurate (5 folds x 8 test-time mirrors per image on
CPU); ``--slow-brain hdbet`` (1 fold) gives a shorter comparison.
Prints the seconds of each step. Target (issue 10): <= 20 s median per 1 mm pair on 2 cores; the
published CAD took 5.5 min per patient on a 4-core CPU. ``--pairs N`` times the default engines
on N different held-out pairs (seeds 5, 6, ...) and prints the median; ``--compare-sequential``
adds a column with the two time points' brain extraction and N4 run one after the other (before
issue 10) instead of concurrently. The atlas registration is stored per image content and reused
by a patient's later comparisons (``MSConfig.atlas_reuse``): ``--atlas-cold`` clears that store
first so every pair pays it (a patient's first comparison).

``--warm`` first imports what the workflow declares in ``Workflow.preload`` (the pipeline, deepbet and
torch, ITK-elastix's lazily loaded modules), untimed, as a worker's job process finds them: its jobs
fork from a server process that imported them once. Without it the process is cold, like a one-off
``neurorad ms-lesions`` run.

Wall and CPU seconds (all threads of the process) are printed per step: on a shared machine the
wall time is inflated by other load, the CPU time much less.

``--job-process`` also times the pairs as the platform's worker runs jobs, in processes forked from a forkserver
that preloaded the worker's modules and the workflow's ``preload``: each pair in a fresh process of its own
(``jobs_per_process = 1``: every job pays a process's first-run costs, the first pair of every process being the
slowest), then one reused process that runs the last pair (its first job) and then every pair (later jobs, as the
default ``jobs_per_process`` runs them).

``--platform`` times what a platform job does, which the columns above do not: the inputs are DICOM series
folders (read and converted in the load step, instead of arrays in memory), the workflow runs through
``neurorad.workflows.runner.execute`` with the platform's report, DICOM objects (SEG, SR, encapsulated PDF,
secondary captures, referencing the follow-up's own DICOM instead of a series synthesised from arrays) and key
images, all in one reused job process; each pair as a patient's first comparison (the atlas registration is
computed) and as a later one (it is reused), the later one alternated with the bench's path in the same process
(the fair comparison of the two on a machine whose speed drifts).

``--compare-hugepages`` runs each pair of ``--pairs`` twice more in the same process, with NumPy's huge-page
advice on (NumPy's default) and off (what ``neurorad.runtime`` sets where the kernel's transparent-huge-page
``defrag`` would compact synchronously), order alternating per pair. ``--compare-config KEY=VALUE[;KEY=VALUE]`` does
the same with the default ``MSConfig`` against one with those fields changed (e.g. ``elastix_iterations=250``, tried
and not adopted: docs/ms-lesions-log.md); separate several with ``;`` when a value holds commas.

``--compare-malloc ROUNDS`` times the default engines in child processes with ``neurorad.runtime``'s allocator
setting (glibc keeps freed memory: ``NEURORAD_MALLOC=keep``, the default) and with glibc's defaults
(``NEURORAD_MALLOC=glibc``), alternating, and prints each one's median and its processes' system CPU, page faults
and peak resident size.

Usage: ``python bench/ms_speed.py [--compare-malloc ROUNDS] [--skip-slow] [--compare-before] [--compare-sequential]
[--job-process] [--platform] [--compare-hugepages] [--compare-config K=V] [--pairs N] [--threads N] [--warm]``
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def clinical_grid(vol, shape=(256, 256, 176)):  # noqa: ANN001, ANN201 - Volume in, Volume out
    """Pad/crop a 1 mm phantom to a typical clinical 3D FLAIR matrix (field of view grows, voxels unchanged)."""
    from neurorad.image.volume import Volume

    data = np.zeros(shape, np.float32)
    src = np.asarray(vol.data, np.float32)
    lo_src, lo_dst, n = [], [], []
    for s, d in zip(src.shape, shape, strict=True):
        if s <= d:
            lo_src.append(0)
            lo_dst.append((d - s) // 2)
            n.append(s)
        else:
            lo_src.append((s - d) // 2)
            lo_dst.append(0)
            n.append(d)
    data[lo_dst[0]:lo_dst[0] + n[0], lo_dst[1]:lo_dst[1] + n[1], lo_dst[2]:lo_dst[2] + n[2]] = \
        src[lo_src[0]:lo_src[0] + n[0], lo_src[1]:lo_src[1] + n[1], lo_src[2]:lo_src[2] + n[2]]
    aff = vol.affine.copy()
    shift = np.asarray(lo_src) - np.asarray(lo_dst)
    aff[:3, 3] = vol.affine[:3, :3] @ shift + vol.affine[:3, 3]
    return Volume(data, aff, dict(vol.metadata))


def _jobs(pairs: list, threads: int, conn) -> None:  # noqa: ANN001 - a Pipe end
    """Pairs one after the other in this job process (``job_process_times``): each pair's wall seconds go back
    through ``conn`` as soon as it ends."""
    import torch

    torch.set_num_threads(threads)
    from neurorad.pipelines.ms_lesions import run_ms_lesions

    for b, f in pairs:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            run_ms_lesions(b, f, Path(d) / "out")
            wall = time.perf_counter() - t0
        conn.send((wall, _resident_mb()))
    conn.close()


def _resident_mb() -> float:
    """Resident memory of this process now (MB; Linux /proc, else NaN): what a reused job process keeps."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _in_job_process(target, batch: list, threads: int) -> list:  # noqa: ANN001 - _jobs or _platform_jobs
    """Run ``target(batch, threads, conn)`` in ONE job process forked, as the worker's are, from a forkserver that
    imported the worker's preload list (``neurorad.server.worker.job_preload_modules``); return what it sent back,
    one item per entry of ``batch``."""
    import multiprocessing as mp

    from neurorad.server.worker import job_preload_modules

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(job_preload_modules(["ms-lesions"]))
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(batch, threads, send))
    proc.start()
    send.close()
    got = [recv.recv() for _ in batch]
    proc.join()
    return got


def _platform_jobs(jobs: list, threads: int, conn) -> None:  # noqa: ANN001 - a Pipe end
    """Jobs one after the other in this job process (``platform_times``). ``("platform", baseline_dir,
    followup_dir)``: the platform's job body, the workflow run by ``neurorad.workflows.runner.execute`` on two
    DICOM series folders with the platform's report, DICOM objects and key images, as ``DataPlane.run_job`` runs
    it; ``("bench", baseline, followup)``: the bench's path, ``run_ms_lesions`` on the two arrays with its own
    report and synthesised DICOM. Each job's wall seconds, the seconds of its atlas step and the resident memory
    go back through ``conn``."""
    import torch

    torch.set_num_threads(threads)
    from neurorad.pipelines.ms_lesions import run_ms_lesions
    from neurorad.workflows import registry
    from neurorad.workflows.contract import WorkflowInputs
    from neurorad.workflows.runner import execute

    wf = registry.load("ms-lesions")
    for path, baseline, followup in jobs:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            if path == "bench":
                timings = run_ms_lesions(baseline, followup, Path(d) / "out").timings_s
            else:
                res = execute(wf, WorkflowInputs({"baseline_flair": Path(baseline), "flair": Path(followup)}),
                              Path(d) / "out")
                timings = {st.get("name"): st.get("seconds") for st in res.provenance.steps}
            wall = time.perf_counter() - t0
        conn.send((wall, float(timings.get("atlas") or float("nan")), _resident_mb()))
    conn.close()


def platform_times(pairs: list, threads: int, root: Path) -> tuple[list[float], list[float], list[float]]:
    """Wall seconds of platform jobs in ONE reused job process (forked from a forkserver that imported the
    worker's preload list), inputs as the platform hands them over: DICOM series folders (written under
    ``root`` before the clock starts). The process first runs the last pair (its first job, printed, not
    counted); then every pair from series with new UIDs, so nothing of it is stored yet (a patient's FIRST
    comparison: the atlas registration is computed); then each pair through the bench's path once (untimed: it
    stores the atlas registration of the arrays); then, per pair, the platform job again from the same folders
    (a patient's LATER comparison: the atlas registration is reused) and the bench's path, in alternating order,
    so the two paths are compared in one process under the same load. Returns (first comparisons, later
    comparisons, the bench's path), per pair."""
    from neurorad.image.dicom_series import write_dicom_series

    def folders(k: int, tag: str) -> tuple[str, Path, Path]:
        b, f = pairs[k]
        out = []
        for name, vol in (("baseline", b), ("followup", f)):
            # new random UIDs (no uid_seed): the folder's content hash is new, so no stored atlas registration of
            # an earlier run or job matches it
            out.append(Path(write_dicom_series(vol, root / f"{tag}{k}" / name, series_description=f"FLAIR {name}")))
        return "platform", out[0], out[1]

    n = len(pairs)
    firsts = [folders(k, "first") for k in range(n)]
    benches = [("bench", *pairs[k]) for k in range(n)]
    alternated = [job for k in range(n) for job in ((firsts[k], benches[k]) if k % 2 == 0 else
                                                    (benches[k], firsts[k]))]
    got = _in_job_process(_platform_jobs, [folders(n - 1, "warmup"), *firsts, *benches, *alternated], threads)
    (w0, a0, _), first = got[0], got[1:1 + n]
    pairs_got = got[1 + 2 * n:]
    later = [pairs_got[2 * k] if k % 2 == 0 else pairs_got[2 * k + 1] for k in range(n)]
    bench = [pairs_got[2 * k + 1] if k % 2 == 0 else pairs_got[2 * k] for k in range(n)]
    show = lambda rows: ", ".join(f"{w:.1f} (atlas {a:.1f})" for w, a, _ in rows)  # noqa: E731
    diff = ", ".join(f"{p[0] - b[0]:+.1f}" for p, b in zip(later, bench, strict=True))
    print(f"platform jobs (DICOM in, report and DICOM objects out) in one reused job process: its first job "
          f"{w0:.1f} s (atlas {a0:.1f}); a patient's first comparison, pairs 0-{n - 1}: {show(first)} s; a later "
          f"comparison (atlas reused): {show(later)} s; the bench's path alternated with it: {show(bench)} s; "
          f"platform minus bench per pair: {diff} s; "
          f"resident memory after each job: {', '.join(f'{m:.0f}' for *_, m in got)} MB", flush=True)
    return [w for w, _, _ in first], [w for w, _, _ in later], [w for w, _, _ in bench]


def job_process_times(pairs: list, threads: int) -> tuple[list[float], float, list[float]]:
    """Wall seconds of the pairs run as the worker runs jobs: in processes forked from a forkserver that
    imported the worker's list (``neurorad.server.worker.job_preload_modules``). Returns (each pair in a fresh
    process of its own, as ``jobs_per_process = 1``; the first job of a reused process, which runs the last pair;
    each pair as a later job of that process, as the default ``jobs_per_process`` runs it). The pairs are
    handed over before the clock starts; the process start is not counted, only ``run_ms_lesions``."""
    def in_process(batch: list) -> tuple[list[float], list[float]]:
        got = _in_job_process(_jobs, batch, threads)
        return [float(w) for w, _ in got], [float(m) for _, m in got]

    fresh = []
    for k, pair in enumerate(pairs):
        fresh.append(in_process([pair])[0][0])
        print(f"fresh job process, pair {k}: {fresh[-1]:.1f} s wall", flush=True)
    (first, *later), rss = in_process([pairs[-1], *pairs])
    print(f"reused job process: its first job (pair {len(pairs) - 1}) {first:.1f} s wall, then pairs 0-"
          f"{len(pairs) - 1}: {', '.join(f'{w:.1f}' for w in later)} s; resident memory after each job: "
          f"{', '.join(f'{m:.0f}' for m in rss)} MB", flush=True)
    return fresh, first, later


def _alternate(pairs: list, arms: dict[str, tuple]) -> dict[str, list[float]]:
    """Each pair run once per arm in this warm process, the arms' order alternating from pair to pair (the fair
    comparison on a machine whose speed drifts). ``arms``: name -> (MSConfig, setup callable or None)."""
    from neurorad.pipelines.ms_lesions import run_ms_lesions

    names = list(arms)
    walls: dict[str, list[float]] = {n: [] for n in names}
    for k, (bk, fk) in enumerate(pairs):
        for name in (names if k % 2 == 0 else names[::-1]):
            cfg, setup = arms[name]
            if setup is not None:
                setup()
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                run_ms_lesions(bk, fk, Path(d) / "out", cfg)
                walls[name].append(time.perf_counter() - t0)
            print(f"pair {k}, {name}: {walls[name][-1]:.1f} s wall", flush=True)
    return walls


def _paired_summary(title: str, walls: dict[str, list[float]]) -> str:
    (a, wa), (b, wb) = walls.items()
    diff = np.subtract(wb, wa)
    return (f"{title} over {len(wa)} pairs: {a} median {np.median(wa):.1f} s wall, {b} median {np.median(wb):.1f} s "
            f"wall; {b} minus {a} per pair {', '.join(f'{x:+.1f}' for x in diff)} s (median {np.median(diff):+.2f} s)")


def hugepage_comparison(pairs: list) -> None:
    """Each pair with NumPy's huge-page advice on and off (neurorad.runtime), alternating (:func:`_alternate`)."""
    from numpy._core import multiarray

    from neurorad.pipelines.ms_lesions import MSConfig
    from neurorad.runtime import thp_defrag_mode

    before = multiarray._get_madvise_hugepage()
    try:
        walls = _alternate(pairs, {"advice on": (MSConfig(), lambda: multiarray._set_madvise_hugepage(True)),
                                   "advice off": (MSConfig(), lambda: multiarray._set_madvise_hugepage(False))})
    finally:
        multiarray._set_madvise_hugepage(before)
    print(_paired_summary(f"NumPy huge-page advice (THP defrag: {thp_defrag_mode()})", walls)
          + f"; this run used {'on' if before else 'off'} elsewhere")


def config_overrides(text: str):  # noqa: ANN201 - MSConfig
    """The default MSConfig with ``key=value[;key=value]`` applied (``,`` separates too when no ``;`` is given):
    ``ms_sweep.apply_overrides`` with top-level fields, so values are read and checked as ``--set`` reads them."""
    from ms_sweep import apply_overrides

    from neurorad.pipelines.ms_lesions import MSConfig

    items = [t for t in text.split(";" if ";" in text else ",") if t.strip()]
    try:
        return apply_overrides(MSConfig(), items, top_level=True)
    except ValueError as exc:
        raise SystemExit(f"--compare-config: {exc}") from exc


def config_label(default, changed, prefix: str = "") -> str:  # noqa: ANN001 - MSConfig or a parameter group
    """The fields of ``changed`` that differ from ``default``, as ``--compare-config`` writes them: a parameter group's
    changed fields one by one (``candidate.isotropic_smoothing=True``), not the whole group's repr."""
    from dataclasses import fields, is_dataclass

    out = []
    for f in fields(default):
        a, b = getattr(default, f.name), getattr(changed, f.name)
        if a == b:
            continue
        if is_dataclass(a) and is_dataclass(b) and type(a) is type(b):
            out.append(config_label(a, b, f"{prefix}{f.name}."))
        else:
            out.append(f"{prefix}{f.name}={b!r}")
    return ", ".join(out) or "unchanged"


def config_comparison(pairs: list, changed) -> None:  # noqa: ANN001 - MSConfig
    """Each pair with the default MSConfig and with ``changed`` (:func:`config_overrides`), alternating
    (:func:`_alternate`)."""
    from neurorad.pipelines.ms_lesions import MSConfig

    default = MSConfig()
    walls = _alternate(pairs, {"default": (default, None), config_label(default, changed): (changed, None)})
    print(_paired_summary("MSConfig comparison", walls))


_PAIR_WALL = re.compile(r"^(?:fast: deepbet \+ elastix|pair \d+): ([0-9.]+) s wall", re.M)


def malloc_comparison(rounds: int, pairs: int, threads: int, warm: bool) -> int:
    """``--compare-malloc``: the allocator setting is process-wide and fixed before the first thread allocates
    (``neurorad.runtime.configure_malloc``), so each arm runs in a child process of this script (``--skip-slow
    --pairs N``), the two arms alternating. Per arm: every pair's wall seconds (median), and per process the
    system CPU, minor page faults and peak resident size (``wait4``'s usage of that child and what it waited for)."""
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--skip-slow", "--pairs", str(pairs), "--threads",
           str(threads)] + (["--warm"] if warm else [])
    walls: dict[str, list[float]] = {"keep": [], "glibc": []}
    for r in range(rounds):
        for mode in (("keep", "glibc") if r % 2 == 0 else ("glibc", "keep")):
            with tempfile.TemporaryFile("w+") as out:
                proc = subprocess.Popen(cmd, env={**os.environ, "NEURORAD_MALLOC": mode}, stdout=out)
                _, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                out.seek(0)
                text = out.read()
            if proc.returncode != 0:
                print(text)
                raise SystemExit(f"--compare-malloc: the NEURORAD_MALLOC={mode} run failed (exit {proc.returncode})")
            got = [float(x) for x in _PAIR_WALL.findall(text)]
            walls[mode] += got
            print(f"round {r} NEURORAD_MALLOC={mode}: pairs {' '.join(f'{w:.1f}' for w in got)} s wall; "
                  f"{ru.ru_stime:.1f} s system CPU, {ru.ru_minflt / 1e6:.2f} M page faults, "
                  f"peak {ru.ru_maxrss / 1024:.0f} MB", flush=True)
    for mode in ("keep", "glibc"):
        print(f"NEURORAD_MALLOC={mode}: median {np.median(walls[mode]):.2f} s wall per pair over {len(walls[mode])} "
              f"pairs ({rounds} processes)")
    print(f"keep minus glibc, median: {np.median(walls['keep']) - np.median(walls['glibc']):+.2f} s per pair")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-slow", action="store_true", help="only the default engines")
    ap.add_argument("--compare-before", action="store_true",
                    help="also run the settings before the speed work (4-level N4, 1 mm atlas, uncropped registration)")
    ap.add_argument("--slow-brain", default="hdbet-accurate", choices=["hdbet-accurate", "hdbet"],
                    help="brain engine of the slow column (hdbet-accurate: 5 folds x 8 mirrors, ~40x deepbet on CPU)")
    ap.add_argument("--threads", type=int, default=2, help="torch/ITK threads (default 2 = the machine)")
    ap.add_argument("--compare-sequential", action="store_true",
                    help="also run with the time points one after the other (concurrent_timepoints=False)")
    ap.add_argument("--job-process", action="store_true",
                    help="also time the pairs of --pairs as the worker runs jobs, in processes forked from a "
                         "forkserver that preloaded the worker's modules: each pair in a fresh process "
                         "(jobs_per_process 1), then all pairs as later jobs of one reused process (the default)")
    ap.add_argument("--platform", action="store_true",
                    help="also time the pairs of --pairs as PLATFORM jobs in one reused job process: DICOM series "
                         "folders in, the workflow through neurorad.workflows.runner.execute with the platform's "
                         "report, DICOM objects and key images, each pair as a patient's first comparison (atlas "
                         "registration computed) and as a later one (reused)")
    ap.add_argument("--compare-hugepages", action="store_true",
                    help="also time each pair of --pairs twice in this process, with NumPy's huge-page advice on "
                         "(NumPy's default) and off (neurorad.runtime's setting where the kernel's THP defrag "
                         "would stall), order alternating per pair; prints both medians and the paired difference")
    ap.add_argument("--compare-config", metavar="KEY=VALUE[;KEY=VALUE]",
                    help="also time each pair of --pairs twice in this process, with the default MSConfig and with "
                         "these fields changed (e.g. elastix_iterations=250, or fp.drift_ratio=0.45 as ms_sweep.py's "
                         "--set), order alternating per pair")
    ap.add_argument("--compare-malloc", type=int, default=0, metavar="ROUNDS",
                    help="instead, time the default engines (--pairs, --warm, --threads as given) in ROUNDS x 2 child "
                         "processes, alternately with neurorad.runtime's allocator setting (NEURORAD_MALLOC=keep, the "
                         "default) and with glibc's defaults (NEURORAD_MALLOC=glibc); prints each setting's median "
                         "wall per pair and its processes' system CPU, page faults and peak memory")
    ap.add_argument("--pairs", type=int, default=1, help="time the default engines on this many different pairs")
    ap.add_argument("--atlas-cold", action="store_true", help="do not reuse stored atlas registrations")
    ap.add_argument("--warm", action="store_true",
                    help="import the ms-lesions workflow's Workflow.preload modules first (untimed, printed), as a "
                         "worker's job process finds them (forkserver preload); default: a cold process")
    args = ap.parse_args(argv)
    if args.compare_malloc:
        return malloc_comparison(args.compare_malloc, args.pairs, args.threads, args.warm)
    if args.atlas_cold:
        os.environ["NEURORAD_CACHE"] = tempfile.mkdtemp(prefix="ms-speed-cache-")
    if args.warm:
        import importlib

        from neurorad.workflows.registry import preload_modules

        t0, c0 = time.perf_counter(), time.process_time()
        mods = preload_modules(["ms-lesions"])
        for m in mods:
            importlib.import_module(m)
        print(f"warm: preloaded {', '.join(mods)} in {time.perf_counter() - t0:.1f} s wall, "
              f"{time.process_time() - c0:.1f} s CPU (not counted below)", flush=True)
    import torch

    torch.set_num_threads(args.threads)
    from neurorad.phantom.cases import ms_pair
    from neurorad.pipelines.ms_lesions import MSConfig, run_ms_lesions

    pairs = []
    for k in range(max(1, args.pairs)):
        case = ms_pair(seed=5 + k, n_new=3, n_enlarging=1, misalign_deg=5.0, misalign_mm=5.0)
        pairs.append((clinical_grid(case.baseline_flair), clinical_grid(case.followup_flair)))
    b, f = pairs[0]
    print(f"pair: {b.spatial_shape} voxels of {b.spacing_mm} mm")
    try:
        import ants  # noqa: F401

        slow_reg = "ants"
    except ImportError:
        slow_reg = "sitk"
    configs = [("fast: deepbet + elastix", MSConfig())]
    if args.compare_sequential:
        configs.append(("sequential time points", replace(MSConfig(), concurrent_timepoints=False)))
    if args.compare_before:
        # the settings before the speed work: N4 with 4 levels, atlas registration at full
        # resolution, registration on the whole field of view (margin larger than any head)
        configs.insert(0, ("before: 4-level N4, 1 mm atlas", replace(
            MSConfig(), n4_iterations=(50, 50, 50, 50), atlas_spacing_mm=0.0, registration_margin_mm=1000.0)))
    if not args.skip_slow:
        # same single pair, once; slow engines for the two steps they replace (brain extraction,
        # follow-up registration and the atlas registration); everything else identical
        configs.append((f"slow: {args.slow_brain} + {slow_reg}",
                        replace(MSConfig(), brain_engine=args.slow_brain, registration_backend=slow_reg)))
    rows = []
    for name, cfg in configs:
        with tempfile.TemporaryDirectory() as d:
            t0, c0 = time.perf_counter(), time.process_time()
            res = run_ms_lesions(b, f, Path(d) / "out", cfg)
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows.append((name, total, res.timings_s, res.decision.active, len(res.lesions), res.cpu_s, cpu))
        steps_s = ", ".join(f"{k} {v:.1f}/{res.cpu_s.get(k, 0.0):.1f}" for k, v in res.timings_s.items()
                            if k != "total")
        print(f"{name}: {total:.1f} s wall, {cpu:.1f} s CPU (wall/CPU per step: {steps_s})", flush=True)
    steps = [k for k in rows[0][2] if k != "total"]
    print(f"{'step (wall/CPU s)':<18}" + "".join(f"{n[:30]:>32}" for n, *_ in rows))
    for s in steps:
        print(f"{s:<18}" + "".join(f"{f'{r[2].get(s, 0.0):.1f} / {r[5].get(s, 0.0):.1f}':>32}" for r in rows))
    print(f"{'TOTAL':<18}" + "".join(f"{f'{r[1]:.1f} / {r[6]:.1f}':>32}" for r in rows))
    print(f"{'active/lesions':<18}" + "".join(f"{str(r[3]) + ' / ' + str(r[4]):>32}" for r in rows))
    try:
        print(f"load average (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    except OSError:
        pass
    if len(pairs) > 1:
        walls, cpus = [rows[0][1]], [rows[0][6]]
        for k, (bk, fk) in enumerate(pairs[1:], start=1):
            with tempfile.TemporaryDirectory() as d:
                t0, c0 = time.perf_counter(), time.process_time()
                run_ms_lesions(bk, fk, Path(d) / "out", MSConfig())
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            print(f"pair {k}: {walls[-1]:.1f} s wall, {cpus[-1]:.1f} s CPU", flush=True)
        print(f"default engines over {len(pairs)} pairs: median {np.median(walls):.1f} s wall, "
              f"{np.median(cpus):.1f} s CPU")
    if args.compare_hugepages:
        hugepage_comparison(pairs)
    if args.compare_config:
        config_comparison(pairs, config_overrides(args.compare_config))
    if args.job_process:
        fresh, first, later = job_process_times(pairs, args.threads)
        print(f"job processes (forkserver with the worker's preload) over {len(pairs)} pairs: a fresh process per "
              f"job (jobs_per_process 1) median {np.median(fresh):.1f} s wall; later jobs of a reused process "
              f"(the default jobs_per_process) median {np.median(later):.1f} s wall; a process's first job "
              f"{first:.1f} s")
    if args.platform:
        with tempfile.TemporaryDirectory(prefix="ms-speed-dicom-") as d:
            first_cmp, later_cmp, bench_cmp = platform_times(pairs, args.threads, Path(d))
        print(f"platform jobs over {len(pairs)} pairs: a patient's first comparison median {np.median(first_cmp):.1f} "
              f"s wall; a later comparison (atlas reused) median {np.median(later_cmp):.1f} s wall; the bench's path "
              f"in the same process median {np.median(bench_cmp):.1f} s; platform minus bench median "
              f"{np.median(np.subtract(later_cmp, bench_cmp)):+.2f} s")
    print("target <= 20 s median per 1 mm pair on 2 cores (issue 10); published CAD: 5.5 min on 4 cores")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
