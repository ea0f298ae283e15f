"""``neurorad evaluate``: segmentation metrics, ensemble quality alarms and reader statistics.

All results are computed first and written at the end, each file atomically, so a failed run
leaves no half-written metrics.csv or report.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from neurorad.errors import InputError

log = logging.getLogger(__name__)
evaluate_app = typer.Typer(help="Evaluate segmentations, ensembles and reader studies (metrics.csv + HTML report).",
                           no_args_is_help=True)

_NII = (".nii.gz", ".nii")


def _case_name(p: Path) -> str:
    for ext in _NII:
        if p.name.endswith(ext):
            return p.name[: -len(ext)]
    return p.stem


def _list_folder(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError("folder not found", folder)
    files = {_case_name(p): p for p in sorted(folder.iterdir()) if p.name.endswith(_NII)}
    if not files:
        raise InputError("holds no NIfTI files (.nii or .nii.gz)", folder)
    return files


def _pairs(pred: Path, truth: Path | None, extra: dict[str, Path | None]) -> pd.DataFrame:
    """Case table with columns case, pred, truth and the extra columns (paths or NaN).

    ``pred`` is a folder (files matched by name with the other folders) or a CSV manifest with
    columns case, pred, truth and optionally prob, brain, site (relative paths resolve against
    the manifest's folder).
    """
    if pred.suffix.lower() == ".csv":
        try:
            df = pd.read_csv(pred, dtype={"case": str})
        except Exception as exc:
            raise InputError(f"not a readable CSV manifest ({exc})", pred) from exc
        missing = {"case", "pred", "truth"} - set(df.columns)
        if missing:
            raise InputError(f"manifest lacks column(s) {', '.join(sorted(missing))}", pred)
        for col in ("pred", "truth", "prob", "brain"):
            if col in df:
                df[col] = [None if pd.isna(v) else (pred.parent / str(v)) for v in df[col]]
        return df
    if truth is None:
        raise InputError("--truth is required when --pred is a folder")
    p, t = _list_folder(pred), _list_folder(truth)
    cases = sorted(set(p) & set(t))
    only = sorted(set(p) ^ set(t))
    if not cases:
        raise InputError(f"no case names shared with {truth}", pred)
    if only:
        log.warning("%d case file(s) present in only one of the folders are skipped", len(only))
    df = pd.DataFrame({"case": cases, "pred": [p[c] for c in cases], "truth": [t[c] for c in cases]})
    for col, folder in extra.items():
        if folder is not None:
            f = _list_folder(folder)
            df[col] = [f.get(c) for c in cases]
            if any(v is None for v in df[col]):
                raise InputError(f"lacks files for {sum(v is None for v in df[col])} case(s)", folder)
    return df


def _load(path: Path, ref=None, what: str = "image"):
    from neurorad.image.nifti import load_nifti

    vol = load_nifti(path)
    if len(vol.shape) != 3:
        raise InputError(f"{what} must be a 3D volume, got shape {vol.shape}", path)
    if ref is not None:
        if vol.shape != ref.shape:
            raise InputError(f"{what} shape {vol.shape} differs from the prediction's {ref.shape}", path)
        if not vol.same_grid(ref):
            raise InputError(f"{what} affine differs from the prediction's (not the same voxel grid)", path)
    return vol


def _binary(vol, path: Path, what: str) -> np.ndarray:
    from neurorad.evaluate._checks import as_binary

    try:
        return as_binary(vol.data, what)
    except InputError as exc:
        raise InputError(exc.problem, path) from exc


def _atomic_write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(text.encode() if isinstance(text, str) else text)
    os.replace(tmp, path)


def _csv_text(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, quoting=csv.QUOTE_MINIMAL, float_format="%.6g")


@evaluate_app.command("seg")
def seg(
    pred: Path = typer.Option(..., "--pred", help="Folder of predicted binary masks, or a CSV manifest "
                              "(columns case, pred, truth[, prob, brain, site])."),
    truth: Path | None = typer.Option(None, "--truth", help="Folder of ground-truth masks (same file names)."),
    prob: Path | None = typer.Option(None, "--prob", help="Folder of probability maps in [0, 1] (AUROC, calibration,"
                                     " lesion ROC)."),
    brain: Path | None = typer.Option(None, "--brain", help="Folder of brain masks: TN, specificity, AUROC and "
                                      "calibration are computed inside them."),
    site_table: Path | None = typer.Option(None, "--site-table", help="CSV with columns case, site (per-site "
                                           "summary; with --images also the quality-metric PCA by site)."),
    images: Path | None = typer.Option(None, "--images", help="Folder of the input images: MRQy quality metrics, "
                                       "their Spearman/BH correlation with performance."),
    robustness: Path | None = typer.Option(None, "--robustness", help="Long CSV (case, perturbation, level, "
                                           "metrics...) from a robustness sweep: curves with 95% bands."),
    intervals: Path | None = typer.Option(None, "--intervals", help="CSV (case, lo, hi[, y]) of prediction "
                                          "intervals: width violins and coverage."),
    coverage: float = typer.Option(0.40, "--coverage", help="Fraction of a true lesion that must be covered to "
                                   "count as detected."),
    brats: bool = typer.Option(False, "--brats", help="Add BraTS-style lesion-wise columns (brats_*)."),
    protocol: str = typer.Option("", "--protocol", help="A paper's lesion-wise protocol: 'wmh' (a true lesion is "
                                 "found when >= --coverage of it is predicted; PAPERS.md B4) or 'cmb' (a prediction "
                                 "is a true positive when it overlaps > 40% of a true lesion; C4). Adds "
                                 "protocol_summary.csv with the papers' headline figures."),
    connectivity: int = typer.Option(26, "--connectivity", help="Voxel connectivity defining a lesion: 6, 18 or 26."),
    fdr: float = typer.Option(0.25, "--fdr", help="Benjamini-Hochberg FDR for the quality correlations."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (metrics.csv, report.html, ...)."),
) -> None:
    """Per-patient segmentation metrics -> metrics.csv (one row per case) and report.html."""
    from neurorad.cli._progress import bar
    from neurorad.evaluate import report
    from neurorad.evaluate.calibration import reliability
    from neurorad.evaluate.case import METRIC_COLUMNS, evaluate_case, protocol_summary
    from neurorad.evaluate.lesions import PROTOCOLS, lesion_roc, lesion_scores, patient_level_rates

    if protocol and protocol not in PROTOCOLS:
        raise InputError(f"unknown --protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    if connectivity not in (6, 18, 26):
        raise InputError(f"--connectivity must be 6, 18 or 26, not {connectivity}")
    ptc = PROTOCOLS[protocol]["pred_truth_coverage"] if protocol else None
    table = _pairs(pred, truth, {"prob": prob, "brain": brain})
    rows, lesion_results = [], []
    pooled_p, pooled_y = [], []
    with bar("evaluating cases", len(table)) as advance:
        for rec in table.itertuples(index=False):
            pv = _load(Path(rec.pred), what="prediction")
            tv = _load(Path(rec.truth), pv, "truth")
            pr = br = None
            if getattr(rec, "prob", None) is not None and not pd.isna(rec.prob):
                pvol = _load(Path(rec.prob), pv, "probability map")
                from neurorad.evaluate._checks import check_probability

                try:
                    pr = check_probability(pvol.data)
                except InputError as exc:
                    raise InputError(exc.problem, rec.prob) from exc
            if getattr(rec, "brain", None) is not None and not pd.isna(rec.brain):
                br = _binary(_load(Path(rec.brain), pv, "brain mask"), Path(rec.brain), "brain mask")
            p_arr = _binary(pv, Path(rec.pred), "prediction")
            t_arr = _binary(tv, Path(rec.truth), "truth")
            row, les = evaluate_case(p_arr, t_arr, pv.spacing_mm, prob=pr, brain_mask=br, coverage=coverage,
                                     brats=brats, connectivity=connectivity, pred_truth_coverage=ptc)
            rows.append({"case": rec.case, **row})
            lesion_results.append(les)
            if pr is not None:
                m = br if br is not None else np.ones(pr.shape, bool)
                step = max(1, int(m.sum() // 200_000))  # pooled reliability diagram from a voxel subsample
                pooled_p.append(pr[m][::step])
                pooled_y.append(t_arr[m][::step])
            advance(1)
    metrics = pd.DataFrame(rows)
    cols = ["case", *METRIC_COLUMNS] + [c for c in metrics.columns if c not in METRIC_COLUMNS and c != "case"]
    metrics = metrics[cols]
    summary = pd.DataFrame([patient_level_rates(metrics["patient_outcome"].tolist())])
    sections: list[tuple[str, object]] = [
        ("Per-patient metrics", report.heatmap(metrics.set_index("case"), ["dice", "jaccard", "sensitivity", "ppv",
                                                                             "hd95_mm", "assd_mm", "lesion_f1"])),
        ("Patient-level detection", summary),
        ("Mean over patients", metrics.select_dtypes("number").mean().to_frame("mean").T),
    ]
    files: dict[str, str | bytes] = {}
    if pooled_p:
        rel = reliability(np.concatenate(pooled_p), np.concatenate(pooled_y))
        sections.append(("Reliability diagram (pooled voxels)", report.reliability_diagram(rel)))
        sc, lab = lesion_scores(lesion_results)
        roc = lesion_roc(sc, lab)
        if np.isfinite(roc["auc"]):
            sections.append(("Lesion-level ROC (mean lesion probability)",
                             report.roc_plot(roc["fpr"], roc["tpr"], roc["auc"])))
    sites = None
    if site_table is not None:
        st = pd.read_csv(site_table, dtype={"case": str})
        if not {"case", "site"} <= set(st.columns):
            raise InputError("site table needs columns case, site", site_table)
        sites = st.set_index("case")["site"]
        metrics.insert(1, "site", metrics["case"].map(sites))
        sections.append(("Per-site means", metrics.groupby("site")[list(METRIC_COLUMNS[:11])].mean()))
    elif "site" in table.columns:
        sites = table.set_index("case")["site"]
    if images is not None:
        from neurorad.quality.batch_effects import quality_performance_correlation, site_pca
        from neurorad.quality.image_metrics import image_quality_metrics

        imgs = _list_folder(images)
        qrows = []
        for c in metrics["case"]:
            if c not in imgs:
                raise InputError(f"lacks the image of a case ({len(qrows)} found before it)", images)
            iv = _load(imgs[c], what="image")
            qrows.append({"case": c, **image_quality_metrics(iv.data)})
        quality = pd.DataFrame(qrows).set_index("case")
        files["quality.csv"] = _csv_text(quality.reset_index())
        perf = metrics.set_index("case")[["dice", "hd95_mm", "sensitivity", "ppv"]]
        corr = quality_performance_correlation(quality, perf, alpha=fdr)
        files["quality_correlation.csv"] = _csv_text(corr)
        sections.append((f"Quality vs performance (Spearman, BH FDR {fdr})", corr.sort_values("q").head(20)))
        if sites is not None and sites.reindex(quality.index).notna().all() and len(quality) >= 3:
            pca = site_pca(quality, sites)
            files["quality_pca.csv"] = _csv_text(pca["scores"].reset_index())
            sections += [("Quality-metric PCA by site", report.pca_scatter(pca["scores"])),
                         ("ANOVA of components by site", pca["anova"])]
    if robustness is not None:
        from neurorad.evaluate.robustness import confidence_band

        rb = pd.read_csv(robustness)
        if not {"perturbation", "level", "dice"} <= set(rb.columns):
            raise InputError("robustness table needs columns perturbation, level, dice", robustness)
        band = confidence_band(rb, "dice")
        sections.append(("Robustness curves", report.robustness_curves(band, "dice")))
    if intervals is not None:
        from neurorad.evaluate.conformal import coverage as cov_fn

        iv = pd.read_csv(intervals, dtype={"case": str})
        if not {"case", "lo", "hi"} <= set(iv.columns):
            raise InputError("interval table needs columns case, lo, hi", intervals)
        widths = {str(c): (g["hi"] - g["lo"]).to_numpy() for c, g in iv.groupby("case")}
        sections.append(("Prediction-interval widths per patient", report.interval_violins(widths)))
        if "y" in iv:
            sections.append(("Empirical coverage", f"{cov_fn(iv['y'], iv['lo'], iv['hi']):.3f}"))
    if protocol:
        ps = pd.DataFrame([{"protocol": protocol, "connectivity": connectivity,
                            **protocol_summary(rows, lesion_results)}])
        files["protocol_summary.csv"] = _csv_text(ps)
        sections.insert(0, (f"Protocol '{protocol}' (the paper's headline figures)", ps.T.rename(columns={0: "value"})))
    files["metrics.csv"] = _csv_text(metrics)
    files["patient_level.csv"] = _csv_text(summary)
    files["report.html"] = report.html_report("neurorad segmentation evaluation", sections)
    for name, content in files.items():
        _atomic_write(out / name, content)
    typer.echo(f"evaluated {len(metrics)} case(s): mean Dice {metrics['dice'].mean():.4f}, "
               f"mean HD95 {metrics['hd95_mm'].replace(np.inf, np.nan).mean():.2f} mm -> {out / 'metrics.csv'}")


@evaluate_app.command("ensemble")
def ensemble(
    candidates: list[Path] = typer.Option(..., "--candidates", help="One folder per candidate model, each with "
                                          "one binary mask per case (same file names): --candidates A B C or "
                                          "--candidates A --candidates B ..."),
    more_candidates: list[Path] | None = typer.Argument(None, metavar="[DIR]...", help="Further candidate folders "
                                                        "(the rest of --candidates A B C).", show_default=False),
    truth: Path | None = typer.Option(None, "--truth", help="Folder of ground truth (alpha calibration, Dice)."),
    method: str = typer.Option("mav", "--method", help="Fusion: mav (weighted majority vote) or simple."),
    alpha: float = typer.Option(1.0, "--alpha", help="Threshold = median - alpha x MAD per candidate."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (alarms.csv, alpha_calibration.csv, "
                             "fused/, report.html)."),
) -> None:
    """Kofler et al. 2021 ensemble quality alarms: fusion, similarity, MAD thresholds, triage order."""
    from neurorad.cli._progress import bar
    from neurorad.evaluate import report
    from neurorad.image.nifti import save_nifti
    from neurorad.quality.alarms import alpha_calibration, ensemble_quality

    candidates = list(candidates) + list(more_candidates or [])
    if len(candidates) < 2:
        raise InputError("--candidates needs at least two folders")
    if method not in ("mav", "simple"):
        raise InputError(f"--method must be mav or simple, got {method!r}")
    folders = [_list_folder(c) for c in candidates]
    names = sorted(set.intersection(*[set(f) for f in folders]))
    if not names:
        raise InputError("the candidate folders share no case file names", candidates[0])
    tfiles = _list_folder(truth) if truth is not None else None
    cases, truths, refs = [], [], []
    for n in names:
        ref = _load(folders[0][n], what="candidate")
        cases.append([_binary(_load(f[n], ref, "candidate"), f[n], "candidate") for f in folders])
        refs.append(ref)
        if tfiles is not None:
            if n not in tfiles:
                raise InputError(f"lacks the truth of a case ({len(truths)} found before it)", truth)
            truths.append(_binary(_load(tfiles[n], ref, "truth"), tfiles[n], "truth"))
    with bar("ensemble similarities", len(cases)) as advance:
        table, sims, fused = ensemble_quality(cases, [r.spacing_mm for r in refs], method=method, alpha=alpha,
                                              truths=truths or None, progress=advance)
    table["case"] = names
    cal = alpha_calibration(sims, truth_dice=table["fusion_truth_dice"].to_numpy() if truths else None)
    sections: list[tuple[str, object]] = [("Review worklist (most alarms first)", table.sort_values("triage_rank")),
                                          ("Alpha calibration", cal)]
    if truths:
        sections.append(("Alarm count vs Dice", report.alarm_vs_dice(table["alarms"].to_numpy(),
                                                                     table["fusion_truth_dice"].to_numpy())))
    _atomic_write(out / "alarms.csv", _csv_text(table.sort_values("triage_rank")))
    _atomic_write(out / "alpha_calibration.csv", _csv_text(cal))
    for n, f, r in zip(names, fused, refs, strict=True):
        save_nifti(r.with_data(f.astype(np.uint8)), out / "fused" / f"{n}.nii.gz")
    _atomic_write(out / "report.html", report.html_report("neurorad ensemble quality alarms", sections))
    typer.echo(f"{len(names)} case(s), {len(candidates)} candidates: {int((table['alarms'] > 0).sum())} with alarms "
               f"-> {out / 'alarms.csv'}")


@evaluate_app.command("readers")
def readers_cmd(
    table: Path = typer.Option(..., "--table", help="CSV, one row per read: case, reader, rating "
                               "[, truth (0/1), call (0/1), phase, patient]."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (reader_stats.csv, tables, report.html)."),
) -> None:
    """Reader-study statistics: agreement (Cohen, Fleiss, Kendall's W), sensitivity, phase comparison."""
    from neurorad.evaluate import readers, report

    try:
        df = pd.read_csv(table)
    except Exception as exc:
        raise InputError(f"not a readable CSV ({exc})", table) from exc
    need = {"case", "reader", "rating"}
    if not need <= set(df.columns):
        raise InputError(f"needs columns {', '.join(sorted(need))}", table)
    stats_rows: list[dict] = []
    sections: list[tuple[str, object]] = []
    files: dict[str, str] = {}
    phases = sorted(df["phase"].unique(), key=str) if "phase" in df.columns else [None]
    for ph in phases:
        sub = df if ph is None else df[df["phase"] == ph]
        tag = "" if ph is None else f" (phase {ph})"
        suffix = "" if ph is None else f"_phase_{ph}"
        dis = readers.disagreement_table(sub)
        sections.append((f"Pairwise inter-reader agreement{tag}", dis))
        files[f"reader_agreement{suffix}.csv"] = _csv_text(dis)
        wide = sub.pivot_table(index="case", columns="reader", values="rating", aggfunc="first").dropna()
        if wide.shape[1] >= 2 and len(wide) >= 2:
            fk = readers.fleiss_kappa(readers.ratings_to_counts(wide.to_numpy()))
            stats_rows.append({"statistic": f"fleiss_kappa{suffix}", "value": fk["kappa"], "ci_low": fk["ci_low"],
                               "ci_high": fk["ci_high"], "p": fk["p"]})
            if pd.api.types.is_numeric_dtype(wide.dtypes.iloc[0]):
                kw = readers.kendalls_w(wide.to_numpy(float))
                stats_rows.append({"statistic": f"kendalls_w{suffix}", "value": kw["w"], "p": kw["p"]})
    if {"truth", "call"} <= set(df.columns):
        sens = readers.reader_sensitivity(df)
        files["reader_sensitivity.csv"] = _csv_text(sens)
        sections.append(("Per-reader sensitivity (Wilson 95% CI)", sens))
    if {"phase", "patient", "call", "truth"} <= set(df.columns) and df["phase"].nunique() == 2:
        d = df.assign(correct=(df["call"].astype(int) == df["truth"].astype(int)).astype(int))
        ph = readers.compare_phases(d, "correct", "phase", "patient", "reader", method="gee")
        stats_rows.append({"statistic": f"phase_odds_ratio_{ph['phase_test']}_vs_{ph['phase_ref']}",
                           "value": ph["odds_ratio"], "ci_low": ph["or_ci_low"], "ci_high": ph["or_ci_high"],
                           "p": ph["p"]})
    st = pd.DataFrame(stats_rows)
    sections.insert(0, ("Agreement and phase statistics", st))
    files["reader_stats.csv"] = _csv_text(st)
    files["report.html"] = report.html_report("neurorad reader study", sections)
    for name, content in files.items():
        _atomic_write(out / name, content)
    typer.echo(f"{df['reader'].nunique()} readers, {df['case'].nunique()} cases -> {out / 'reader_stats.csv'}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.add_typer(evaluate_app, name="evaluate")
