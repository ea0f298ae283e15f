"""``neurorad cohort``: cohort tables from workflow results, Table 1, and prognostic nomograms."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from neurorad.errors import InputError

app = typer.Typer(help="Cohort toolkit: cohort table from result.json + clinical CSV, Table 1, logistic model, "
                       "nomogram, ROC/DeLong, calibration, decision curve (docs/cohort.md).", no_args_is_help=True)


def _read(path: Path):  # noqa: ANN202
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the cohort CSV ({err})", path) from err


@app.command("simulate")
def simulate_cmd(
    out: Path = typer.Option(..., "--out", help="CSV to write (every row has simulated=True)."),
    n: int = typer.Option(1094, help="Patients (the published cohort had 1,094)."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Write a SIMULATED cohort shaped like the published paired-CT ICH cohort (not patient data)."""
    from neurorad.cohort.simulate import simulate_ich_cohort

    df = simulate_ich_cohort(n, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    typer.echo(f"SIMULATED cohort: {len(df)} patients, expansion {100 * df.expansion.mean():.1f} %, "
               f"poor outcome {100 * df.poor_outcome.mean():.1f} % -> {out}")


@app.command("build")
def build_cmd(
    results: list[Path] = typer.Argument(..., help="result.json files, result folders, or folders of result "
                                                   "folders named by case_id."),
    clinical: Path = typer.Option(..., "--clinical", help="Clinical CSV with a case_id column."),
    out: Path = typer.Option(..., "--out", help="Cohort CSV to write."),
) -> None:
    """Join workflow results (one row per case, one column per quantity) to a clinical CSV."""
    from neurorad.cohort.table import build_cohort

    df = build_cohort(results, clinical)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    typer.echo(f"cohort: {len(df)} cases x {df.shape[1]} columns -> {out}")


@app.command("table1")
def table1_cmd(
    cohort: Path = typer.Argument(..., help="Cohort CSV."),
    columns: str = typer.Option(..., "--columns", help="Comma-separated variables."),
    group: str = typer.Option("", "--group", help="Grouping column (P values between groups)."),
    nonnormal: str = typer.Option("", "--nonnormal", help="Comma-separated continuous variables shown as median "
                                                          "[Q1,Q3] and tested with Kruskal-Wallis/Mann-Whitney."),
    out: Path = typer.Option(..., "--out", help="CSV to write (also printed)."),
) -> None:
    """Table 1 by group with tableone (counts (%), mean (SD) / median [IQR], chi-square/Fisher, t/ANOVA, Kruskal)."""
    from neurorad.cohort.table import table1

    df = _read(cohort)
    t = table1(df, [c.strip() for c in columns.split(",") if c.strip()], group or None,
               nonnormal=[c.strip() for c in nonnormal.split(",") if c.strip()])
    out.parent.mkdir(parents=True, exist_ok=True)
    t.to_csv(out)
    if "simulated" in df and df["simulated"].astype(bool).all():
        typer.echo("SIMULATED cohort")
    typer.echo(t.to_string())


@app.command("fit")
def fit_cmd(
    cohort: Path = typer.Argument(..., help="Cohort CSV."),
    outcome: str = typer.Option(..., "--outcome", help="0/1 outcome column, e.g. poor_outcome (GOS <= 3)."),
    candidates: str = typer.Option(..., "--candidates", help="Comma-separated candidate predictors; those with "
                                                             "univariable P < --alpha enter the model."),
    alpha: float = typer.Option(0.05, help="Selection threshold of the univariable screen."),
    n_boot: int = typer.Option(200, "--n-boot", help="Bootstrap resamples for optimism correction."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    out: Path = typer.Option(..., "--out", help="Output folder: nomogram.json, screen.csv, odds_ratios.csv, "
                                                "validation.json and the figures."),
) -> None:
    """Select predictors, fit the logistic model, draw the nomogram, ROC, calibration and decision curves."""
    from neurorad.cohort import figures
    from neurorad.cohort.model import fit_nomogram, screen, validate

    df = _read(cohort)
    cands = [c.strip() for c in candidates.split(",") if c.strip()]
    missing = [c for c in [outcome, *cands] if c not in df]
    if missing:
        raise InputError(f"cohort has no column(s) {missing}", cohort)
    simulated = "simulated" in df and bool(df["simulated"].astype(bool).all())
    label = "SIMULATED cohort" if simulated else cohort.name
    s = screen(df, outcome, cands, alpha)
    chosen = list(s.loc[s.selected, "predictor"])
    if not chosen:
        raise InputError(f"no candidate reaches P < {alpha} in the univariable screen", cohort)
    model = fit_nomogram(df, outcome, chosen, label=label)
    val = validate(df, model, n_boot=n_boot, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "nomogram.json")
    s.to_csv(out / "screen.csv", index=False)
    model.odds_ratios().to_csv(out / "odds_ratios.csv", index=False)
    (out / "validation.json").write_text(json.dumps(val, indent=2))
    sub = df[[outcome, *chosen]].dropna()
    p, y = model.predict(sub), sub[outcome].astype(int).to_numpy()
    figures.nomogram_figure(model, out / "nomogram.png", f"Nomogram: risk of {outcome} ({label})")
    figures.roc_figure(p, y, val["auc"], out / "roc.png", f"ROC ({label})")
    figures.calibration_figure(val, out / "calibration.png", f"Calibration ({label})")
    figures.decision_curve_figure(p, y, out / "decision_curve.png", f"Decision curve ({label})")
    a = val["auc"]
    typer.echo(f"{label}: {len(chosen)} predictors ({', '.join(chosen)}); n={model.n}, events={model.events}")
    typer.echo(f"AUC {a['auc']:.3f} (DeLong 95% CI {a['ci_low']:.3f}-{a['ci_high']:.3f}); optimism-corrected "
               f"AUC {val['auc_corrected']:.3f}, calibration slope {val['corrected']['Slope']:.3f}")
    typer.echo(model.odds_ratios()[["term", "or", "or_low", "or_high", "p"]].to_string(index=False))
    typer.echo(f"written: {out}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="cohort")
