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
    # regions of tumefactive size that changed but are not counted as lesions (the false-positive step's size
    # bound, ms_difference.FPParams.diffuse_max_focal_volume_mm3): the reader decides what they are
    unresolved_regions: int = 0
    # new or enlarging lesions the software missed and the reader marked in the review (Review.missed): counted
    # for activity and gadolinium, not measured
    reader_marked: int = 0

    @property
    def gadolinium_label(self) -> str:
        """The recommendation in capitals, as reports print it: RECOMMENDED, NOT NEEDED, or READER TO DECIDE (no
        counted lesion, but a changed region of tumefactive size the reader must judge)."""
        if self.gadolinium:
            return "RECOMMENDED"
        return "READER TO DECIDE" if self.unresolved_regions else "NOT NEEDED"

    @property
    def conclusion(self) -> str:
        """The sentence a radiologist reads: activity, then the gadolinium recommendation."""
        return f"{self.activity_text} {self.gadolinium_reason}"


def ms_decision(kinds: list[str], unresolved_regions: int = 0, reader_marked: int = 0) -> MSDecision:
    """Active when >= 1 new or enlarging lesion; gadolinium only when active.

    ``unresolved_regions``: regions larger than a 20 mm lesion (tumefactive size) whose change the workflow
    reported as a quality warning instead of a lesion (on the tuning phantoms every such region was an intensity
    artefact of thick slices), though one may be a large lesion. They do not make the scan active, but the
    sentences name them and leave them, and with them the gadolinium question, to the reader: "no new lesion,
    gadolinium not needed" is never said while such a region is unexplained.

    ``reader_marked``: new or enlarging lesions the software missed and the reader marked in an accepted review
    (the review's missed-lesion markers). The reader's finding counts as the software's would: one makes the scan
    active and gadolinium recommended, so a signed report never says "no new lesion, gadolinium not needed" beside
    a lesion its reader marked (MAGNIMS-CMSC-NAIMS 2021: a new or enlarging lesion is activity, whoever found it).
    They are not measured and the sentences say so.
    """
    if unresolved_regions < 0:
        raise ValueError(f"unresolved_regions must be >= 0, got {unresolved_regions}")
    if reader_marked < 0:
        raise ValueError(f"reader_marked must be >= 0, got {reader_marked}")
    n_new = sum(k == "new" for k in kinds)
    n_enl = sum(k == "enlarging" for k in kinds)
    unknown = [k for k in kinds if k not in MS_KINDS]
    if unknown:
        raise ValueError(f"unknown lesion kinds {sorted(set(unknown))}")
    total = n_new + n_enl + reader_marked
    active = total > 0
    if active:
        parts = []
        if n_new:
            parts.append(f"{n_new} new")
        if n_enl:
            parts.append(f"{n_enl} enlarging")
        found = [" and ".join(parts) + f" T2-FLAIR lesion{'s' if n_new + n_enl > 1 else ''}"] if parts else []
        if reader_marked:
            found.append(f"{reader_marked} new or enlarging T2-FLAIR lesion{'s' if reader_marked > 1 else ''} "
                         "marked by the reader (missed by the software, not measured)")
        what = " and ".join(found)
        activity = f"Active: {what} since the baseline scan."
        reason = (
            f"Gadolinium is recommended because {what} were found since the baseline scan, "
            "and contrast tells whether they are acutely active."
        ) if total > 1 else (
            f"Gadolinium is recommended because {what} was found since the baseline scan, "
            "and contrast tells whether it is acutely active."
        )
    elif unresolved_regions:
        activity = "No new or enlarging T2-FLAIR lesion was counted since the baseline scan."
        reason = ("No lesion was counted, but a changed region of tumefactive size is unexplained: if the reader "
                  "takes it for a lesion, contrast tells whether it is acutely active.")
    else:
        activity = "No new or enlarging T2-FLAIR lesion since the baseline scan."
        reason = "Gadolinium is not needed because no new or enlarging lesion was found since the baseline scan."
    if unresolved_regions:
        many = unresolved_regions > 1
        what = "they are lesions" if many else "it is a lesion"
        activity += (f" {unresolved_regions} region{'s' if many else ''} larger than a 20 mm lesion "
                     f"{'have' if many else 'has'} changed and {'are' if many else 'is'} not counted (see the "
                     f"quality warning): the reader decides whether {what}.")
    return MSDecision(active, n_new, n_enl, active, activity, reason, unresolved_regions, reader_marked)
