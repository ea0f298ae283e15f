"""Clinical rules of the paired-CT haemorrhage study (PAPERS.md D): axis type, length and direction
change, haematoma expansion, "obvious change", and the repeat-CT interval of its inclusion rule.

Pure functions on numbers; the measurements themselves come from
:mod:`neurorad.quantify.morphology`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AXES", "NL_RATIO_LOW", "NL_RATIO_HIGH", "axis_type", "length_changes", "direction_change",
           "Expansion", "expansion", "obvious_change", "interval_warning", "DIRECTION_TOLERANCE_MM"]

AXES = ("ap", "lr", "si")
#: "no longitudinal axis" (NL) when every pairwise diameter ratio lies in [0.850, 1.176] (1.176 = 1/0.85)
NL_RATIO_LOW = 0.850
NL_RATIO_HIGH = 1.176
#: Direction change is "none" when the largest and second-largest absolute length changes differ by
#: less than this (the paper's "two or all three axes change by similar amounts"; its tolerance is
#: not stated, so this is our parameter: 2 mm, two voxels of the 1 mm template).
DIRECTION_TOLERANCE_MM = 2.0
#: Haematoma expansion: increase >= 6 mL or >= 33 % (PAPERS.md D2.7; Dowlatshahi et al., Stroke 2011)
EXPANSION_ML = 6.0
EXPANSION_FRACTION = 0.33


def axis_type(diameters_mm: dict[str, float]) -> str:
    """Longitudinal axis type: ``AP``, ``LR`` or ``SI`` (the longest diameter) or ``NL`` when all
    pairwise ratios lie within 0.850-1.176 (PAPERS.md D2.6, "Longitudinal axis type")."""
    d = [float(diameters_mm[a]) for a in AXES]
    if min(d) <= 0:
        return "NL" if max(d) <= 0 else AXES[d.index(max(d))].upper()
    ratios = [d[i] / d[j] for i in range(3) for j in range(3) if i != j]
    if all(NL_RATIO_LOW <= r <= NL_RATIO_HIGH for r in ratios):
        return "NL"
    return AXES[d.index(max(d))].upper()


def length_changes(initial_mm: dict[str, float], repeat_mm: dict[str, float]) -> dict[str, float]:
    """Length change per axis = repeat diameter - initial diameter (mm)."""
    return {a: float(repeat_mm[a]) - float(initial_mm[a]) for a in AXES}


def direction_change(changes_mm: dict[str, float], tolerance_mm: float = DIRECTION_TOLERANCE_MM) -> str:
    """The axis (``AP``/``LR``/``SI``) with the largest absolute length change, or ``none`` when the
    two largest absolute changes differ by less than ``tolerance_mm`` (changes "similar")."""
    ranked = sorted(AXES, key=lambda a: abs(changes_mm[a]), reverse=True)
    if abs(changes_mm[ranked[0]]) - abs(changes_mm[ranked[1]]) < tolerance_mm:
        return "none"
    return ranked[0].upper()


@dataclass(frozen=True)
class Expansion:
    """Haematoma expansion between two scans (absolute mL, relative %, decision)."""

    change_ml: float
    change_percent: float | None
    expansion: bool


def expansion(initial_ml: float, repeat_ml: float, abs_ml: float = EXPANSION_ML,
              fraction: float = EXPANSION_FRACTION) -> Expansion:
    """HE = increase >= 6 mL or >= 33 % of the initial volume (PAPERS.md D2.7)."""
    change = float(repeat_ml) - float(initial_ml)
    rel = change / initial_ml if initial_ml > 0 else None
    # round to 1e-9 so that exactly 33 % or 6 mL counts as expansion despite float noise
    he = round(change, 9) >= abs_ml or (rel is not None and round(rel, 9) >= fraction)
    return Expansion(change, None if rel is None else 100.0 * rel, bool(he))


def obvious_change(changes_mm: dict[str, float], centre_shift_mm: float, axis_initial: str, axis_repeat: str,
                   threshold_mm: float = 10.0) -> bool:
    """The paper's "obvious change" (PAPERS.md D4): a diameter-length change and the centre movement
    both > 10 mm, or a direction change inconsistent with the longitudinal type. We read the second
    clause as "the longitudinal axis type changed" (its Results count 53 of the 139 obvious changes
    as changed axis type); the paper gives no closer definition."""
    big = max(abs(v) for v in changes_mm.values()) > threshold_mm and centre_shift_mm > threshold_mm
    return bool(big or axis_initial != axis_repeat)


def interval_warning(hours: float | None, low_h: float = 8.0, high_h: float = 72.0) -> str | None:
    """A warning when the repeat CT is outside the paper's 8-72 h window (inclusion rule 5), else None."""
    if hours is None:
        return ("the interval between the CTs is unknown (an input has no acquisition/series/study date, e.g. a "
                "NIfTI file; de-identified DICOM keeps shifted dates and still gives it): the paper's repeat "
                "window is 8-72 h")
    if hours < 0:
        return f"the repeat CT is {abs(hours):.1f} h BEFORE the prior CT: check the order of the inputs"
    if not (low_h < hours < high_h):
        return (f"repeat CT {hours:.1f} h after the prior CT, outside the 8-72 h window of the published method "
                "(volume may still rise before 8 h; absorption starts after 72 h)")
    return None
