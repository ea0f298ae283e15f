"""The radiogenomics paper's evaluation protocol: repeated stratified 80/20 splits.

For each of ``n_splits`` seeded stratified splits: the quantile filter, the classic edgeR DE
ranking (common + tagwise dispersion, exact test) on the training rows only, then every
classifier at every DER size (top-k of that one ranking), scored on the test rows.
Metrics: accuracy, balanced accuracy, F1, sensitivity, specificity, PPV, NPV (positive class =
the mutation: ``mutant``, ``codeleted``, ... or the one given). Summaries are mean and SD over
splits; classifiers are compared by one-way ANOVA per metric and DER size (the paper's
Tables 2-4).

Speed: the DE step runs once per split; the pseudo-count mapping uses the Wilson-Hilferty
gamma quantile in compiled per-gene kernels (``q2q="compiled"``; see
:mod:`neurorad.genomics.dispersion` and :mod:`neurorad.genomics._kernels`); NB-family models are
fitted once at the largest DER size; the classifiers get the top DERs plus one column with the
rest of each sample's counts (``compact``: library sizes exact, results identical); random
forests are grown in numba (:mod:`neurorad.genomics.forest`); splits run in chunks in parallel
processes (joblib, one thread each).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from neurorad.errors import InputError
from neurorad.genomics.classifiers import CLASSIFIERS
from neurorad.genomics.counts import quantile_filter
from neurorad.genomics.de import DEResult, classic_de
from neurorad.genomics.radiomics import ordinal, thresholds

METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "f1", "sensitivity", "specificity", "ppv", "npv")
POSITIVE_NAMES = ("mutant", "mutation", "mut", "codeleted", "codel", "positive", "yes", "true", "1")
RADIOMIC_CLASSIFIERS = ("RadiogenomicsNB", "RF-radiogenomics")


@dataclass(frozen=True)
class ProtocolConfig:
    """Every parameter of the protocol in one place (the paper's values as defaults)."""

    n_splits: int = 100
    test_size: float = 0.2
    der_sizes: tuple[int, ...] = (10, 20, 30, 50, 100, 150)
    classifiers: tuple[str, ...] = tuple(CLASSIFIERS)
    seed: int = 0
    filter_quantile: float = 0.25
    q2q: str = "compiled"
    common_max_genes: int | None = 1500
    rf_n_estimators: int = 50
    rf_backend: str = "numba"  # "numba" (neurorad.genomics.forest) or "sklearn" (the reference)
    radiomics_threshold: str | None = None  # None, "mean" or "median" (cut points from training rows)
    n_jobs: int = 2
    compact: bool = True  # classifiers see the top DERs + one 'rest of the counts' column (same results, faster)
    extra: dict = field(default_factory=dict)


def positive_class(labels: np.ndarray, positive: str | None = None) -> str:
    """The class that counts as 'positive' for sensitivity/PPV."""
    levels = sorted(np.unique(labels).astype(str))
    if positive is not None:
        if positive not in levels:
            raise InputError(f"positive class {positive!r} is not a value of the target ({', '.join(levels)})")
        return positive
    for lv in levels:
        if lv.lower() in POSITIVE_NAMES:
            return lv
    return levels[-1]


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray, positive: str) -> dict[str, float]:
    """The seven metrics from the confusion matrix; an undefined ratio (0/0) is NaN."""
    t = np.asarray(y_true) == positive
    p = np.asarray(y_pred) == positive
    tp, tn = float(np.sum(t & p)), float(np.sum(~t & ~p))
    fp, fn = float(np.sum(~t & p)), float(np.sum(t & ~p))

    def div(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    sens, spec = div(tp, tp + fn), div(tn, tn + fp)
    ppv, npv = div(tp, tp + fp), div(tn, tn + fn)
    return {
        "accuracy": div(tp + tn, tp + tn + fp + fn),
        "balanced_accuracy": float(np.nanmean([sens, spec])) if not (np.isnan(sens) and np.isnan(spec)) else np.nan,
        "f1": div(2 * tp, 2 * tp + fp + fn),
        "sensitivity": sens, "specificity": spec, "ppv": ppv, "npv": npv,
    }


def make_splits(labels: np.ndarray, n_splits: int, test_size: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified shuffle splits; clear error when a class is too small to stratify."""
    from sklearn.model_selection import StratifiedShuffleSplit

    levels, counts = np.unique(labels, return_counts=True)
    if levels.size < 2:
        raise InputError(f"target has a single class ({levels[0]!r}); two are needed")
    small = [f"{lv!r} ({c})" for lv, c in zip(levels, counts, strict=True) if c < 2]
    if small:
        raise InputError(f"class {', '.join(small)} has fewer than 2 samples: a stratified split would leave a "
                         "training or test set without it")
    n_test = int(np.ceil(test_size * labels.size))
    if n_test < levels.size or labels.size - n_test < levels.size:
        raise InputError(f"{labels.size} samples are too few for a {test_size:.0%} stratified test split")
    sss = StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=seed)
    return [(tr, te) for tr, te in sss.split(np.zeros(labels.size), labels)]


def evaluate_split(
    counts: np.ndarray,
    radiomics: np.ndarray | None,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    cfg: ProtocolConfig,
    positive: str,
    split_id: int = 0,
) -> list[dict]:
    """One split: filter + DE on training rows, then all classifiers x DER sizes. ``counts`` samples x genes."""
    ytr, yte = labels[train], labels[test]
    if np.unique(ytr).size < 2:
        raise InputError(f"split {split_id}: the training set holds a single class ({ytr[0]!r})")
    keep = quantile_filter(counts[train].T, cfg.filter_quantile)
    c = counts[:, keep]
    lib_train = counts[train].sum(axis=1).astype(np.float64)
    de = classic_de(c[train].T, ytr, lib_size=lib_train, q2q=cfg.q2q, common_max_genes=cfg.common_max_genes,
                     logfc=False)
    n_rad = 0 if radiomics is None else radiomics.shape[1]
    sizes = [int(min(k, c.shape[1])) for k in cfg.der_sizes]
    if cfg.compact:
        # the classifiers read only the top-k DER columns and each sample's total over all gene
        # columns (library size; "total" size factors): the top max(k) DERs in rank order plus one
        # column holding the rest of each sample's counts give them exactly the same numbers
        # (integer sums are exact in float64) at 1% of the copying and input checking
        top = de.ranking[: max(sizes)]
        ct = c[:, top].astype(np.float64)
        rest = c.sum(axis=1, dtype=np.float64) - ct.sum(axis=1)
        gene_block = np.column_stack([ct, rest])
        de = DEResult(de.table, de.common_dispersion, np.r_[de.tagwise_dispersion[top], 0.0],
                      np.arange(top.size + 1))
    else:
        gene_block = c.astype(np.float64)
    if n_rad:
        rad = radiomics.astype(np.float64)
        if cfg.radiomics_threshold:
            cut = thresholds(rad[train], cfg.radiomics_threshold)
            rad = ordinal(rad, cut)
        X = np.hstack([gene_block, rad])
    else:
        X = gene_block
    Xtr, Xte = X[train], X[test]
    rows = []
    for name in cfg.classifiers:
        if name == "RF-radiogenomics" and not n_rad:
            continue
        cls = CLASSIFIERS[name]
        params: dict = {"n_radiomics": n_rad, "q2q": cfg.q2q}
        if name.startswith("RF-"):
            params.update(n_estimators=cfg.rf_n_estimators, random_state=split_id, n_jobs=1, backend=cfg.rf_backend)
        big = None
        if getattr(cls, "_per_gene_", False):  # one fit at the largest size, exact sub-models for the rest
            big = cls(n_genes=max(sizes), **params).fit(Xtr, ytr, de_result=de)
        for k, kk in zip(cfg.der_sizes, sizes, strict=True):
            est = big.submodel(kk) if big is not None else cls(n_genes=kk, **params).fit(Xtr, ytr, de_result=de)
            pred = est.predict(Xte)
            rows.append({"split": split_id, "classifier": name, "n_genes": k, **binary_metrics(yte, pred, positive)})
    return rows


def _worker(args: tuple) -> list[dict]:
    import sklearn
    from threadpoolctl import threadpool_limits

    # One BLAS/OpenMP thread per split. A context, not ``os.environ``: with ``n_jobs=1`` this runs in
    # the caller's process, whose later work (torch, elastix children) must keep all its threads.
    # The count matrix was checked once on input; skip sklearn's finiteness scan in every fit/predict.
    with threadpool_limits(limits=1), sklearn.config_context(assume_finite=True):
        return evaluate_split(*args)


def _chunk_worker(counts: np.ndarray, radiomics: np.ndarray | None, labels: np.ndarray,
                  chunk: list[tuple[np.ndarray, np.ndarray, int]], cfg: ProtocolConfig,
                  positive: str) -> tuple[list[dict], float]:
    """Several splits in one task (the data travel once per chunk); returns the rows and the CPU seconds."""
    import time

    t = time.process_time()
    rows: list[dict] = []
    for tr, te, i in chunk:
        rows.extend(_worker((counts, radiomics, labels, tr, te, cfg, positive, i)))
    return rows, time.process_time() - t


def run_protocol(
    counts: np.ndarray,
    labels: np.ndarray,
    radiomics: np.ndarray | None = None,
    cfg: ProtocolConfig | None = None,
    positive: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """All splits; ``counts`` samples x genes (raw), ``labels`` per sample. One row per split x classifier x size.

    With ``n_jobs > 1`` the splits run in chunks (about four per worker) in joblib's reusable
    process pool, so the count matrix is sent a few times per run, not once per split.
    ``attrs["worker_cpu_s"]`` of the result holds the CPU seconds spent in the splits.
    """
    cfg = cfg or ProtocolConfig()
    labels = np.asarray(labels).astype(str)
    counts = np.asarray(counts)
    unknown = [c for c in cfg.classifiers if c not in CLASSIFIERS]
    if unknown:
        raise InputError(f"unknown classifier(s) {unknown}; choose from {list(CLASSIFIERS)}")
    if np.unique(labels).size != 2:
        raise InputError(f"the protocol compares two classes; the target has {np.unique(labels).size}")
    pos = positive_class(labels, positive)
    splits = [(tr, te, i) for i, (tr, te) in enumerate(make_splits(labels, cfg.n_splits, cfg.test_size, cfg.seed))]
    rows: list[dict] = []
    cpu = 0.0
    if cfg.n_jobs == 1:
        for sp in splits:
            out, c = _chunk_worker(counts, radiomics, labels, [sp], cfg, pos)
            rows.extend(out)
            cpu += c
            if progress:
                progress(1)
    else:
        from joblib import Parallel, delayed

        n_chunks = min(len(splits), 4 * max(int(cfg.n_jobs), 1))
        chunks = [c for c in (splits[k::n_chunks] for k in range(n_chunks)) if c]
        par = Parallel(n_jobs=cfg.n_jobs, return_as="generator_unordered", backend="loky")
        for out, c in par(delayed(_chunk_worker)(counts, radiomics, labels, ch, cfg, pos) for ch in chunks):
            rows.extend(out)
            cpu += c
            if progress:
                progress(len({r["split"] for r in out}))  # splits in this chunk
    df = pd.DataFrame(rows).sort_values(["split", "classifier", "n_genes"]).reset_index(drop=True)
    df.attrs["positive"] = pos
    df.attrs["worker_cpu_s"] = cpu
    return df


def run_by_group(
    counts: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    radiomics: np.ndarray | None = None,
    cfg: ProtocolConfig | None = None,
    positive: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Sex-specific (or any grouping) models: the whole protocol within each group value."""
    groups = np.asarray(groups).astype(str)
    pos = positive_class(np.asarray(labels).astype(str), positive)
    out = []
    for g in sorted(np.unique(groups)):
        m = groups == g
        try:
            res = run_protocol(counts[m], np.asarray(labels)[m], None if radiomics is None else radiomics[m], cfg,
                               pos, progress)
        except InputError as exc:
            raise InputError(f"group {g!r}: {exc}") from None
        res.insert(0, "group", g)
        out.append(res)
    df = pd.concat(out, ignore_index=True)
    df.attrs["positive"] = pos
    return df


def summarize(results: pd.DataFrame, by: Sequence[str] = ("classifier", "n_genes")) -> pd.DataFrame:
    """Mean and SD of every metric per classifier x DER size (x group): long format."""
    keys = [k for k in ("group", *by) if k in results.columns]
    long = results.melt(id_vars=[*keys, "split"], value_vars=list(METRICS), var_name="metric")
    agg = long.groupby([*keys, "metric"], sort=True)["value"].agg(["mean", "std", "count"]).reset_index()
    return agg.rename(columns={"std": "sd", "count": "n_splits"})


def anova_between_classifiers(results: pd.DataFrame) -> pd.DataFrame:
    """One-way ANOVA across classifiers, per DER size (and group) and metric: F and p."""
    keys = [k for k in ("group", "n_genes") if k in results.columns]
    rows = []
    for key, sub in results.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        for m in METRICS:
            parts = [g[m].dropna().to_numpy() for _, g in sub.groupby("classifier")]
            parts = [p for p in parts if p.size > 1]
            if len(parts) >= 2 and any(np.ptp(p) > 0 for p in parts):
                r = stats.f_oneway(*parts)
                f, p = float(r.statistic), float(r.pvalue)
            else:
                f, p = float("nan"), float("nan")
            rows.append({**dict(zip(keys, key, strict=True)), "metric": m, "F": f, "p_value": p})
    return pd.DataFrame(rows)


def paper_table(summary: pd.DataFrame, anova: pd.DataFrame, n_genes: int, group: str | None = None) -> pd.DataFrame:
    """The paper's Table 2-4 layout: classifiers x metrics as 'mean +/- SD', last row the ANOVA p-value."""
    s = summary[summary["n_genes"] == n_genes]
    a = anova[anova["n_genes"] == n_genes]
    if group is not None:
        s, a = s[s["group"] == group], a[a["group"] == group]
    cell = s.assign(v=[f"{m:.3f} ± {d:.3f}" for m, d in zip(s["mean"], s["sd"].fillna(0.0), strict=True)])
    tab = cell.pivot(index="classifier", columns="metric", values="v")[list(METRICS)]
    tab.loc["ANOVA p"] = [f"{p:.3g}" for p in a.set_index("metric").reindex(list(METRICS))["p_value"]]
    return tab
