"""``neurorad ms-lesions``: longitudinal MS new-lesion detection, gadolinium decision, draft report."""

from __future__ import annotations

from pathlib import Path

import typer


def print_result(res) -> None:  # noqa: ANN001 - MSResult (imported lazily)
    """Decision, lesion table and output paths, for the terminal."""
    d = res.decision
    # READER TO DECIDE (low-confidence lesions only, or an uncounted region of tumefactive size) is not "no new lesion"
    status = "ACTIVE" if d.active else ("READER TO DECIDE" if d.gadolinium_label == "READER TO DECIDE"
                                        else "NO NEW LESION")
    typer.echo(f"decision: {status} - {d.activity_text}")
    label = d.gadolinium_label
    typer.echo(f"gadolinium: {label if d.gadolinium else label.lower()} - {d.gadolinium_reason}")
    if res.lesions:
        typer.echo(f"{'id':>3} {'type':<10} {'volume_mm3':>10} {'baseline':>8} {'change':>7} {'diam_mm':>7} "
                   f"{'centre RAS mm':<22} location")
        notes = []
        for r in res.lesions:
            c = f"({r.centroid_x_mm:.0f}, {r.centroid_y_mm:.0f}, {r.centroid_z_mm:.0f})"
            note = getattr(r, "volume_note", "")  # volume not measurable at this slice thickness
            vol = ("~" if note else "") + f"{r.volume_mm3:.0f}"
            typer.echo(f"{r.id:>3} {r.kind:<10} {vol:>10} {r.baseline_volume_mm3:>8.0f} "
                       f"{r.volume_change_mm3:>+7.0f} {r.diameter_mm:>7.1f} {c:<22} {r.location}")
            if note and note not in notes:
                notes.append(note)
        for note in notes:
            typer.echo(f"~ volume {note} (lesion too small for the slices)")
    for w in res.warnings:
        typer.echo(f"warning: {w}", err=True)
    if "report_pdf" in res.files:
        typer.echo(f"report: {res.out_dir / 'report.pdf'} (HTML: {res.out_dir / 'report.html'})")
    typer.echo(f"results: {res.out_dir / 'result.json'}")


def ms_lesions(
    baseline: Path = typer.Option(..., "--baseline", help="Baseline FLAIR: NIfTI file or DICOM series folder."),
    followup: Path = typer.Option(..., "--followup", help="Follow-up FLAIR: NIfTI file or DICOM series folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (atomic; must not exist or be empty)."),
    baseline_t1: Path | None = typer.Option(None, "--baseline-t1", help="Optional baseline T1 (kept registered)."),
    followup_t1: Path | None = typer.Option(None, "--followup-t1", help="Optional follow-up T1."),
    baseline_t2: Path | None = typer.Option(None, "--baseline-t2", help="Optional baseline T2."),
    followup_t2: Path | None = typer.Option(None, "--followup-t2", help="Optional follow-up T2."),
    brain_engine: str = typer.Option("deepbet", "--brain-engine", help="deepbet | hdbet | hdbet-accurate | robex."),
    registration: str = typer.Option("elastix", "--registration", help="elastix | sitk | ants."),
    normalisation: str = typer.Option("nyul", "--normalisation", help="nyul | histogram (after the joint fit)."),
    lesion_engine: str = typer.Option(
        "fusion", "--lesion-engine",
        help="fusion (default: the classical and learned engines each detect, a lesion either finds is reported; "
             "strong disagreement -> quality warning) | classical (difference image alone; the default before "
             "workflow 1.22.0) | learned (two-time-point network ms-unet3d alone, trained on synthetic phantoms)."),
    learned_model: str | None = typer.Option(None, "--learned-model",
                                             help="Model of the learned/fusion engine: registry name[@version] or "
                                                  "folder (default ms-unet3d@0.3.0)."),
    activity_min_peak_score: float = typer.Option(
        0.23, "--activity-min-peak-score", min=0.0, max=1.0,
        help="A lesion counts for activity and gadolinium without the reader from this peak score; weaker reported "
             "lesions are low-confidence and, alone, leave the decision to the reader (READER TO DECIDE). 0: every "
             "reported lesion counts (workflow 1.17.0's rule)."),
    no_dicom: bool = typer.Option(False, "--no-dicom", help="Skip the DICOM SEG / Encapsulated PDF / SC outputs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Find new and enlarging FLAIR lesions between two exams; decide on gadolinium; write a draft report.

    Outputs in OUT: new_lesions.nii.gz (labels, follow-up grid), score/difference/baseline/followup
    NIfTI (common space), lesions.csv, result.json (with the workflow contract's keys: workflow,
    version, quantities, findings in mL, alarms), report.html/.pdf and dicom/ (SEG, Encapsulated
    PDF, secondary captures). Exit code 2 on bad input, 3 when a step fails (e.g. registration).
    """
    from dataclasses import replace

    from neurorad.cli._progress import bar
    from neurorad.pipelines.ms_lesions import PROGRESS_STAGES, MSConfig, run_ms_lesions

    cfg = replace(MSConfig(), brain_engine=brain_engine, registration_backend=registration,
                  normalisation=normalisation, write_dicom=not no_dicom, lesion_engine=lesion_engine,
                  activity_min_peak_score=activity_min_peak_score)
    if learned_model:
        cfg = replace(cfg, learned=replace(cfg.learned, model=learned_model))
    with bar("ms-lesions", len(PROGRESS_STAGES)) as advance:
        res = run_ms_lesions(baseline, followup, out, cfg, baseline_t1=baseline_t1, followup_t1=followup_t1,
                             baseline_t2=baseline_t2, followup_t2=followup_t2, overwrite=overwrite,
                             progress=lambda step: advance(1))
    write_contract_keys(res)
    print_result(res)


def write_contract_keys(res) -> None:  # noqa: ANN001 - MSResult (imported lazily)
    """Add the workflow contract's keys (``workflow``, ``version`` = the workflow's version,
    ``quantities``, ``findings``, ``alarms``, ``summary``) to the run's ``result.json``, as every
    ``neurorad <workflow>`` writes them; the pipeline's own keys stay, its software version moves to
    ``software_version``."""
    import json

    from neurorad.workflows.ms_lesions import generic_result_keys

    path = res.out_dir / "result.json"
    d = json.loads(path.read_text(encoding="utf-8"))
    d.setdefault("software_version", d.get("version"))
    d.update(generic_result_keys(res))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(d, indent=2), encoding="utf-8")
    tmp.replace(path)


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("ms-lesions")(ms_lesions)
