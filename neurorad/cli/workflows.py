"""``neurorad workflows`` and one command per installed workflow: ``neurorad <workflow> --<role> PATH --out DIR``.

The per-workflow commands are made from the registry (:mod:`neurorad.workflows.registry`): the
options are the workflow's series roles (``--t1c``, ``--prior-flair`` ...), ``--engine`` (the
workflow's engines), ``--out`` and ``--overwrite``, parsed with argparse from the workflow's
requirements. A workflow is imported only when its command runs or shows its help, so
``neurorad --help`` stays fast. A workflow that already has a
hand-written command (``ms-lesions`` keeps its historical options) is not generated again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import typer


def list_workflows(
    enabled: str = typer.Option("", "--enabled", help="Comma-separated names a site enables (each must load)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List installed workflows, whether each loads, and what series each requires."""
    from neurorad.workflows import registry

    rows: list[dict[str, Any]] = []
    wanted = [n.strip() for n in enabled.split(",") if n.strip()]
    for item in registry.installed():
        row: dict[str, Any] = {"name": item.name, "target": item.target, "enabled": item.name in wanted}
        try:
            row.update(registry.load(item.name).describe())
            row["status"] = "ok"
        except registry.WorkflowLoadError as err:
            row["status"] = f"cannot load: {err}"
        rows.append(row)
    missing = [n for n in wanted if n not in {r["name"] for r in rows}]
    if as_json:
        typer.echo(json.dumps({"workflows": rows, "not_installed": missing}, indent=2))
    else:
        for r in rows:
            flag = "enabled " if r["enabled"] else "        "
            typer.echo(f"{flag}{r['name']:<14} {r.get('version', '?'):<8} {r['status']}")
            if r["status"] == "ok":
                typer.echo(f"{'':<23}requires: {r['requires']}")
        for n in missing:
            typer.echo(f"enabled {n:<14} {'?':<8} not installed", err=True)
    if missing or any(r["enabled"] and r["status"] != "ok" for r in rows):
        raise typer.Exit(2)


def build_parser(name: str) -> argparse.ArgumentParser:
    """The options of ``neurorad <name>``, made from the workflow's requirements (imports the workflow)."""
    from neurorad.workflows import registry

    wf = registry.load(name)
    p = argparse.ArgumentParser(
        prog=f"neurorad {name}",
        description=f"{wf.title or wf.name} (workflow {wf.name} {wf.version}). {wf.description} "
                    "Writes result.json, report.html/.pdf and dicom/ (SEG, SR, secondary captures, Encapsulated PDF) "
                    "into OUT, the same outputs as the server. Exit code 2 on bad input, 3 when a step fails.")
    for r in wf.requirements.series:
        what = r.description or "/".join(r.classes) or "series"
        p.add_argument(r.cli_option, dest=r.role, type=Path, required=r.required, metavar="PATH",
                       help=f"{what}: NIfTI file or DICOM series folder" + ("" if r.required else " (optional)"))
    if wf.engines:
        names = list(wf.engines)
        also = "; or a model: registry NAME[@VERSION] or model folder" if wf.engine_models else ""
        p.add_argument("--engine", choices=None if wf.engine_models else names, default=names[0],
                       metavar="{" + ",".join(names) + "}" + ("|MODEL" if wf.engine_models else ""),
                       help="; ".join(f"{k}: {v}" for k, v in wf.engines.items()) + also + f" (default {names[0]})")
    p.add_argument("--out", "-o", type=Path, required=True, help="Output folder (atomic; must not exist or be empty).")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing output folder.")
    p.add_argument("--no-dicom", action="store_true", help="Skip the report and DICOM objects.")
    return p


def run_workflow_cli(name: str, argv: list[str]) -> None:
    """``neurorad <name> ARGS``: parse ``argv`` against the workflow's roles and run it (see module doc)."""
    from neurorad.cli._progress import bar
    from neurorad.workflows import registry
    from neurorad.workflows.contract import WorkflowInputs
    from neurorad.workflows.runner import execute

    try:
        ns = vars(build_parser(name).parse_args(argv))
    except SystemExit as exc:  # --help or a usage error (argparse printed it)
        raise typer.Exit(int(exc.code or 0)) from None
    wf = registry.load(name)
    series = {r.role: ns[r.role] for r in wf.requirements.series if ns.get(r.role) is not None}
    options = {"engine": ns["engine"]} if "engine" in ns else {}
    with bar(wf.name, 100) as advance:
        done = {"n": 0}

        def progress(fraction: float, message: str) -> None:
            n = int(round(max(0.0, min(1.0, fraction)) * 100))
            if n > done["n"]:
                advance(n - done["n"])
                done["n"] = n

        result = execute(wf, WorkflowInputs(series, options=options), ns["out"], progress,
                         overwrite=ns["overwrite"], write_outputs=not ns["no_dicom"])
    typer.echo(f"{wf.name} {wf.version}: {result.summary}")
    for q in result.quantities:
        typer.echo(f"  {q.name} = {q.value} {q.unit}".rstrip())
    for a in result.alarms:
        typer.echo(f"warning: {a.message}", err=True)
    typer.echo(f"results: {Path(ns['out']) / 'result.json'}")


def _command_for(name: str):  # noqa: ANN202 - a typer callback
    def command(ctx: typer.Context) -> None:
        run_workflow_cli(name, list(ctx.args))

    command.__doc__ = f"Run the {name} workflow on files (NIfTI or DICOM folders); `neurorad {name} --help`."
    return command


def register(app: typer.Typer) -> None:
    """``neurorad workflows`` plus one command per installed workflow that has no command of its own."""
    from neurorad.workflows import registry

    app.command("workflows")(list_workflows)
    taken = {c.name for c in app.registered_commands}
    for item in registry.installed():
        if item.name not in taken:
            app.command(item.name, add_help_option=False, context_settings={
                "allow_extra_args": True, "ignore_unknown_options": True})(_command_for(item.name))
