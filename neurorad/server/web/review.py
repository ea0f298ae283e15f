"""What the review pages show, from a workflow's result and its contract (pure: no web, no database).

Everything workflow-specific comes from the workflow plug-in (:mod:`neurorad.workflows.contract`):
the panels and their titles (:class:`~neurorad.workflows.contract.ViewerLayout`), the overlay
(the result's label map) and its colours per finding kind, the finding vocabulary (kind
labels), the review form (fields, per-finding verdicts, missed-finding markers, time points to
accept) and the conclusion sentence. The JSON is documented in docs/review.md.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from neurorad.errors import InputError
from neurorad.workflows.contract import Workflow, WorkflowResult

#: The only file names the viewer may fetch from a result folder (no path ever comes from a URL).
VIEWABLE_SUFFIX = ".nii.gz"


def label_centroids_mm(label_path: Path) -> dict[int, tuple[float, float, float]]:
    """World (RAS+ mm) centre of mass of every label of the overlay the viewer shows.

    A workflow may measure findings on the exam's own grid but show them on another (e.g. a
    common space of two time points); jumping to a finding must use the position in the displayed
    space, so the centroids are taken from the displayed label map. Cached per file version
    (path, size, mtime): a 256^3 map takes ~0.5 s to read.
    """
    st = label_path.stat()
    return dict(_label_centroids_cached(str(label_path), st.st_size, st.st_mtime_ns))


@lru_cache(maxsize=64)
def _label_centroids_cached(path: str, _size: int, _mtime_ns: int) -> tuple[tuple[int, tuple[float, ...]], ...]:
    import nibabel as nib
    import numpy as np

    try:
        img = nib.load(path)
        labels = np.asarray(img.dataobj)
    except Exception as err:  # noqa: BLE001 - any unreadable overlay is a bad result file
        raise InputError(f"label map cannot be read ({type(err).__name__})", Path(path)) from err
    labels = labels.reshape(labels.shape[:3]) if labels.ndim > 3 else labels
    flat = labels.reshape(-1)
    idx = np.flatnonzero(flat)  # only the few finding voxels are touched after this
    if idx.size == 0:
        return ()
    vals = np.rint(flat[idx]).astype(np.int64)
    keep = vals > 0
    idx, vals = idx[keep], vals[keep]
    ijk = np.unravel_index(idx, labels.shape)
    counts = np.bincount(vals)
    sums = [np.bincount(vals, weights=a.astype(np.float64), minlength=counts.size) for a in ijk]
    out = []
    for lab in np.flatnonzero(counts):
        c = [sums[a][lab] / counts[lab] for a in range(3)]
        xyz = img.affine @ np.array([*c, 1.0])
        out.append((int(lab), (round(float(xyz[0]), 1), round(float(xyz[1]), 1), round(float(xyz[2]), 1))))
    return tuple(out)


def read_result(folder: Path) -> WorkflowResult:
    """The contract's result of a result folder (InputError naming the file when it is not one)."""
    if not folder.is_dir():
        raise InputError("result folder is missing", folder)
    return WorkflowResult.read_json(folder)


def overlay_file(workflow: Workflow, result: WorkflowResult) -> str | None:
    """The label map shown as the overlay: the layout's named volume, else the result's mask."""
    key = workflow.viewer.overlay
    if key and key in result.volumes:
        return result.volumes[key]
    return result.mask


def form_json(workflow: Workflow) -> dict[str, Any]:
    """The workflow's review form as the page renders it."""
    f = workflow.review_form
    return {
        "fields": [{"name": x.name, "label": x.label, "kind": x.kind, "required": x.required, "help": x.help,
                    "choices": [{"value": c.value, "label": c.label} for c in x.choices]} for x in f.fields],
        "finding_verdicts": [{"value": c.value, "label": c.label} for c in f.finding_verdicts],
        "discard_verdicts": list(f.discard_verdicts),
        "allow_missed": f.allow_missed,
        "comment": f.comment,
        "timepoints": list(f.timepoints),
    }


def build_review(folder: Path, result_version: int, file_url: Any, workflow: Workflow,
                 result: WorkflowResult | None = None) -> dict[str, Any]:
    """Describe one run's result for the study page (see docs/review.md for every key).

    ``file_url(name)`` turns a file name of the folder into the URL the browser fetches. The
    legacy keys of the first page (``sequences``, ``lesions`` ...) are derived from the same data.
    """
    result = result or read_result(folder)
    def present(key: str) -> bool:
        return key in result.volumes and (folder / result.volumes[key]).is_file()

    panels_shown = [p for p in workflow.viewer.panels if not p.optional or present(p.background)]
    used = [p.background for p in panels_shown]
    missing = [k for k in dict.fromkeys(used) if not present(k)]
    if not used or missing:
        raise InputError("result folder has no viewable image for the panel(s) " + ", ".join(missing or ["(none)"]),
                         folder)
    volumes = {k: file_url(result.volumes[k]) for k in dict.fromkeys(used)}
    overlay_name = overlay_file(workflow, result)
    if overlay_name and not (folder / overlay_name).is_file():
        overlay_name = None
    where = label_centroids_mm(folder / overlay_name) if overlay_name else {}
    kinds = workflow.finding_kinds
    findings = []
    for f in result.findings:
        d = f.to_dict()
        caption = workflow.finding_caption(result, f)  # e.g. "low confidence": not counted until the reader keeps it
        d["kind_label"] = kinds.get(f.kind, f.kind) + (f" ({caption})" if caption else "")
        d["needs_verdict"] = workflow.finding_needs_verdict(result, f)  # no default verdict: the reader chooses
        shown = where.get(f.label if f.label is not None else f.id)
        centre = shown or f.centroid_mm or (0.0, 0.0, 0.0)
        d["x_mm"], d["y_mm"], d["z_mm"] = (round(float(c), 1) for c in centre)
        findings.append(d)
    panels = [{"title": p.title, "background": p.background, "timepoint": p.background, "url": volumes[p.background],
               "overlay": p.overlay} for p in panels_shown]
    return {
        "workflow": workflow.name,
        "workflow_title": workflow.title or workflow.name,
        "workflow_version": result.version,
        "result_version": result_version,
        "finding": workflow.conclusion(result),
        "summary": workflow.conclusion(result),
        "volumes": volumes,
        "panels": panels,
        "overlay": {"url": file_url(overlay_name) if overlay_name else None, "opacity": 0.8,
                    "kind_colours": dict(workflow.viewer.kind_colours),
                    "labels": {str(f.label if f.label is not None else f.id): f.kind for f in result.findings},
                    "colormap": "red", "cal_min": 0.5, "cal_max": 1.0},
        "radiological": workflow.viewer.radiological,
        "kind_labels": dict(kinds),
        "findings": findings,
        "quantities": [q.to_dict() for q in result.quantities],
        "alarms": len(result.alarms),
        "alarm_messages": [a.message for a in result.alarms],
        "key_images": [k.to_dict() for k in result.key_images],
        "form": form_json(workflow),
        # the first page's names for the same data (review helper moves the page onto the keys above)
        "sequences": {"image": volumes},
        "default_sequence": "image",
        "candidates_title": "Findings",
        "lesions": [{"lesion_id": d["id"], "volume_ml": round(float(d["volume_ml"] or 0.0), 4), "x_mm": d["x_mm"],
                     "y_mm": d["y_mm"], "z_mm": d["z_mm"], "kind": d["kind"], "kind_label": d["kind_label"],
                     "region": d["location"], "max_score": d["score"]} for d in findings],
        "timepoints_required": list(workflow.required_timepoints(result)),
        "volume_changes": [],
    }


def count_alarms(result: WorkflowResult) -> int:
    return len(result.alarms)


def preview_level(folder: Path) -> str | None:
    """``"preview"`` when an image of the result folder is larger than the preview (the viewer then
    shows downsampled display copies first and the full images after), else None. Headers only."""
    import nibabel as nib

    from neurorad.server.web.display import PREVIEW_MAX_VOXELS

    for p in folder.glob(f"*{VIEWABLE_SUFFIX}"):
        try:
            if max(nib.load(p).shape[:3]) > PREVIEW_MAX_VOXELS:
                return "preview"
        except Exception:  # noqa: BLE001 - an unreadable image is reported by the viewer, not here
            continue
    return None


def humanize_wait(since: datetime, now: datetime) -> str:
    """'12 min', '3 h 5 min', '2 d 4 h'."""
    d = max(now - since, timedelta(0))
    minutes = int(d.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def worklist_order_key(alarms: int, waiting_since: datetime) -> tuple[int, datetime]:
    """Most alarms first, then the longest-waiting study first."""
    return (-alarms, waiting_since)


def json_for_script(obj: Any) -> str:
    """JSON safe to embed in ``<script type="application/json">`` (no ``</script>`` breakout)."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
