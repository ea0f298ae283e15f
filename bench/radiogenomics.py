"""Benchmark of the radiogenomics protocol (prints figures; run: .venv/bin/python bench/radiogenomics.py).

The full protocol of the radiogenomics NB paper on a simulated cohort shaped like its own
(108 patients x 20,000 genes; IDH 85/23, 1p/19q 27/81, ATRX 43/65): 100 stratified 80/20 splits
x 3 targets x 6 DER sizes {10, 20, 30, 50, 100, 150} x all 6 classifiers (RadiogenomicsNB, NBLDA,
PLDA, VoomNSC, RF-genomics, RF-radiogenomics), splits in 2 processes. Target <= 120 s on a
2-core machine (aim 60 s).

Wall time on a shared machine depends on what else runs; the bench also prints the CPU time
spent in the workers (process time, summed) and what it means on 2 idle cores.

Compared in the same run: the cost of one split's DE step on the fast path in compiled kernels
(what the protocol uses), the same in numpy, and the exact edgeR mapping, and
one split's share of DE vs classifiers, and each classifier's CPU (both random-forest backends).

Options: ``--splits N`` (default 100), ``--jobs J`` (2), ``--rf-trees T`` (50), ``--genes G`` (20000),
``--rf-backend numba|sklearn`` (numba; sklearn is the reference, ~0.7 s more per split).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--splits", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rf-trees", type=int, default=50)
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--rf-backend", default="numba", choices=("numba", "sklearn"))
    args = ap.parse_args()


    from neurorad.genomics.counts import quantile_filter
    from neurorad.genomics.de import classic_de
    from neurorad.genomics.protocol import ProtocolConfig, evaluate_split, make_splits, run_protocol, summarize
    from neurorad.genomics.simulate import simulate_cohort

    t = time.perf_counter()
    co = simulate_cohort(n_samples=108, n_genes=args.genes, seed=0)
    print(f"simulate 108 x {args.genes}: {time.perf_counter() - t:.1f} s")
    x = co.counts.to_numpy().T
    rad = co.radiomics.to_numpy()

    # one split, single process: where the time goes, and exact vs fast pseudo-counts
    y = co.clinical["IDH"].to_numpy()
    tr, te = make_splits(y, 1, 0.2, 0)[0]
    keep = quantile_filter(x[tr].T)
    c = x[:, keep][tr].T.astype(np.float64)
    lib = x[tr].sum(axis=1).astype(np.float64)
    classic_de(c, y[tr], lib_size=lib, q2q="compiled", common_max_genes=1500, logfc=False)  # JIT warm-up / cache
    t = time.process_time()
    classic_de(c, y[tr], lib_size=lib, q2q="compiled", common_max_genes=1500, logfc=False)
    t_fast = time.process_time() - t
    t = time.process_time()
    classic_de(c, y[tr], lib_size=lib, q2q="wilson-hilferty", common_max_genes=1500, logfc=False)
    t_np = time.process_time() - t
    t = time.process_time()
    classic_de(c, y[tr], lib_size=lib)
    t_exact = time.process_time() - t
    print(f"one split, CPU of the DE step on {keep.sum()} genes x {tr.size} samples: fast compiled {t_fast:.2f} s, "
          f"fast numpy {t_np:.2f} s, exact edgeR pseudo-counts (numpy) {t_exact:.2f} s ({t_exact / t_fast:.1f}x)")
    cfg1 = ProtocolConfig(n_splits=1, n_jobs=1, rf_n_estimators=args.rf_trees, rf_backend=args.rf_backend)
    t = time.process_time()
    evaluate_split(x, rad, y.astype(str), tr, te, cfg1, "mutant")
    t_split = time.process_time() - t
    print(f"one split, CPU of everything (DE + 6 classifiers x 6 sizes, RF {args.rf_trees} trees): {t_split:.2f} s "
          f"(DE {t_fast / t_split:.0%})")

    # per-classifier CPU of one split (DE ranking given), single process
    import sklearn

    from neurorad.genomics.classifiers import CLASSIFIERS

    de = classic_de(c, y[tr], lib_size=lib, q2q="compiled", common_max_genes=1500, logfc=False)
    xx = np.hstack([x[:, keep].astype(np.float64), rad])
    parts = []
    with sklearn.config_context(assume_finite=True):
        for name, cls in [*CLASSIFIERS.items(), ("RF-genomics[sklearn]", CLASSIFIERS["RF-genomics"]),
                          ("RF-radiogenomics[sklearn]", CLASSIFIERS["RF-radiogenomics"])]:
            p = {"n_radiomics": rad.shape[1], "q2q": "compiled"}
            if name.startswith("RF-"):
                p.update(n_estimators=args.rf_trees, n_jobs=1,
                         backend="sklearn" if name.endswith("[sklearn]") else args.rf_backend)
            t = time.process_time()
            if getattr(cls, "_per_gene_", False):
                big = cls(n_genes=150, **p).fit(xx[tr], y[tr], de_result=de)
                for k in (10, 20, 30, 50, 100, 150):
                    big.submodel(k).predict(xx[te])
            else:
                for k in (10, 20, 30, 50, 100, 150):
                    cls(n_genes=k, **p).fit(xx[tr], y[tr], de_result=de).predict(xx[te])
            parts.append(f"{name} {time.process_time() - t:.2f}")
    print("one split, CPU s per classifier over the 6 DER sizes: " + ", ".join(parts))

    cfg = ProtocolConfig(n_splits=args.splits, n_jobs=args.jobs, rf_n_estimators=args.rf_trees,
                         rf_backend=args.rf_backend)
    # warm the worker pool (process start, imports, numba cache loads) outside the timed loop
    run_protocol(x, co.clinical["IDH"].to_numpy(), rad, ProtocolConfig(n_splits=2 * args.jobs, n_jobs=args.jobs,
                                                                        rf_backend=args.rf_backend))
    load0 = os.getloadavg()[0]
    parent0 = time.process_time()
    t0 = time.perf_counter()
    out = {}
    cpu_total = 0.0
    for target in ("IDH", "1p19q", "ATRX"):
        t = time.perf_counter()
        res = run_protocol(x, co.clinical[target].to_numpy(), rad, cfg)  # the protocol itself, splits in chunks
        cpu = res.attrs["worker_cpu_s"]
        cpu_total += cpu
        out[target] = res
        print(f"{target}: {args.splits} splits x 6 sizes x 6 classifiers = {len(res)} rows in "
              f"{time.perf_counter() - t:.1f} s wall, {cpu:.1f} s CPU in the workers "
              f"({cpu / args.splits:.3f} s per split)")
    total = time.perf_counter() - t0
    parent = time.process_time() - parent0
    load1 = os.getloadavg()[0]
    print(f"FULL PROTOCOL: {total:.1f} s wall on {args.jobs} processes (target <= 120 s, aim 60 s); "
          f"worker CPU {cpu_total:.1f} s -> {cpu_total / args.jobs:.1f} s on {args.jobs} idle cores "
          f"(+ {parent:.1f} s CPU in the parent: dispatch, results); "
          f"load average {load0:.1f} -> {load1:.1f} on a {os.cpu_count()}-core machine")
    for target, res in out.items():
        s = summarize(res)
        s = s[(s.metric == "balanced_accuracy") & (s.n_genes == 50)].set_index("classifier")
        print(f"  {target} balanced accuracy at 50 DERs: "
              + ", ".join(f"{k} {r['mean']:.3f}±{r['sd']:.3f}" for k, r in s.iterrows()))


if __name__ == "__main__":
    main()
