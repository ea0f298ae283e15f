"""Research batch runs: a workflow over every subject/session of a BIDS dataset.

The inputs are found with pybids (``BIDSLayout``, Yarkoni et al., JOSS 2019) from the workflow's
:class:`~neurorad.workflows.contract.Requirements`: each series class maps to BIDS entities
(:data:`CLASS_TO_BIDS`; ``T1C`` is a ``T1w`` with a ``ce-`` entity, ``T1`` one without), a role with
``prior = k`` takes the k-th earlier session of the same subject (sessions in sorted label order)
that has such an image. Every session runs :func:`neurorad.workflows.runner.execute` (the same
function as the server and the per-workflow CLI) in a process of its own or a Dask task.

Outputs follow BIDS-Derivatives 1.9: ``<out>/dataset_description.json`` (``DatasetType:
derivative``, ``GeneratedBy``), one folder per session ``<out>/sub-<label>[/ses-<label>]/`` with
the workflow's own files (``result.json``, report, DICOM objects; their names are the workflow's,
not BIDS-renamed), and one cohort table ``<out>/cohort.csv`` (one row per session, ``case_id``
``sub-X[_ses-Y]``, one column per scalar quantity named as in ``result.json``, the naming
``neurorad cohort`` uses) with the BIDS tabular sidecar ``cohort.json`` giving every column's
``Units`` and ``Description``.

Resumable: a session whose folder holds a ``result.json`` of the same workflow version is skipped
(``execute`` writes all or nothing, so a crash leaves no half folder). A failing session is
recorded with its reason in ``<out>/failures.tsv`` and does not stop the others.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurorad.errors import InputError

#: series class (neurorad.dicom.classify.LABELS) -> BIDS query entities
CLASS_TO_BIDS: dict[str, dict[str, Any]] = {
    "T1": {"suffix": "T1w", "ceagent": None},
    "T1C": {"suffix": "T1w", "ceagent": "ANY"},
    "T2": {"suffix": "T2w"},
    "FLAIR": {"suffix": "FLAIR"},
    "SWI": {"suffix": "swi"},
    "DWI": {"suffix": "dwi", "datatype": "dwi"},
    "CT_HEAD": {"suffix": "ct"},
}
BIDS_VERSION = "1.9.0"


@dataclass
class SessionInputs:
    """One subject/session: role -> NIfTI path, or why it cannot run."""

    subject: str
    session: str | None
    series: dict[str, Path] = field(default_factory=dict)
    missing: str = ""

    @property
    def case_id(self) -> str:
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def folder(self) -> Path:
        return Path(f"sub-{self.subject}") / (f"ses-{self.session}" if self.session else "")


@dataclass
class BatchReport:
    out_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done (resumed)
    not_applicable: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    table: Path | None = None


def _query(layout, cls: str, modalities: tuple[str, ...], subject: str, session: str | None) -> list[Path]:
    from bids.layout import Query

    ents = dict(CLASS_TO_BIDS.get(cls, {"suffix": cls}))
    if "ceagent" in ents:
        ents["ceagent"] = Query.ANY if ents["ceagent"] == "ANY" else Query.NONE
    sess = {"session": session} if session else {"session": Query.NONE}
    files = layout.get(subject=subject, extension=[".nii", ".nii.gz"], return_type="filename", **sess, **ents)
    return sorted(Path(f) for f in files)


def find_sessions(bids_dir: str | Path, requirements) -> list[SessionInputs]:
    """Every subject/session of the dataset with the inputs each required role gets (or why not)."""
    from bids import BIDSLayout

    bids_dir = Path(bids_dir)
    if not (bids_dir / "dataset_description.json").is_file():
        raise InputError("not a BIDS dataset: no dataset_description.json", bids_dir)
    layout = BIDSLayout(str(bids_dir), validate=False, derivatives=False)
    out = []
    for sub in sorted(layout.get_subjects()):
        sessions = sorted(layout.get_sessions(subject=sub)) or [None]
        for i, ses in enumerate(sessions):
            si = SessionInputs(sub, ses)
            problems = []
            for role in requirements.series:
                classes = role.classes or tuple(CLASS_TO_BIDS)
                found: Path | None = None
                if role.prior == 0:
                    candidates = [p for c in classes for p in _query(layout, c, role.modalities, sub, ses)]
                    found = candidates[0] if candidates else None
                else:
                    earlier = [s for s in sessions[:i] if s is not None]
                    having = [s for s in earlier
                              if any(_query(layout, c, role.modalities, sub, s) for c in classes)]
                    if len(having) >= role.prior:
                        s = having[-role.prior]
                        found = next(p for c in classes for p in _query(layout, c, role.modalities, sub, s))
                if found is not None:
                    si.series[role.role] = found
                elif role.required:
                    where = "this session" if role.prior == 0 else f"an earlier session (prior {role.prior})"
                    problems.append(f"missing {role.role} ({'/'.join(classes)}) in {where}")
            si.missing = "; ".join(problems)
            out.append(si)
    return out


def _run_one(workflow_name: str, series: dict[str, str], out_dir: str, options: dict[str, Any],
             reports: bool = False) -> dict:
    """One session (in a worker process or a Dask task): returns its result.json as a dict."""
    from neurorad.workflows import registry
    from neurorad.workflows.contract import WorkflowInputs
    from neurorad.workflows.runner import execute

    wf = registry.load(workflow_name)
    inputs = WorkflowInputs({k: Path(v) for k, v in series.items()}, options=dict(options))
    return execute(wf, inputs, out_dir, write_outputs=reports).to_dict()


def dataset_description(workflow, bids_dir: Path) -> dict[str, Any]:
    from neurorad import __version__

    return {"Name": f"neurorad {workflow.name} derivatives", "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "neurorad", "Version": __version__,
                             "Description": f"workflow {workflow.name} {workflow.version}"}],
            "SourceDatasets": [{"URL": Path(bids_dir).resolve().as_uri()}]}


def write_cohort(out_dir: Path, rows: list[tuple[str, dict]]) -> Path:
    """``cohort.csv`` (one row per session, one column per scalar quantity) + ``cohort.json`` (units)."""
    import pandas as pd

    table: list[dict[str, Any]] = []
    sidecar: dict[str, dict[str, str]] = {"case_id": {"Description": "BIDS subject[_session] of the row"}}
    for case_id, doc in rows:
        row: dict[str, Any] = {"case_id": case_id}
        for q in doc.get("quantities") or []:
            v = q.get("value")
            if isinstance(v, bool):
                v = int(v)
            if isinstance(v, (int, float, str)) or v is None:
                row[q["name"]] = v
                unit = q.get("unit", "")
                prev = sidecar.get(q["name"], {}).get("Units")
                if prev is not None and prev != unit:
                    raise InputError(f"quantity {q['name']} has unit {unit!r} in {case_id} but {prev!r} elsewhere")
                sidecar[q["name"]] = {"Units": unit, "Description": q.get("description", "")}
        table.append(row)
    path = out_dir / "cohort.csv"
    pd.DataFrame(table).sort_values("case_id").to_csv(path, index=False)
    (out_dir / "cohort.json").write_text(json.dumps(sidecar, indent=1))
    return path


def run_batch(bids_dir: str | Path, workflow_name: str, out_dir: str | Path | None = None, jobs: int = 1,
              executor: str | None = None, options: dict[str, Any] | None = None, reports: bool = False,
              progress: Callable[[int, int, float | None], None] | None = None) -> BatchReport:
    """Run ``workflow_name`` on every session of ``bids_dir``; see the module docstring.

    ``jobs`` sessions run at once in processes of their own (``jobs=1``: in this process), or
    on the Dask scheduler ``executor='dask://HOST:PORT'``. ``progress(finished, total, eta_s)``.
    ``reports``: also the report and DICOM objects (``runner.execute(write_outputs=True)``); off by
    default, a research run needs ``result.json`` and the volumes.
    """
    from neurorad.workflows import registry

    bids_dir = Path(bids_dir)
    wf = registry.load(workflow_name)
    out = Path(out_dir) if out_dir else bids_dir / "derivatives" / f"neurorad-{wf.name}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(json.dumps(dataset_description(wf, bids_dir), indent=1))
    report = BatchReport(out)
    todo: list[SessionInputs] = []
    rows: list[tuple[str, dict]] = []
    for si in find_sessions(bids_dir, wf.requirements):
        if si.missing:
            report.not_applicable.append((si.case_id, si.missing))
            continue
        done = out / si.folder / "result.json"
        if done.is_file():
            doc = json.loads(done.read_text())
            if doc.get("workflow") == wf.name and doc.get("version") == wf.version:
                report.skipped.append(si.case_id)
                rows.append((si.case_id, doc))
                continue
            raise InputError(f"{done} holds a result of {doc.get('workflow')} {doc.get('version')}, not "
                             f"{wf.name} {wf.version}: use another --out")
        todo.append(si)
    args = {si.case_id: (wf.name, {k: str(v) for k, v in si.series.items()}, str(out / si.folder), options or {},
                         reports) for si in todo}
    t0, total = time.monotonic(), len(todo)

    def finished(case_id: str, doc: dict | None, err: BaseException | None) -> None:
        if err is None:
            report.done.append(case_id)
            rows.append((case_id, doc or {}))
        else:
            report.failed.append((case_id, f"{type(err).__name__}: {err}".replace("\n", " ")[:500]))
        n = len(report.done) + len(report.failed)
        if progress:
            elapsed = time.monotonic() - t0
            progress(n, total, elapsed / n * (total - n) if n else None)

    if jobs <= 1 and not executor:
        for case_id, a in args.items():
            try:
                finished(case_id, _run_one(*a), None)
            except Exception as exc:  # noqa: BLE001 - a failed session is listed, the others go on
                finished(case_id, None, exc)
    else:
        pool, close = _pool(executor, jobs)
        try:
            futures: dict[Future, str] = {pool.submit(_run_one, *a): cid for cid, a in args.items()}
            pending = set(futures)
            while pending:
                done_now, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done_now:
                    exc = f.exception()
                    finished(futures[f], None if exc else f.result(), exc)
        finally:
            close()
    if rows:
        report.table = write_cohort(out, rows)
    fail_path = out / "failures.tsv"
    if report.failed:
        fail_path.write_text("case_id\treason\n" + "".join(f"{c}\t{r}\n" for c, r in sorted(report.failed)))
    elif fail_path.exists():
        fail_path.unlink()
    return report


def _pool(executor: str | None, jobs: int):
    """A concurrent.futures-style pool: local processes, or a Dask distributed client."""
    if executor and executor.startswith(("dask://", "tcp://")):
        from dask.distributed import Client

        client = Client("tcp://" + executor.split("://", 1)[1], timeout=30)
        return client.get_executor(pure=False), client.close
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # fork: workflows registered in this process (neurorad.workflows.registry.register) exist in the children
    pool = ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=mp.get_context("fork"))
    return pool, pool.shutdown
