"""``neurorad brain-extract | register | bias-correct | normalize`` (preprocess layer).

Inputs are NIfTI files or DICOM series folders; outputs are NIfTI, written atomically, plus a
JSON sidecar with the provenance (engine, weights hash, parameters, timing).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from neurorad.errors import InputError


def _load(path: Path, what: str):  # noqa: ANN202 - Volume
    from neurorad.image.io import load_image

    if not path.exists():
        raise InputError(f"{what} not found", path)
    return load_image(path)


def _check_out(out: Path) -> None:
    if not (out.name.endswith(".nii") or out.name.endswith(".nii.gz")):
        raise InputError("output must end in .nii or .nii.gz", out)


def _sidecar(out: Path, record: dict) -> None:
    from neurorad.provenance import software_versions

    side = out.with_name(out.name.removesuffix(".gz").removesuffix(".nii") + ".json")
    record = {**record, "software": software_versions()}
    tmp = side.with_name("." + side.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(side)


def _echo(msg: str) -> None:
    from neurorad.cli import quiet

    if not quiet():
        typer.echo(msg, err=True)


def brain_extract(
    src: Path = typer.Argument(..., help="Head image (NIfTI or DICOM series folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output brain mask (.nii.gz, uint8 0/1)."),
    engine: str = typer.Option("deepbet", "--engine", "-e",
                               help="deepbet | hdbet | hdbet-accurate | robex | consensus | consensus-staple | "
                                    "prior-gmm | neurorad-weak (T1, T2 or FLAIR)."),
    brain: Path | None = typer.Option(None, "--brain", help="Also write the skull-stripped image here."),
) -> None:
    """Brain extraction (skull stripping): a mask of the brain on the input grid."""
    from neurorad.image.nifti import save_nifti
    from neurorad.preprocess.brain_extraction import ENGINES, apply_mask, get_extractor

    _check_out(out)
    if brain is not None:
        _check_out(brain)
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    vol = _load(src, "input image")
    _echo(f"brain extraction with {engine} ...")
    t0 = time.perf_counter()
    mask = get_extractor(engine).extract(vol)
    seconds = time.perf_counter() - t0
    if brain is not None:
        save_nifti(apply_mask(vol, mask), brain)
    save_nifti(mask, out)
    info = mask.metadata["brain_extraction"]
    _sidecar(out, {"step": "brain_extraction", **info, "seconds": round(seconds, 2)})
    typer.echo(f"wrote {out} ({info['engine']}, brain {info['volume_ml']:.0f} ml, {seconds:.1f} s)")


def register_cmd(
    fixed: Path = typer.Argument(..., help="Fixed (reference) image."),
    moving: Path = typer.Argument(..., help="Moving image, resampled onto the fixed grid."),
    out: Path = typer.Option(..., "--out", "-o", help="Registered moving image (.nii.gz) on the fixed grid."),
    type_: str = typer.Option("rigid", "--type", "-t", help="rigid | affine | syn (syn needs --backend ants)."),
    backend: str = typer.Option("elastix", "--backend", "-b", help="elastix | sitk | ants (optional package)."),
    transform: Path | None = typer.Option(None, "--transform", help="Write the transform here (.json; "
                                          "4x4 RAS mm matrix mapping fixed-world to moving-world points)."),
    initial: Path | None = typer.Option(None, "--initial", help="Start from this transform (.json)."),
    no_check: bool = typer.Option(False, "--no-check", help="Do not fail on low similarity / huge transforms."),
) -> None:
    """Register MOVING onto FIXED (mutual information, works across contrasts)."""
    from neurorad.cli._progress import bar
    from neurorad.image.nifti import save_nifti
    from neurorad.preprocess.registration import register
    from neurorad.preprocess.transforms import AffineTransform

    _check_out(out)
    if transform is not None and transform.suffix != ".json":
        raise InputError("transform file must end in .json", transform)
    f = _load(fixed, "fixed image")
    m = _load(moving, "moving image")
    init = AffineTransform.load(initial) if initial is not None else None
    with bar(f"{type_} registration ({backend})", 3 if backend == "sitk" else 1) as advance:
        res = register(f, m, type_, backend, initial=init, check=not no_check, progress=advance)  # type: ignore[arg-type]
    save_nifti(res.registered, out)
    if transform is not None:
        res.transform.save(transform)
    _sidecar(out, {"step": "registration", "type": type_, "backend": backend, "nmi_before": res.nmi_before,
                   "nmi_after": res.nmi_after, "seconds": round(res.seconds, 2),
                   "fixed_to_moving_ras_mm": res.transform.matrix.tolist()})
    typer.echo(f"wrote {out} (NMI {res.nmi_before:.3f} -> {res.nmi_after:.3f}, rotation "
               f"{res.transform.rotation_deg:.2f} deg, {res.seconds:.1f} s)")


def bias_correct(
    src: Path = typer.Argument(..., help="Input image."),
    out: Path = typer.Option(..., "--out", "-o", help="Bias-corrected image (.nii.gz, float32)."),
    mask: Path | None = typer.Option(None, "--mask", "-m", help="Fit the field inside this mask (default: Otsu)."),
    shrink: int = typer.Option(4, "--shrink", help="Shrink factor for fitting (1 = full resolution, slow)."),
    iterations: str = typer.Option("50,50,50,50", "--iterations", help="Max iterations per level, comma-separated."),
    field: Path | None = typer.Option(None, "--field", help="Also write the estimated bias field here."),
) -> None:
    """N4 bias-field correction (Tustison et al. 2010)."""
    from neurorad.cli._progress import bar
    from neurorad.image.nifti import save_nifti
    from neurorad.preprocess.bias import n4_bias_correct

    _check_out(out)
    try:
        its = [int(i) for i in iterations.split(",") if i.strip()]
    except ValueError as exc:
        raise InputError(f"--iterations must be integers separated by commas, got {iterations!r}") from exc
    vol = _load(src, "input image")
    mvol = _load(mask, "mask") if mask is not None else None
    t0 = time.perf_counter()
    with bar("N4 bias correction", len(its)) as advance:
        corrected, fld = n4_bias_correct(vol, mvol, shrink_factor=shrink, iterations=its, return_field=True,
                                         progress=advance)
    seconds = time.perf_counter() - t0
    if field is not None:
        save_nifti(fld, field)
    save_nifti(corrected, out)
    _sidecar(out, {"step": "bias_correction", "method": "N4", "shrink_factor": shrink, "iterations": its,
                   "mask": str(mask) if mask else None, "seconds": round(seconds, 2)})
    typer.echo(f"wrote {out} (N4, shrink {shrink}, {seconds:.1f} s)")


def normalize(
    src: Path = typer.Argument(..., help="Input image."),
    out: Path = typer.Option(..., "--out", "-o", help="Normalised image (.nii.gz, float32)."),
    method: str = typer.Option(..., "--method", help="zscore | percentile | match | joint-hist | nyul."),
    mask: Path | None = typer.Option(None, "--mask", "-m", help="Statistics inside this mask (e.g. the brain)."),
    reference: list[Path] | None = typer.Option(
        None, "--reference", "-r",
        help="match: the reference image; joint-hist: the baseline (IN is the co-registered follow-up); "
             "nyul: training images (repeat the option) or one landmarks .json."),
    lower: float = typer.Option(1.0, "--lower", help="percentile: lower percentile mapped to 0."),
    upper: float = typer.Option(99.0, "--upper", help="percentile: upper percentile mapped to 1."),
    save_landmarks: Path | None = typer.Option(None, "--save-landmarks", help="nyul: write learnt landmarks here."),
) -> None:
    """Intensity normalisation (z-score, percentile, histogram matching, MUSIC joint histogram, Nyul)."""
    from neurorad.image.nifti import save_nifti
    from neurorad.preprocess import normalize as nz

    _check_out(out)
    methods = ("zscore", "percentile", "match", "joint-hist", "nyul")
    if method not in methods:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(methods)}")
    refs = list(reference or [])
    if method in ("match", "joint-hist", "nyul") and not refs:
        raise InputError(f"--method {method} needs --reference")
    if method in ("match", "joint-hist") and len(refs) != 1:
        raise InputError(f"--method {method} takes exactly one --reference")
    vol = _load(src, "input image")
    m = _load(mask, "mask") if mask is not None else None
    extra: dict = {}
    if method == "zscore":
        res = nz.zscore(vol, m)
    elif method == "percentile":
        res = nz.percentile_scale(vol, m, lower, upper)
    elif method == "match":
        ref = _load(refs[0], "reference image")
        # the mask belongs to IN's grid; use it for the reference too only when the grids agree
        res = nz.histogram_match(vol, ref, m, m if (m is not None and ref.same_grid(vol)) else None)
    elif method == "joint-hist":
        res, fit = nz.joint_histogram_normalize(_load(refs[0], "baseline image"), vol, m)
        extra = {"slope": fit.slope, "intercept": fit.intercept}
    else:
        if len(refs) == 1 and refs[0].suffix == ".json":
            std = nz.NyulStandardizer.load(refs[0])
        else:
            std = nz.NyulStandardizer().fit([_load(r, "training image") for r in refs])
        if save_landmarks is not None:
            std.save(save_landmarks)
        res = std.transform(vol, m)
        extra = {"standard_landmarks": std.standard_.tolist()}
    save_nifti(res, out)
    _sidecar(out, {"step": "normalization", "method": method, "mask": str(mask) if mask else None, **extra})
    detail = f" (a={extra['slope']:.4f}, b={extra['intercept']:.3f})" if method == "joint-hist" else ""
    typer.echo(f"wrote {out} ({method}{detail})")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("brain-extract")(brain_extract)
    app.command("register")(register_cmd)
    app.command("bias-correct")(bias_correct)
    app.command("normalize")(normalize)
