"""``neurorad reference-set add|run|review|compare``: the software-update protocol of EASE for any
workflow (:mod:`neurorad.workflows.reference_set`; docs/glioma.md, "Software updates")."""

from __future__ import annotations

from pathlib import Path

import typer

from neurorad.errors import InputError

app = typer.Typer(help="Software-update protocol (EASE): a workflow's reference set, re-run on every update and "
                       "compared with the previous version (any accepted volume changing > 25 % -> incompatible).",
                  no_args_is_help=True)


def _load(name: str):  # noqa: ANN202
    from neurorad.workflows import registry

    return registry.load(name)


@app.command("add")
def add_cmd(
    folder: Path = typer.Argument(..., help="Reference-set folder (created if missing)."),
    case: str = typer.Argument(..., help="Case id (letters, digits, . _ + -; never a patient identifier)."),
    workflow: str = typer.Option(..., "--workflow", "-w", help="Workflow the set belongs to."),
    series: list[str] = typer.Option(..., "--series", "-s", help="ROLE=PATH, once per input role "
                                     "(NIfTI file or DICOM folder; a relative path is read from the set folder)."),
) -> None:
    """Add (or replace) one case of a workflow's reference set."""
    from neurorad.workflows.reference_set import ReferenceSet

    wf = _load(workflow)
    roles = {r.role for r in wf.requirements.series}
    given: dict[str, str] = {}
    for item in series:
        role, sep, path = item.partition("=")
        if not sep or not path:
            raise InputError(f"--series {item!r}: expected ROLE=PATH")
        if role not in roles:
            raise InputError(f"workflow {wf.name!r} has no role {role!r}; roles: {sorted(roles)}")
        given[role] = path
    missing = [r.role for r in wf.requirements.series if r.required and r.prior == 0 and r.role not in given]
    if missing:
        raise InputError(f"case {case!r} lacks required role(s) {missing} of workflow {wf.name!r}")
    ref = ReferenceSet.open_or_create(folder, wf.name)
    ref.add_case(case, given)
    ref.save()
    typer.echo(f"{ref.folder}: {len(ref.cases)} case(s) of workflow {ref.workflow}")


@app.command("run")
def run_cmd(
    folder: Path = typer.Argument(..., help="Reference-set folder."),
    label: str = typer.Option("", "--label", help="Run label (default: the installed workflow's version)."),
) -> None:
    """Run the installed version of the set's workflow on every case (resumes an interrupted run)."""
    from neurorad.workflows.reference_set import ReferenceSet, run_set

    ref = ReferenceSet.open(folder)
    wf = _load(ref.workflow)
    rec = run_set(ref, wf, label or None, lambda c, i, n: typer.echo(f"[{i + 1}/{n}] {c}", err=True))
    failed = {c: s for c, s in rec["cases"].items() if s != "ok"}
    typer.echo(f"run {rec['label']}: {len(rec['cases']) - len(failed)} of {len(rec['cases'])} case(s) ok")
    for c, s in failed.items():
        typer.echo(f"  {c}: {s}", err=True)
    if failed:
        raise typer.Exit(3)


@app.command("review")
def review_cmd(
    folder: Path = typer.Argument(..., help="Reference-set folder."),
    label: str = typer.Argument(..., help="Run label whose result was read."),
    case: str = typer.Argument(..., help="Case id."),
    decision: str = typer.Option(..., "--decision", help="ACCEPTABLE or UNACCEPTABLE."),
    score: str = typer.Option(None, "--score", help="The workflow form's quality score (e.g. 1-5)."),
    reviewer: str = typer.Option("", "--reviewer", help="Reader's user name."),
) -> None:
    """Record the radiologist's QA of one case of one run (the same form as in clinical use)."""
    from neurorad.workflows.reference_set import ReferenceSet, record_review

    ref = ReferenceSet.open(folder)
    rev = record_review(ref, _load(ref.workflow), label, case, decision.upper(), score, reviewer)
    typer.echo(f"{case} @ {label}: {rev['decision']} score {rev['score'] or '-'}")


@app.command("compare")
def compare_cmd(
    folder: Path = typer.Argument(..., help="Reference-set folder."),
    old: str = typer.Option(..., "--old", help="Run label of the version in use."),
    new: str = typer.Option(..., "--new", help="Run label of the updated version."),
) -> None:
    """Compare two runs per case (volume change, Dice, scores) with the EASE rule; print and write the table.

    Exit 0 when the update may be deployed (UNCHANGED or COMPATIBLE), 1 otherwise (QA_NEEDED,
    NOT_DEPLOYABLE, INCOMPATIBLE).
    """
    from neurorad.workflows.reference_set import ReferenceSet, compare_runs, write_comparison

    ref = ReferenceSet.open(folder)
    cmp = compare_runs(ref, _load(ref.workflow), old, new)
    js, md = write_comparison(ref, cmp)
    typer.echo(cmp.table())
    typer.echo(f"{cmp.verdict}: {cmp.reason}")
    if cmp.verdict == "INCOMPATIBLE":
        import json

        new_version = json.loads((ref.run_dir(new) / "run.json").read_text())["workflow_version"]
        typer.echo(f"when deploying it, set the site's workflow_options: {{{ref.workflow!r}: "
                   f"{{'volumes_incompatible_before': {new_version!r}}}}} (reports then warn and comparisons across "
                   "the versions are refused, where the workflow supports it; docs/glioma.md)")
    typer.echo(f"written: {md}, {js}")
    if not cmp.passed:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="reference-set")
