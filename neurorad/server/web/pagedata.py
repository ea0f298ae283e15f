"""Small pieces of the worklist and study-page data: exam dates, the baseline-waiting state, counts per
finding kind. Generic over the workflow contract (no workflow is named here).

* **Exam dates are study dates** (DICOM StudyDate), never the date neurorad received the study.
  The stored copy is de-identified: it keeps StudyDate only as a shifted date under the
  longitudinal-dates option (PS3.15 E.3.6), shown marked "(shifted)"; the original is in the
  pseudonym vault's study record, read here only for roles allowed to see identifiers (first
  when they asked for identifiers, an audited view).
* **A baseline is not a failure.** A patient's first study meets no workflow that needs a prior
  study; it is stored and becomes the baseline when a follow-up arrives. Such a study (state
  ``no_workflow`` where some enabled workflow lacks only prior studies) is shown as "baseline:
  waiting for a follow-up study", with its own worklist filter.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Worklist state key and wording of a stored baseline waiting for its follow-up.
BASELINE_STATE = "baseline"
BASELINE_TEXT = "baseline: waiting for a follow-up study"
_PRIOR_MARK = "in a previous study"


def iso_date(value: str | None) -> str | None:
    """``YYYY-MM-DD`` from a DICOM DA (``YYYYMMDD``) or ISO date; None when absent or unreadable."""
    v = (value or "").strip()
    for fmt, n in (("%Y%m%d", 8), ("%Y-%m-%d", 10)):
        try:
            return datetime.strptime(v[:n], fmt).date().isoformat()
        except ValueError:
            continue
    return None


def waiting_for_followup(state: str, reason: str | None) -> bool:
    """True for a study that no workflow took only because the patient has no earlier study yet.

    ``reason`` is the routing reason (``"no workflow applies: <wf>: missing <item>, <item>; ..."``,
    each item of a prior study ending in ``"in a previous study (prior k)"``): true when, for at least
    one workflow, every missing item is one of a previous study."""
    if state != "no_workflow" or not reason:
        return False
    text = reason.split(":", 1)[1] if reason.startswith("no workflow applies") else reason
    for part in text.split(";"):
        _, _, what = part.partition(": missing ")
        items = [x.strip() for x in what.split(", ") if x.strip()]
        if items and all(_PRIOR_MARK in x for x in items):
            return True
    return False


def worklist_state(state: str, reason: str | None) -> tuple[str, str]:
    """(filter key, wording) of a study's state on the worklist."""
    if waiting_for_followup(state, reason):
        return BASELINE_STATE, BASELINE_TEXT
    return state, state.replace("_", " ")


def exam_date(instance_path: Path | None, original_study: dict[str, Any] | Callable[[], dict[str, Any] | None]
              | None = None, prefer_original: bool = False) -> str | None:
    """The exam (study) date to show: the stored instance's StudyDate, marked ``" (shifted)"`` when
    the de-identification shifted it (LongitudinalTemporalInformationModified ``MODIFIED``, PS3.15
    E.3.6: the interval between a patient's exams is kept, the dates are not the PACS's), else the
    original from the vault's study record when given, else None. With ``prefer_original`` (a
    permitted role asked for identifiers, audited) the vault's original comes first.

    ``original_study`` may be a function returning the record: it is then called only when the
    record is needed (prefer_original, or no date in the stored instance), so a worklist does not
    decrypt a vault record per row for nothing."""
    if prefer_original:
        original = _original_date(original_study)
        if original:
            return original
    d = stored_study_date(instance_path)
    if d:
        return d
    return _original_date(original_study)


def _original_date(original_study) -> str | None:  # noqa: ANN001 - dict, callable or None
    record = original_study() if callable(original_study) else original_study
    return iso_date(str((record or {}).get("StudyDate", "") or "")) if record else None


def cached_per_file(maxsize: int) -> Callable[[Callable[[Path], Any]], Callable[[Path], Any]]:
    """Cache a function of one file by (path, modification time, size), for files written once and never
    changed in place (stored instances, result versions): a page reads each file once, not on every view,
    and a file rewritten in place is read anew. The wrapped function returns None when the file cannot be
    stat'ed (missing)."""
    def deco(fn: Callable[[Path], Any]) -> Callable[[Path], Any]:
        @functools.lru_cache(maxsize=maxsize)
        def keyed(path: str, _mtime_ns: int, _size: int) -> Any:
            return fn(Path(path))

        @functools.wraps(fn)
        def wrapper(path: Path) -> Any:
            try:
                st = path.stat()
            except OSError:
                return None
            return keyed(str(path), st.st_mtime_ns, st.st_size)

        return wrapper
    return deco


def stored_study_date(instance_path: Path | None) -> str | None:
    """StudyDate of a stored (de-identified) instance, ``" (shifted)"`` when shifted; None when the
    file is missing or has none (read once per file: :func:`cached_per_file`)."""
    return None if instance_path is None else _stored_study_date(instance_path)


@cached_per_file(maxsize=8192)
def _stored_study_date(path: Path) -> str | None:
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True,
                             specific_tags=["StudyDate", "LongitudinalTemporalInformationModified"])
        d = iso_date(str(getattr(ds, "StudyDate", "") or ""))
        if d:
            shifted = str(getattr(ds, "LongitudinalTemporalInformationModified", "") or "").upper() == "MODIFIED"
            return d + (" (shifted)" if shifted else "")
    except Exception:  # noqa: BLE001 - an unreadable file has no date to show
        log.debug("no StudyDate in %s", path.name, exc_info=True)
    return None


def interval_days(later: str | None, earlier: str | None) -> int | None:
    if not later or not earlier:
        return None
    return (date.fromisoformat(later) - date.fromisoformat(earlier)).days


def kind_counts(findings: list[Any], kind_labels: dict[str, str], kind_colours: dict[str, str]) -> list[dict[str, Any]]:
    """Findings per kind, in the workflow's vocabulary order: ``[{kind, label, count, colour}]``."""
    counts: dict[str, int] = {}
    for f in findings:
        kind = f.kind if hasattr(f, "kind") else str(f.get("kind", ""))
        counts[kind] = counts.get(kind, 0) + 1
    order = [k for k in kind_labels if k in counts] + [k for k in counts if k not in kind_labels]
    return [{"kind": k, "label": kind_labels.get(k, k), "count": counts[k], "colour": kind_colours.get(k, "")}
            for k in order]
