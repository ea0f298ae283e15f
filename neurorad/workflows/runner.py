"""Run any workflow the same way from the CLI and the server.

:func:`execute` checks the inputs against the workflow's requirements, runs the workflow into a
temporary folder beside ``out_dir``, writes ``result.json`` and the platform's outputs (report,
DICOM objects: :mod:`neurorad.workflows.outputs`) and renames the folder into place at the end,
so a failed run never leaves a result that looks complete (``neurorad.atomic.atomic_dir``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from neurorad import __version__
from neurorad.atomic import atomic_dir
from neurorad.errors import InputError
from neurorad.provenance import sha256_file
from neurorad.workflows.contract import Progress, Workflow, WorkflowInputs, WorkflowResult

log = logging.getLogger(__name__)

__all__ = ["execute", "check_inputs", "input_hashes"]


def check_inputs(workflow: Workflow, inputs: WorkflowInputs) -> None:
    """Every required role is given and exists; no unknown role. Raises :class:`InputError`."""
    roles = {r.role: r for r in workflow.requirements.series}
    unknown = sorted(set(inputs.series) - set(roles))
    if unknown:
        raise InputError(f"workflow {workflow.name!r} has no input role(s) {unknown}; roles: {sorted(roles)}")
    for r in workflow.requirements.series:
        p = inputs.series.get(r.role)
        if p is None:
            if r.required:
                raise InputError(f"workflow {workflow.name!r} needs {r.cli_option} ({r.description or r.role})")
            continue
        if not Path(p).exists():
            raise InputError(f"input for {r.cli_option} does not exist", p)


def input_hashes(inputs: WorkflowInputs) -> dict[str, str]:
    """role -> sha256 of the file, or of the sorted file hashes of a DICOM folder."""
    import hashlib

    out = {}
    for role, p in sorted(inputs.series.items()):
        p = Path(p)
        if p.is_dir():
            h = hashlib.sha256()
            for f in sorted(x for x in p.rglob("*") if x.is_file()):
                h.update(sha256_file(f).encode())
            out[role] = h.hexdigest()
        else:
            out[role] = sha256_file(p)
    return out


def execute(workflow: Workflow, inputs: WorkflowInputs, out_dir: str | Path, progress: Progress | None = None,
            overwrite: bool = False, write_outputs: bool = True) -> WorkflowResult:
    """Run ``workflow`` on ``inputs`` into ``out_dir`` (atomic); return its result.

    ``result.json`` holds at least ``workflow``, ``version``, ``quantities``, ``findings`` and
    ``alarms`` (see :class:`~neurorad.workflows.contract.WorkflowResult`); provenance gets the input
    hashes and the software version when the workflow did not fill them.
    """
    progress = progress or (lambda f, m: None)
    check_inputs(workflow, inputs)
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError("output folder exists and is not empty (use --overwrite to replace it)", out)
    with atomic_dir(out) as tmp:
        tmp = Path(tmp)
        result = workflow.run(inputs, tmp, progress)
        if not isinstance(result, WorkflowResult):
            raise TypeError(f"workflow {workflow.name!r} returned {type(result).__name__}, not a WorkflowResult")
        if result.workflow != workflow.name or result.version != workflow.version:
            raise ValueError(f"workflow {workflow.name!r} {workflow.version} returned a result labelled "
                             f"{result.workflow!r} {result.version}")
        prov = result.provenance
        if not prov.inputs:
            prov.inputs = input_hashes(inputs)
        prov.software_version = prov.software_version or __version__
        if write_outputs:
            from neurorad.workflows import outputs

            progress(0.97, "report and DICOM objects")
            outputs.write_outputs(workflow, result, tmp, inputs)
        prov.steps.append({"name": "total", "seconds": round(time.perf_counter() - t0, 3)})
        result.write_json(tmp)
    return result
