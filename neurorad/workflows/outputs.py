"""The platform's outputs of a workflow result: report (HTML + PDF) and DICOM objects.

Generic over the contract (:mod:`neurorad.workflows.contract`): the wording comes from the
workflow (:meth:`Workflow.report_sections`, :meth:`Workflow.conclusion`), the objects from the
result (mask + findings -> SEG, quantities + findings -> SR TID 1500, key images -> secondary
captures, report PDF -> Encapsulated PDF). The CLI and the server call the same function, so a
file run and a PACS run write the same objects.

Today this writes ``report.html``; the PDF and the DICOM objects are added here (one
implementation each, in ``neurorad.report`` and ``neurorad.dicom``).
"""

from __future__ import annotations

import html
from pathlib import Path

from neurorad.workflows.contract import Review, Workflow, WorkflowInputs, WorkflowResult

__all__ = ["write_outputs", "render_html"]


def render_html(workflow: Workflow, result: WorkflowResult, review: Review | None = None) -> str:
    """A self-contained HTML report from the workflow's sections."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(workflow.report_title())}"
             "</title></head><body>", f"<h1>{html.escape(workflow.report_title())}</h1>"]
    if review is not None and not review.accepted:
        parts.append(f"<p>{html.escape(workflow.not_usable_text())}</p>")
    else:
        for sec in workflow.report_sections(result, review):
            parts.append(f"<h2>{html.escape(sec.heading)}</h2>")
            parts += [f"<p>{html.escape(p)}</p>" for p in sec.paragraphs]
            if sec.table is not None:
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in sec.table.columns) + "</tr>")
                for row in sec.table.rows:
                    parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
                parts.append("</table>")
    if result.alarms:
        parts.append("<h2>Quality alarms</h2><ul>" + "".join(
            f"<li>{html.escape(a.message)}</li>" for a in result.alarms) + "</ul>")
    parts.append(f"<p><small>{html.escape(workflow.name)} {html.escape(workflow.version)}</small></p></body></html>")
    return "\n".join(parts)


def write_outputs(workflow: Workflow, result: WorkflowResult, folder: Path, inputs: WorkflowInputs | None = None,
                  review: Review | None = None) -> None:
    """Write the report and DICOM objects of ``result`` into ``folder`` and list them in ``result.files``."""
    (folder / "report.html").write_text(render_html(workflow, result, review), encoding="utf-8")
    result.files["report_html"] = "report.html"
