"""``neurorad radiogenomics``: differential expression, the classifier protocol, simulation."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from neurorad.errors import InputError

log = logging.getLogger(__name__)

rg = typer.Typer(help="RNA-seq counts and the radiogenomics NB glioma mutation classifier (with baselines).",
                 no_args_is_help=True)


def _load(counts: Path, clinical: Path, target: str):  # noqa: ANN202 - internal
    from neurorad.genomics.counts import align_samples, read_clinical, read_counts, target_labels

    table = read_counts(counts)
    clin = read_clinical(clinical)
    table, clin = align_samples(table, clin, counts, clinical)
    labels = target_labels(clin, target, clinical)
    return table, clin, labels


def _radiomics(path: Path, sample_ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    from neurorad.genomics.counts import read_clinical
    from neurorad.genomics.radiomics import FEATURES

    tab = read_clinical(path)
    missing = [s for s in sample_ids if s not in tab.index]
    if missing:
        raise InputError(f"radiomics table lacks {len(missing)} of {len(sample_ids)} patients of the count table", path)
    cols = [c for c in FEATURES if c in tab.columns] or [c for c in tab.columns
                                                          if pd.api.types.is_numeric_dtype(tab[c])]
    if not cols:
        raise InputError("radiomics table has no numeric feature columns", path)
    x = tab.loc[list(sample_ids), cols].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError(f"radiomics table has {int(np.sum(~np.isfinite(x)))} missing or infinite values", path)
    return x, cols


@rg.command("de")
def de_cmd(
    counts: Path = typer.Option(..., "--counts", help="Count table: genes x samples TSV/CSV (first column gene IDs) "
                                                       "or h5ad."),
    clinical: Path = typer.Option(..., "--clinical", help="CSV, one row per sample, first column the sample ID."),
    target: str = typer.Option(..., "--target", help="Two-class column of the clinical table, e.g. IDH."),
    out: Path = typer.Option(..., "--out", help="Output folder (de_genes.csv)."),
    filter_quantile: float = typer.Option(0.25, help="Keep genes whose mean count exceeds this quantile of gene "
                                                     "means (0 keeps all genes with a mean above the minimum)."),
) -> None:
    """edgeR classic DE for the whole cohort: de_genes.csv (gene, logFC, logCPM, PValue, FDR by p-value)."""
    from neurorad.genomics.counts import quantile_filter
    from neurorad.genomics.de import classic_de

    table, _, labels = _load(counts, clinical, target)
    if np.unique(labels).size != 2:
        raise InputError(f"the exact test compares two classes; {target!r} has {np.unique(labels).size}", clinical)
    keep = quantile_filter(table.counts, filter_quantile)
    lib = table.counts.sum(axis=0).astype(np.float64)
    res = classic_de(table.counts[keep], labels, table.gene_ids[keep], lib_size=lib)
    tab = res.table.rename(columns={"PValue": "p_value"})
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".de_genes-", suffix=".csv", dir=out)
    os.close(fd)
    tab.to_csv(tmp, index=False)
    os.replace(tmp, out / "de_genes.csv")
    levels = sorted(np.unique(labels))
    typer.echo(f"{keep.sum()} genes tested ({levels[1]} vs {levels[0]}), common dispersion "
               f"{res.common_dispersion:.4f}, {(tab['FDR'] < 0.05).sum()} at FDR < 0.05 -> {out / 'de_genes.csv'}")


@rg.command("run")
def run_cmd(
    counts: Path = typer.Option(..., "--counts", help="Count table (genes x samples TSV/CSV, or h5ad)."),
    clinical: Path = typer.Option(..., "--clinical", help="Clinical CSV (sample ID first; target, grouping)."),
    target: str = typer.Option(..., "--target", help="Target column: IDH, 1p19q, ATRX, ..."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    radiomics: Path | None = typer.Option(None, "--radiomics", help="CSV of radiomics features per sample (the 8 "
                                                                     "ratios, or all numeric columns)."),
    splits: int = typer.Option(100, help="Number of stratified 80/20 splits."),
    der_sizes: str = typer.Option("10,20,30,50,100,150", help="Comma-separated DER sizes."),
    classifiers: str = typer.Option("all", help="Comma-separated classifiers or 'all' (RadiogenomicsNB, NBLDA, "
                                                "PLDA, VoomNSC, RF-genomics, RF-radiogenomics)."),
    by: str | None = typer.Option(None, "--by", help="Fit and evaluate separately per value of this column "
                                                     "(e.g. sex)."),
    positive: str | None = typer.Option(None, help="Positive class (default: mutant/codeleted/... if present)."),
    seed: int = typer.Option(0, help="Seed of the splits."),
    jobs: int = typer.Option(2, help="Parallel processes over splits."),
    rf_trees: int = typer.Option(50, help="Trees per random forest."),
    rf_backend: str = typer.Option("numba", help="Random forest implementation: 'numba' (ours, fast) or "
                                                 "'sklearn' (scikit-learn's, the reference)."),
    radiomics_threshold: str | None = typer.Option(None, help="Turn radiomics into ordinal 0/1 at the training "
                                                              "'mean' or 'median'."),
    exact_de: bool = typer.Option(False, "--exact-de", help="Exact edgeR pseudo-counts in every split (slower)."),
) -> None:
    """The paper's protocol: repeated splits, all classifiers and DER sizes, metrics, ANOVA, figures, HTML."""
    from neurorad.cli._progress import bar
    from neurorad.genomics.classifiers import CLASSIFIERS
    from neurorad.genomics.protocol import ProtocolConfig, run_by_group, run_protocol
    from neurorad.genomics.report import write_outputs

    table, clin, labels = _load(counts, clinical, target)
    rad, rad_cols = (None, []) if radiomics is None else _radiomics(radiomics, table.sample_ids)
    try:
        sizes = tuple(int(s) for s in der_sizes.split(",") if s.strip())
    except ValueError:
        raise InputError(f"--der-sizes must be comma-separated integers, got {der_sizes!r}") from None
    names = tuple(CLASSIFIERS) if classifiers == "all" else tuple(c.strip() for c in classifiers.split(","))
    if radiomics_threshold not in (None, "mean", "median"):
        raise InputError("--radiomics-threshold must be mean or median")
    if rf_backend not in ("numba", "sklearn"):
        raise InputError(f"--rf-backend must be numba or sklearn, got {rf_backend!r}")
    cfg = ProtocolConfig(n_splits=splits, der_sizes=sizes, classifiers=names, seed=seed, n_jobs=jobs,
                         rf_n_estimators=rf_trees, rf_backend=rf_backend, radiomics_threshold=radiomics_threshold,
                         q2q="exact" if exact_de else "compiled",
                         common_max_genes=None if exact_de else 1500)
    x = table.counts.T
    if by is not None:
        if by not in clin.columns:
            raise InputError(f"grouping column {by!r} not in the clinical table", clinical)
        if clin[by].isna().any():
            raise InputError(f"grouping column {by!r} is missing for {int(clin[by].isna().sum())} sample(s)", clinical)
        groups = clin[by].astype(str).to_numpy()
        with bar(f"radiogenomics {target} by {by}", splits * np.unique(groups).size) as advance:
            res = run_by_group(x, labels, groups, rad, cfg, positive, advance)
    else:
        with bar(f"radiogenomics {target}", splits) as advance:
            res = run_protocol(x, labels, rad, cfg, positive, advance)
    meta = {"samples": table.n_samples, "genes": table.n_genes, "splits": splits, "DER sizes": list(sizes),
            "positive class": res.attrs.get("positive"), "radiomics": rad_cols or "none", "grouped by": by or "none",
            "DE pseudo-counts": cfg.q2q, "RF trees": rf_trees,
            "RF backend": rf_backend, "seed": seed}
    rad_anova = None
    if rad is not None:
        from neurorad.genomics.radiomics import anova_pvalues

        rad_anova = anova_pvalues(pd.DataFrame(rad, columns=rad_cols, index=table.sample_ids),
                                  pd.DataFrame({target: labels}, index=table.sample_ids))
    written = write_outputs(res, out, target, meta, rad_anova)
    (out / "run.json").write_text(json.dumps({**meta, "target": target, "classifiers": list(names)}, indent=2,
                                             default=str))
    best = res.groupby(["classifier", "n_genes"])["balanced_accuracy"].mean().idxmax()
    typer.echo(f"{len(res)} rows; best mean balanced accuracy: {best[0]} with {best[1]} DERs -> "
               f"{written['report.html']}")


@rg.command("simulate")
def simulate_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder: counts.tsv, clinical.csv, radiomics.csv, volumes.csv."),
    samples: int = typer.Option(108, help="Patients."),
    genes: int = typer.Option(20_000, help="Genes."),
    effect: float = typer.Option(1.0, help="Scale of all planted effects (0 = none)."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """A cohort shaped like the paper's (108 LGG patients, IDH/1p19q/ATRX, ~20,000 genes) with planted signal."""
    from neurorad.genomics.simulate import simulate_cohort, write_cohort

    if samples < 20 or genes < 200:
        raise InputError("simulate needs at least 20 samples and 200 genes")
    co = simulate_cohort(n_samples=samples, n_genes=genes, effect=effect, seed=seed)
    paths = write_cohort(co, out)
    truth = {t: [co.counts.index[i] for i in g] for t, g in co.truth["de_genes"].items()}
    (Path(out) / "truth.json").write_text(json.dumps({
        "de_genes": truth,
        "radiogenes": {t: [co.counts.index[i] for i in g] for t, g in co.truth["radiogenes"].items()},
    }, indent=1))
    typer.echo(f"{samples} samples x {genes} genes -> {paths['counts']}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.add_typer(rg, name="radiogenomics")
