"""Adapter registering :func:`neurorad.pipelines.ms_lesions.run_ms_lesions` as the ``ms-lesions`` job.

Inputs: the follow-up FLAIR of the study (role ``flair``) and the FLAIR of the patient's
previous study (role ``baseline_flair``, picked by the orchestration from the same
pseudonymised patient, see ``Requirement.prior``). Every file the workflow writes (NIfTI
maps, lesions.csv, result.json, report.pdf, DICOM SEG / Encapsulated PDF / secondary
captures) becomes a result; only the DICOM objects are delivered.
"""

from __future__ import annotations

from pathlib import Path

from neurorad.server.workflows import ProgressFn, Requirement, WorkflowSpec


def run(inputs: dict[str, list[Path]], out_dir: Path, progress: ProgressFn | None = None) -> list[Path]:
    from neurorad.pipelines.ms_lesions import run_ms_lesions

    steps = {"n": 0}

    def on_step(message: str) -> None:
        steps["n"] += 1
        if progress is not None:
            progress(min(0.95, steps["n"] / 14.0), str(message)[:200])

    followup_dir = Path(inputs["flair"][0]).parent
    baseline_dir = Path(inputs["baseline_flair"][0]).parent
    result = run_ms_lesions(baseline_dir, followup_dir, out_dir / "ms", progress=on_step, overwrite=True)
    return sorted(p for p in Path(result.out_dir).rglob("*") if p.is_file())


def spec() -> WorkflowSpec | None:
    try:
        import neurorad.pipelines.ms_lesions  # noqa: F401
    except ImportError:
        return None
    return WorkflowSpec("ms-lesions", run, (
        Requirement("flair", ("MR",), ("FLAIR",)),
        Requirement("baseline_flair", ("MR",), ("FLAIR",), prior=True),
    ), "MS new-lesion detection: follow-up FLAIR against the patient's previous FLAIR")
