"""Benchmark of the radiogenomics protocol (prints figures; run: .venv/bin/python bench/radiogenomics.py).

The full protocol of the radiogenomics NB paper on a simulated cohort shaped like its own
(108 patients x 20,000 genes; IDH 85/23, 1p/19q 27/81, ATRX 43/65): 100 stratified 80/20 splits
x 3 targets x 6 DER sizes {10, 20, 30, 50, 100, 150} x all 6 classifiers (RadiogenomicsNB, NBLDA,
PLDA, VoomNSC, RF-genomics, RF-radiogenomics), splits in 2 processes. Target <= 120 s on a
2-core machine (aim 60 s).

Compared in the same run: the cost of one split's DE step with the fast pseudo-counts
(Wilson-Hilferty gamma quantiles, what the protocol uses) against the exact edgeR mapping, and
one split's share of DE vs classifiers.

Options: ``--splits N`` (default 100), ``--jobs J`` (2), ``--rf-trees T`` (50), ``--genes G`` (20000).
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
    t = time.perf_counter()
    classic_de(c, y[tr], lib_size=lib, q2q="wilson-hilferty", common_max_genes=1500, logfc=False)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    classic_de(c, y[tr], lib_size=lib)
    t_exact = time.perf_counter() - t
    print(f"one split, DE step on {keep.sum()} genes x {tr.size} samples: fast {t_fast:.2f} s, "
          f"exact edgeR pseudo-counts {t_exact:.2f} s ({t_exact / t_fast:.1f}x)")
    cfg1 = ProtocolConfig(n_splits=1, n_jobs=1, rf_n_estimators=args.rf_trees)
    t = time.perf_counter()
    evaluate_split(x, rad, y.astype(str), tr, te, cfg1, "mutant")
    t_split = time.perf_counter() - t
    print(f"one split, everything (DE + 6 classifiers x 6 sizes, RF {args.rf_trees} trees): {t_split:.2f} s "
          f"(DE {t_fast / t_split:.0%})")

    cfg = ProtocolConfig(n_splits=args.splits, n_jobs=args.jobs, rf_n_estimators=args.rf_trees)
    t0 = time.perf_counter()
    out = {}
    for target in ("IDH", "1p19q", "ATRX"):
        t = time.perf_counter()
        res = run_protocol(x, co.clinical[target].to_numpy(), rad, cfg)
        out[target] = res
        print(f"{target}: {args.splits} splits x 6 sizes x 6 classifiers = {len(res)} rows in "
              f"{time.perf_counter() - t:.1f} s")
    total = time.perf_counter() - t0
    print(f"FULL PROTOCOL: {total:.1f} s on {args.jobs} processes (target <= 120 s, aim 60 s)")
    for target, res in out.items():
        s = summarize(res)
        s = s[(s.metric == "balanced_accuracy") & (s.n_genes == 50)].set_index("classifier")
        print(f"  {target} balanced accuracy at 50 DERs: "
              + ", ".join(f"{k} {r['mean']:.3f}±{r['sd']:.3f}" for k, r in s.iterrows()))


if __name__ == "__main__":
    main()
