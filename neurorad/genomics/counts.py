"""RNA-seq count tables: reading, validation, the paper's quantile filter and size factors.

A count table is genes x samples (rows = genes, the layout of edgeR, DESeq2 and the count
files of featureCounts/HTSeq). The classifiers follow scikit-learn and take the transpose
(samples x genes).

References
----------
- Quantile filter and total-count size factors: the radiogenomics negative-binomial paper
  (genes kept when their mean count exceeds the 0.25 quantile of all gene means), and
  Witten (2011) *Ann. Appl. Stat.* 5:2493 / Dong et al. (2016) *BMC Bioinformatics* 17:369
  for the total-count factor ``s_i = N_i / sum_train N``.
- Median-ratio factors: Anders & Huber (2010) *Genome Biology* 11:R106 (DESeq).
- Upper-quartile factors: Bullard et al. (2010) *BMC Bioinformatics* 11:94.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurorad.errors import InputError


@dataclass(frozen=True)
class CountTable:
    """Integer read counts, genes x samples, with their gene and sample identifiers."""

    counts: np.ndarray  # int64, shape (n_genes, n_samples)
    gene_ids: np.ndarray  # str, shape (n_genes,)
    sample_ids: np.ndarray  # str, shape (n_samples,)

    @property
    def n_genes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.counts.shape[1])

    def subset_samples(self, sample_ids: list[str] | np.ndarray) -> CountTable:
        pos = {s: i for i, s in enumerate(self.sample_ids)}
        idx = np.array([pos[s] for s in sample_ids], dtype=int)
        return CountTable(self.counts[:, idx], self.gene_ids, self.sample_ids[idx])

    def subset_genes(self, keep: np.ndarray) -> CountTable:
        return CountTable(self.counts[keep], self.gene_ids[keep], self.sample_ids)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.counts, index=pd.Index(self.gene_ids, name="gene_id"), columns=self.sample_ids)


def validate_counts(values: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Return the counts as int64 after checking they are finite non-negative integers.

    Raises :class:`InputError` naming the file and the first offending cell kind.
    """
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"count table must be a non-empty genes x samples matrix, got shape {arr.shape}", path)
    if arr.dtype.kind not in "iuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"count table holds non-numeric values ({exc})", path) from None
    arr_f = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr_f)):
        raise InputError(f"count table holds {int(np.sum(~np.isfinite(arr_f)))} missing or infinite values", path)
    if np.any(arr_f < 0):
        raise InputError(f"count table holds {int(np.sum(arr_f < 0))} negative counts; read counts must be >= 0", path)
    if np.any(arr_f != np.round(arr_f)):
        n_bad = int(np.sum(arr_f != np.round(arr_f)))
        raise InputError(
            f"count table holds {n_bad} non-integer values; give raw read counts, not normalised or "
            "transformed values (CPM, TPM, log)",
            path,
        )
    return arr_f.astype(np.int64)


def _check_ids(ids: np.ndarray, what: str, path: str | Path | None) -> np.ndarray:
    ids = np.asarray([str(x).strip() for x in ids], dtype=object)
    if any(s == "" or s.lower() == "nan" for s in ids):
        raise InputError(f"empty {what} identifier", path)
    uniq, counts = np.unique(ids, return_counts=True)
    dup = uniq[counts > 1]
    if dup.size:
        # gene IDs are not patient identifiers; sample IDs may be, so only count them
        detail = f": {', '.join(map(str, dup[:5]))}" if what == "gene" else ""
        raise InputError(f"{dup.size} duplicated {what} identifier(s){detail}", path)
    return ids.astype(str)


def counts_from_frame(frame: pd.DataFrame, path: str | Path | None = None) -> CountTable:
    """A validated :class:`CountTable` from a DataFrame indexed by gene, one column per sample."""
    genes = _check_ids(frame.index.to_numpy(), "gene", path)
    samples = _check_ids(frame.columns.to_numpy(), "sample", path)
    return CountTable(validate_counts(frame.to_numpy(), path), genes, samples)


def read_counts(path: str | Path) -> CountTable:
    """Read a count table: TSV/CSV/TXT (first column gene IDs, one column per sample) or h5ad.

    An ``.h5ad`` file holds samples as observations and genes as variables (AnnData's
    convention); it is transposed to genes x samples.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("count table not found", path)
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    try:
        if suffix == ".h5ad":
            import anndata

            ad = anndata.read_h5ad(path)
            x = ad.X.toarray() if hasattr(ad.X, "toarray") else np.asarray(ad.X)
            frame = pd.DataFrame(x.T, index=ad.var_names.astype(str), columns=ad.obs_names.astype(str))
        else:
            sep = "," if suffix.startswith(".csv") else "\t"
            frame = pd.read_csv(path, sep=sep, index_col=0)
    except InputError:
        raise
    except Exception as exc:  # parser errors of pandas/h5py
        raise InputError(f"cannot read count table ({type(exc).__name__}: {exc})", path) from None
    if frame.shape[1] == 0:
        raise InputError("count table has no sample columns (is the separator right? TSV or CSV expected)", path)
    return counts_from_frame(frame, path)


def read_clinical(path: str | Path) -> pd.DataFrame:
    """Read a clinical/radiomics table: CSV, one row per sample, first column the sample ID."""
    path = Path(path)
    if not path.exists():
        raise InputError("table not found", path)
    try:
        sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
        frame = pd.read_csv(path, sep=sep, index_col=0)
    except Exception as exc:
        raise InputError(f"cannot read table ({type(exc).__name__}: {exc})", path) from None
    frame.index = pd.Index(_check_ids(frame.index.to_numpy(), "sample", path), name="sample_id")
    return frame


def align_samples(
    table: CountTable,
    clinical: pd.DataFrame,
    counts_path: str | Path | None = None,
    clinical_path: str | Path | None = None,
) -> tuple[CountTable, pd.DataFrame]:
    """Put both tables in the same sample order; every count sample must have a clinical row.

    Clinical rows without counts are dropped (a clinical sheet often covers more patients).
    """
    missing = [s for s in table.sample_ids if s not in clinical.index]
    if missing:
        raise InputError(
            f"{len(missing)} of {table.n_samples} count samples have no row in the clinical table "
            f"{clinical_path or ''}; sample IDs must match exactly",
            counts_path,
        )
    return table, clinical.loc[list(table.sample_ids)]


def target_labels(clinical: pd.DataFrame, target: str, path: str | Path | None = None) -> np.ndarray:
    """The target column as strings; missing values are an error (not silently dropped)."""
    if target not in clinical.columns:
        raise InputError(f"target column {target!r} not in table (columns: {', '.join(map(str, clinical.columns))})",
                         path)
    col = clinical[target]
    if col.isna().any():
        raise InputError(f"target {target!r} is missing for {int(col.isna().sum())} sample(s); "
                         "remove them or fill the value", path)
    labels = col.astype(str).to_numpy()
    if np.unique(labels).size < 2:
        raise InputError(f"target {target!r} has a single class; two are needed", path)
    return labels


def quantile_filter(counts: np.ndarray, quantile: float = 0.25) -> np.ndarray:
    """Boolean mask of genes whose mean count exceeds the ``quantile`` of all gene means.

    ``counts`` is genes x samples. The paper keeps genes above the 0.25 quantile.
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    means = np.asarray(counts, dtype=np.float64).mean(axis=1)
    return means > np.quantile(means, quantile)


def _geometric_reference(train: np.ndarray) -> np.ndarray:
    """Per-gene geometric mean over training samples (genes with a zero get NaN, as DESeq)."""
    with np.errstate(divide="ignore"):
        logx = np.log(train.astype(np.float64))
    ref = logx.mean(axis=1)
    ref[~np.isfinite(ref)] = np.nan
    return ref


@dataclass(frozen=True)
class SizeFactorReference:
    """What test size factors need from the training data, and nothing more: the method, the
    training scale (sum of the raw training factors) and, for median-ratio, the per-gene log
    geometric mean of the training counts (an aggregate, as DESeq keeps). No sample's counts."""

    method: str
    scale: float
    log_geometric_mean: np.ndarray | None = None

    def raw(self, counts: np.ndarray) -> np.ndarray:
        """Unscaled factors of ``counts`` (genes x samples)."""
        x = np.asarray(counts, dtype=np.float64)
        if self.method == "total":
            return x.sum(axis=0)
        if self.method == "median-ratio":
            ref = self.log_geometric_mean
            ok = np.isfinite(ref)
            with np.errstate(divide="ignore"):
                lr = np.log(x[ok]) - ref[ok, None]
            lr[~np.isfinite(lr)] = np.nan
            return np.exp(np.nanmedian(lr, axis=0))
        if self.method == "upper-quartile":
            out = np.empty(x.shape[1])
            for i in range(x.shape[1]):
                nz = x[:, i][x[:, i] > 0]
                out[i] = np.quantile(nz, 0.75) if nz.size else 0.0
            return out
        raise ValueError(f"unknown size-factor method {self.method!r} (total, median-ratio, upper-quartile)")

    def factors(self, counts: np.ndarray) -> np.ndarray:
        """Size factors of ``counts`` (genes x samples) on the training scale."""
        return self.raw(counts) / self.scale


def fit_size_factors(train: np.ndarray, method: str = "total") -> tuple[np.ndarray, SizeFactorReference]:
    """Training size factors (summing to 1) and the :class:`SizeFactorReference` for test samples."""
    train = np.asarray(train, dtype=np.float64)
    if method not in ("total", "median-ratio", "upper-quartile"):
        raise ValueError(f"unknown size-factor method {method!r} (total, median-ratio, upper-quartile)")
    ref = None
    if method == "median-ratio":
        ref = _geometric_reference(train)
        if not np.isfinite(ref).any():
            raise ValueError("median-ratio size factors need genes with no zero count in training")
    raw_train = SizeFactorReference(method, 1.0, ref).raw(train)
    # a sample without reads gets factor 0 (expected counts 0: it carries no information)
    scale = float(raw_train.sum())
    if scale <= 0:
        raise ValueError("training samples hold no reads")
    model = SizeFactorReference(method, scale, ref)
    return raw_train / scale, model


def size_factors(
    train: np.ndarray,
    test: np.ndarray | None = None,
    method: str = "total",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Size factors of training samples and of test samples relative to the training data.

    ``train``/``test`` are genes x samples. Methods:

    - ``"total"`` (the paper, Witten 2011, Dong et al. 2016): ``s_i = N_i / sum_{train} N``.
    - ``"median-ratio"`` (DESeq): median over genes of ``x_ij / geometric-mean_train(x_j)``.
    - ``"upper-quartile"``: 75th percentile of the sample's non-zero counts.

    All three are scaled so the training factors sum to 1 (the NBLDA/PLDA convention where
    ``s_i * g_j`` with ``g_j`` the training gene total is the expected count); test factors use
    the same reference and scale, so test samples never influence training quantities.
    (:func:`fit_size_factors` returns the reference itself, for fitted models.)
    """
    s_train, model = fit_size_factors(train, method)
    return s_train, (None if test is None else model.factors(test))
