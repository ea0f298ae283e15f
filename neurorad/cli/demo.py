"""``neurorad demo``: the MS workflow end to end on a bundled phantom pair (generated on first run)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

DEMO_VOXEL_MM = 1.5  # coarser than clinical 1 mm so the demo takes about a minute


def demo_pair(cache: Path | None = None) -> tuple[Path, Path]:
    """The demo's baseline/follow-up FLAIR (NIfTI), generated once with the phantom (seed 7) and cached
    under ``<external data>/demo/ms_pair`` (not committed)."""
    from neurorad.resources import external_data_dir

    folder = cache or (external_data_dir() / "demo" / "ms_pair")
    b, f = folder / "baseline_flair.nii.gz", folder / "followup_flair.nii.gz"
    if not (b.exists() and f.exists()):
        from neurorad.image.nifti import save_nifti
        from neurorad.phantom.cases import ms_pair

        folder.mkdir(parents=True, exist_ok=True)
        case = ms_pair(seed=7, n_stable=5, n_new=3, n_enlarging=1, in_plane_mm=DEMO_VOXEL_MM,
                       slice_thickness_mm=DEMO_VOXEL_MM, misalign_deg=5.0, misalign_mm=5.0)
        save_nifti(case.baseline_flair, b)
        save_nifti(case.followup_flair, f)
    return b, f


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output folder (replaced if it exists)."),
) -> None:
    """Run the MS new-lesion workflow on a phantom pair; print the decision, the lesion table and the report path."""
    from neurorad.cli._progress import bar
    from neurorad.cli.ms import print_result, write_contract_keys
    from neurorad.pipelines.ms_lesions import PROGRESS_STAGES, run_ms_lesions

    t0 = time.perf_counter()
    b, f = demo_pair()
    typer.echo(f"demo pair: {b} + {f}")
    with bar("ms-lesions (demo)", len(PROGRESS_STAGES)) as advance:
        res = run_ms_lesions(b, f, out / "ms-lesions", overwrite=True, progress=lambda step: advance(1))
    write_contract_keys(res)  # result.json as `neurorad ms-lesions` writes it (workflow, quantities, findings, ...)
    print_result(res)
    typer.echo(f"demo finished in {time.perf_counter() - t0:.0f} s")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("demo")(demo)
