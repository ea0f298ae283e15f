"""Clinical rules of the longitudinal MS workflow: disease activity and gadolinium decision.

Activity follows the MAGNIMS/CMSC/NAIMS 2021 consensus on MRI monitoring: a new or enlarging
T2/FLAIR lesion on a follow-up scan indicates disease activity. The gadolinium rule is the one of
the FLAIR-subtraction CAD used in routine care: inject contrast only when the subtraction finds a
new (or enlarging) lesion, because gadolinium adds information (active vs chronic) only then.

These sentences are the MS workflow's own wording (``neurorad.workflows.ms_lesions``); the
platform's generic report and review pages never write them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The lesion kinds of the MS workflow's vocabulary.
MS_KINDS = ("new", "enlarging")


@dataclass(frozen=True)
class MSDecision:
    """Patient-level decision."""

    active: bool
    n_new: int
    n_enlarging: int
    gadolinium: bool
    activity_text: str
    gadolinium_reason: str

    @property
    def conclusion(self) -> str:
        """The sentence a radiologist reads: activity, then the gadolinium recommendation."""
        return f"{self.activity_text} {self.gadolinium_reason}"


def ms_decision(kinds: list[str]) -> MSDecision:
    """Active when >= 1 new or enlarging lesion; gadolinium only when active."""
    n_new = sum(k == "new" for k in kinds)
    n_enl = sum(k == "enlarging" for k in kinds)
    unknown = [k for k in kinds if k not in MS_KINDS]
    if unknown:
        raise ValueError(f"unknown lesion kinds {sorted(set(unknown))}")
    active = n_new + n_enl > 0
    if active:
        parts = []
        if n_new:
            parts.append(f"{n_new} new")
        if n_enl:
            parts.append(f"{n_enl} enlarging")
        what = " and ".join(parts) + f" T2-FLAIR lesion{'s' if n_new + n_enl > 1 else ''}"
        activity = f"Active: {what} since the baseline scan."
        reason = (
            f"Gadolinium is recommended because {what} were found since the baseline scan, "
            "and contrast tells whether they are acutely active."
        ) if n_new + n_enl > 1 else (
            f"Gadolinium is recommended because {what} was found since the baseline scan, "
            "and contrast tells whether it is acutely active."
        )
    else:
        activity = "No new or enlarging T2-FLAIR lesion since the baseline scan."
        reason = "Gadolinium is not needed because no new or enlarging lesion was found since the baseline scan."
    return MSDecision(active, n_new, n_enl, active, activity, reason)
