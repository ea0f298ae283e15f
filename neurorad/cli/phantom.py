"""``neurorad phantom``: synthetic cases with known truth (phantom layer)."""

from __future__ import annotations

from pathlib import Path

import typer

from neurorad.errors import InputError

_KIND_OPTIONS = {
    "ms-pair": {"n_new", "n_stable", "n_enlarging", "slice_thickness_mm", "in_plane_mm", "snr", "misalign_deg",
                "misalign_mm", "contrasts", "bias_strength"},
    "wmh": {"slice_thickness_mm", "in_plane_mm", "snr", "contrasts", "bias_strength"},
    "glioma": {"slice_thickness_mm", "in_plane_mm", "snr", "misalign_deg", "misalign_mm", "contrasts",
               "bias_strength"},
    "cmb": {"slice_thickness_mm", "in_plane_mm", "snr", "contrasts", "bias_strength"},
    "ich-pair": {"slice_thickness_mm", "in_plane_mm", "misalign_deg", "misalign_mm"},
}


def phantom(
    kind: str = typer.Option(..., "--kind", help="ms-pair, wmh, glioma, cmb or ich-pair."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same case."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created; must be empty unless --overwrite)."),
    fmt: str = typer.Option("nifti", "--format", help="nifti, dicom or both (truth maps are always NIfTI)."),
    new_lesions: int | None = typer.Option(None, "--new-lesions", help="ms-pair: new lesions at follow-up (0 = "
                                                                       "no activity)."),
    stable_lesions: int | None = typer.Option(None, "--stable-lesions", help="ms-pair: lesions in both scans."),
    enlarging_lesions: int | None = typer.Option(None, "--enlarging-lesions", help="ms-pair: enlarging lesions."),
    slice_thickness_mm: float | None = typer.Option(None, "--slice-thickness-mm", help="Slice thickness (axial)."),
    in_plane_mm: float | None = typer.Option(None, "--in-plane-mm", help="In-plane voxel size."),
    snr: float | None = typer.Option(None, "--snr", help="MR: white-matter signal / noise sigma (Rician)."),
    misalign_deg: float | None = typer.Option(None, "--misalign-deg", help="Follow-up rotation (deg, random axis)."),
    misalign_mm: float | None = typer.Option(None, "--misalign-mm", help="Follow-up translation (mm, random "
                                                                         "direction)."),
    bias: float | None = typer.Option(None, "--bias", help="MR: log-std of the smooth bias field (0 = none)."),
    contrasts: str | None = typer.Option(None, "--contrasts", help="Comma list, e.g. flair,t1,t2 (MR kinds)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Write a synthetic case: images, truth label maps and case.json (lesion volumes = truth maps)."""
    from neurorad.phantom.cases import KINDS, make_case
    from neurorad.phantom.io import FORMATS, write_case

    if kind not in KINDS:
        raise InputError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    given = {
        "n_new": new_lesions, "n_stable": stable_lesions, "n_enlarging": enlarging_lesions,
        "slice_thickness_mm": slice_thickness_mm, "in_plane_mm": in_plane_mm, "snr": snr,
        "misalign_deg": misalign_deg, "misalign_mm": misalign_mm, "bias_strength": bias,
        "contrasts": tuple(c.strip().lower() for c in contrasts.split(",") if c.strip()) if contrasts else None,
    }
    options = {k: v for k, v in given.items() if v is not None}
    unsupported = sorted(set(options) - _KIND_OPTIONS[kind])
    if unsupported:
        raise InputError(f"options not used by --kind {kind}: {', '.join(unsupported)}")
    try:
        case = make_case(kind, seed=seed, **options)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    path = write_case(case, out, fmt, overwrite=overwrite)
    n = len(case.case.get("lesions", []))
    typer.echo(f"wrote {kind} seed {seed}: {len(case.images)} images, {len(case.truth)} truth maps, {n} lesions "
               f"-> {path}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("phantom")(phantom)
