"""What the review pages show, computed from a workflow's result folder (pure, no web, no database).

A result folder is what a workflow writes (``neurorad.pipelines.ms_lesions.run_ms_lesions``):
``baseline.nii.gz``, ``followup.nii.gz``, a label map of candidates (``new_lesions.nii.gz``),
``lesions.csv`` (:func:`neurorad.quantify.lesions.write_lesion_csv`) and ``result.json``.
Further sequences are found as ``<timepoint>_<sequence>.nii.gz`` (e.g. ``followup_t1.nii.gz``).

The glioma-style three-time-point protocol (current scan and two priors, as in the glioma
volumetry deployments) reports the volume change against each prior and flags an increase of
>= 40 %: the volume equivalent of the RANO criterion of a >= 25 % increase in the product of
perpendicular diameters (Wen et al., J Clin Oncol 2010; for a sphere 1.25^(3/2) = 1.40;
Chang et al., Neuro-Oncology 2019 use the same 40 % volumetric threshold).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from neurorad.errors import InputError

#: Volume increase (fraction) that flags progression against a prior (RANO 25 % in 2D).
PROGRESSION_VOLUME_INCREASE = 0.40

#: The only file names the viewer may fetch from a result folder (no path ever comes from a URL).
VIEWABLE_SUFFIX = ".nii.gz"

#: Label maps shown as the overlay, first found wins (ms_lesions: the common-space copy first).
OVERLAY_CANDIDATES = ("new_lesions_common.nii.gz", "new_lesions.nii.gz", "lesions.nii.gz", "segmentation.nii.gz",
                      "labels.nii.gz")


@dataclass(frozen=True)
class Candidate:
    """One lesion candidate / connected component the reader keeps or discards."""

    lesion_id: int
    volume_ml: float
    x_mm: float
    y_mm: float
    z_mm: float
    kind: str = ""
    region: str = ""
    max_score: float | None = None


@dataclass(frozen=True)
class VolumeChange:
    """Volume change of the current scan against one prior."""

    label: str
    prior_ml: float
    current_ml: float
    change_fraction: float | None  # None when the prior volume is 0
    flag: bool

    @property
    def change_text(self) -> str:
        if self.change_fraction is None:
            return "new" if self.current_ml > 0 else "0%"
        return f"{self.change_fraction * 100:+.0f}%"


@dataclass
class ReviewData:
    """Everything the study page needs about one result (serialised into the page as JSON)."""

    workflow: str
    result_version: int
    finding: str
    sequences: dict[str, dict[str, str]]
    default_sequence: str
    panels: list[dict[str, Any]]
    overlay: dict[str, Any]
    lesions: list[Candidate]
    candidates_title: str = "Lesion candidates"
    alarms: int = 0
    alarm_messages: list[str] = field(default_factory=list)
    volume_changes: list[VolumeChange] = field(default_factory=list)
    timepoints_required: list[str] = field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["volume_changes"] = [dict(asdict(c), change_text=c.change_text) for c in self.volume_changes]
        return d


def volume_change(label: str, prior_ml: float, current_ml: float,
                  threshold: float = PROGRESSION_VOLUME_INCREASE) -> VolumeChange:
    """Relative change ``(current - prior) / prior``; flagged when >= ``threshold``.

    A lesion absent at the prior (0 ml) and present now is flagged as new.
    """
    if prior_ml < 0 or current_ml < 0:
        raise ValueError("volumes must be >= 0")
    if prior_ml == 0:
        return VolumeChange(label, prior_ml, current_ml, None, current_ml > 0)
    frac = (current_ml - prior_ml) / prior_ml
    # Round away float noise so that exactly 40 % counts as 40 % (>= is the rule).
    return VolumeChange(label, prior_ml, current_ml, frac, round(frac, 9) >= threshold)


def _float(row: dict[str, str], *names: str) -> float | None:
    for n in names:
        v = row.get(n)
        if v not in (None, ""):
            return float(v)
    return None


def read_candidates(csv_path: Path) -> list[Candidate]:
    """Read a lesion table (``write_lesion_csv`` format; ``volume_ml`` also accepted)."""
    if not csv_path.exists():
        return []
    out = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh), start=1):
            try:
                lid = int(float(row.get("id") or row.get("lesion_id") or i))
                vol_ml = _float(row, "volume_ml")
                if vol_ml is None:
                    vol_ml = (_float(row, "volume_mm3") or 0.0) / 1000.0
                out.append(
                    Candidate(
                        lesion_id=lid,
                        volume_ml=round(vol_ml, 4),
                        x_mm=_float(row, "centroid_x_mm", "x_mm") or 0.0,
                        y_mm=_float(row, "centroid_y_mm", "y_mm") or 0.0,
                        z_mm=_float(row, "centroid_z_mm", "z_mm") or 0.0,
                        kind=row.get("kind", "") or "",
                        region=row.get("location", "") or row.get("aal_region", "") or "",
                        max_score=_float(row, "max_score"),
                    )
                )
            except ValueError as err:
                raise InputError(f"lesion table row {i} is not numeric ({err})", csv_path) from err
    return out


def label_centroids_mm(label_path: Path) -> dict[int, tuple[float, float, float]]:
    """World (RAS+ mm) centre of mass of every label of the overlay the viewer shows.

    ms_lesions measures lesions on the follow-up's own grid (``lesions.csv``) but shows them in
    the common space (``new_lesions_common.nii.gz``); jumping to a lesion must use the position
    in the displayed space, so the centroids are taken from the displayed label map. Cached per
    file version (path, size, mtime): a 256^3 map takes ~0.5 s to read.
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
    idx = np.flatnonzero(flat)  # only the few lesion voxels are touched after this
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


def _sequences(folder: Path, timepoints: list[str], file_url: Any) -> dict[str, dict[str, str]]:
    """Map sequence name -> {timepoint: url}; the plain ``<timepoint>.nii.gz`` files are FLAIR."""
    seqs: dict[str, dict[str, str]] = {}
    if all((folder / f"{t}{VIEWABLE_SUFFIX}").exists() for t in timepoints):
        seqs["FLAIR"] = {t: file_url(f"{t}{VIEWABLE_SUFFIX}") for t in timepoints}
    names: set[str] = set()
    for t in timepoints:
        for p in folder.glob(f"{t}_*{VIEWABLE_SUFFIX}"):
            names.add(p.name[len(t) + 1 : -len(VIEWABLE_SUFFIX)])
    for s in sorted(names):
        files = {t: f"{t}_{s}{VIEWABLE_SUFFIX}" for t in timepoints}
        if all((folder / f).exists() for f in files.values()):
            # ms_lesions writes extra sequences as <timepoint>_<seq>_registered.nii.gz
            seqs[s.removesuffix("_registered").upper()] = {t: file_url(f) for t, f in files.items()}
    return seqs


def ms_finding(n_kept: int) -> str:
    """Worklist wording of the MS workflow's decision."""
    return "active" if n_kept > 0 else "no new lesion"


def read_result_json(folder: Path) -> dict[str, Any]:
    p = folder / "result.json"
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"result.json is not valid JSON ({err.msg})", p) from err


def count_alarms(result: dict[str, Any]) -> tuple[int, list[str]]:
    """Alarm count and messages from ``result.json``.

    ``alarms`` (a number or a list), else ``quality.alarms``, else the workflow's ``warnings``
    (e.g. an implausible FLAIR contrast or registration check): each is one reason to look twice.
    """
    quality = result.get("quality") if isinstance(result.get("quality"), dict) else {}
    raw = result.get("alarms", quality.get("alarms", result.get("warnings", 0)))
    if isinstance(raw, list):
        return len(raw), [str(a.get("message", a) if isinstance(a, dict) else a) for a in raw]
    try:
        return int(raw or 0), []
    except (TypeError, ValueError):
        return 0, []


def finding_of(result: dict[str, Any], n_candidates: int) -> str:
    """Short automatic finding for the worklist (e.g. 'active' / 'no new lesion')."""
    if isinstance(result.get("finding"), str):
        return result["finding"]
    decision = result.get("decision")
    if isinstance(decision, dict) and isinstance(decision.get("status"), str):
        return decision["status"]
    if isinstance(decision, dict) and "active" in decision:
        return ms_finding(int(bool(decision["active"])))
    if "active" in result:
        return ms_finding(int(bool(result["active"])))
    return ms_finding(n_candidates)


def build_review(folder: Path, result_version: int, file_url: Any, workflow: str | None = None) -> ReviewData:
    """Describe a result folder for the study page.

    ``file_url(name)`` turns a file name of the folder into the URL the browser fetches.
    """
    if not folder.is_dir():
        raise InputError("result folder is missing", folder)
    result = read_result_json(folder)
    workflow = workflow or str(result.get("workflow", "ms_lesions"))
    overlay_name = next((n for n in OVERLAY_CANDIDATES if (folder / n).exists()), None)
    lesions = read_candidates(folder / "lesions.csv")
    if overlay_name and lesions:
        where = label_centroids_mm(folder / overlay_name)
        lesions = [replace(c, x_mm=where[c.lesion_id][0], y_mm=where[c.lesion_id][1], z_mm=where[c.lesion_id][2])
                   if c.lesion_id in where else c for c in lesions]
    alarms, alarm_messages = count_alarms(result)

    priors = result.get("priors") if isinstance(result.get("priors"), list) else []
    if priors:
        # Glioma-style protocol: current scan + priors (oldest first on screen), all to be accepted.
        tps = [str(p.get("timepoint", f"prior{i + 1}")) for i, p in enumerate(priors)][::-1] + ["current"]
        titles = {str(p.get("timepoint", f"prior{i + 1}")): str(p.get("label", f"prior {i + 1}"))
                  for i, p in enumerate(priors)}
        titles["current"] = "current + segmentation"
        current_ml = float(result.get("volume_ml", sum(c.volume_ml for c in lesions)))
        changes = [volume_change(str(p.get("label", f"prior {i + 1}")), float(p["volume_ml"]), current_ml)
                   for i, p in enumerate(priors) if "volume_ml" in p]
        required = [titles[t] for t in tps]
        title = "Components"
    else:
        tps = ["baseline", "followup"]
        titles = {"baseline": "baseline", "followup": "follow-up"}
        changes, required, title = [], [], "New lesion candidates"
    seqs = _sequences(folder, tps, file_url)
    if not seqs:
        raise InputError(f"result folder has no viewable images ({', '.join(t + VIEWABLE_SUFFIX for t in tps)})",
                         folder)
    panels = [{"timepoint": t, "title": titles[t], "overlay": False} for t in tps]
    if priors:
        panels[-1]["overlay"] = True
    else:
        panels.append({"timepoint": "followup", "title": "follow-up + new lesions", "overlay": True})
    return ReviewData(
        workflow=workflow,
        result_version=result_version,
        finding=finding_of(result, len(lesions)),
        sequences=seqs,
        default_sequence=next(iter(seqs)),
        panels=panels,
        overlay={
            "url": file_url(overlay_name) if overlay_name else None,
            "colormap": "red",
            "opacity": 0.8,
            "cal_min": 0.5,
            "cal_max": 1.0,
        },
        lesions=lesions,
        candidates_title=title,
        alarms=alarms,
        alarm_messages=alarm_messages,
        volume_changes=changes,
        timepoints_required=required,
    )


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
