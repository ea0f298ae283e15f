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
    # lesions detected with a peak score under the activity threshold (low confidence): listed for the reader, not
    # counted for activity or gadolinium until an accepted review keeps them (split_by_confidence)
    low_confidence: int = 0

    @property
    def gadolinium_label(self) -> str:
        """The recommendation in capitals, as reports print it: RECOMMENDED, NOT NEEDED, or READER TO DECIDE (no
        counted lesion, but a changed region of tumefactive size or a low-confidence lesion the reader must
        judge)."""
        if self.gadolinium:
            return "RECOMMENDED"
        return "READER TO DECIDE" if self.unresolved_regions or self.low_confidence else "NOT NEEDED"

    @property
    def conclusion(self) -> str:
        """The sentence a radiologist reads: activity, then the gadolinium recommendation."""
        return f"{self.activity_text} {self.gadolinium_reason}"


def counts_for_activity(score: float | None, min_score: float | None) -> bool:
    """Whether a lesion of peak ``score`` counts for activity without the reader (:func:`split_by_confidence`):
    always when ``min_score`` is None (no threshold, or an accepted review) or the score is unknown."""
    return min_score is None or score is None or score >= min_score


def split_by_confidence(kinds: list[str], scores: list[float | None],
                        min_score: float | None) -> tuple[list[str], int]:
    """The lesions that count for activity without the reader, and how many do not: a lesion counts when its peak
    score reaches ``min_score`` (``MSConfig.activity_min_peak_score``). Lesions under it are low-confidence: they
    are reported and reviewed, and an accepted review that keeps them makes them count (the caller passes
    ``min_score=None`` then: every lesion counts, as does a score of None, i.e. unknown).

    Why two tiers: the lesion operating point (``PostParams.min_peak_score``, 0.0787) is chosen to find as many
    lesions as possible, and its weakest detections are where false positives of another anatomy sit (the
    independent simulator's MNI152 pairs: stable patients called active by one 21-30 mm^3 candidate of peak
    0.11-0.15; docs/ms-lesions-log.md "Workflow 1.18.0"). CAD of FLAIR subtraction in routine care has a technologist
    or radiologist confirm candidates before contrast is given; a lone low-confidence candidate is left to that
    reader instead of recommending gadolinium by itself."""
    if len(kinds) != len(scores):
        raise ValueError(f"{len(kinds)} lesion kinds but {len(scores)} scores")
    counted = [k for k, s in zip(kinds, scores, strict=True) if counts_for_activity(s, min_score)]
    return counted, len(kinds) - len(counted)


def ms_decision(kinds: list[str], unresolved_regions: int = 0, reader_marked: int = 0,
                low_confidence: int = 0) -> MSDecision:
    """Active when >= 1 new or enlarging lesion; gadolinium only when active.

    ``kinds``: the lesions that count (:func:`split_by_confidence`); ``low_confidence``: lesions detected under the
    activity threshold. They never make the scan active by themselves; when nothing else does, the sentences name
    them and leave activity and gadolinium to the reader (READER TO DECIDE), so "no new lesion, gadolinium not
    needed" is not said beside a listed lesion.

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
    if low_confidence < 0:
        raise ValueError(f"low_confidence must be >= 0, got {low_confidence}")
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
    elif low_confidence:
        many = low_confidence > 1
        activity = ("No new or enlarging T2-FLAIR lesion was found with confidence since the baseline scan; "
                    f"{low_confidence} low-confidence candidate lesion{'s are' if many else ' is'} listed for the "
                    f"reader to judge.")
        reason = (f"Gadolinium is for the reader to decide: if the reader takes {'a candidate' if many else 'it'} "
                  "for a new or enlarging lesion, contrast tells whether it is acutely active.")
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
    if active and low_confidence:
        many = low_confidence > 1
        activity += (f" {low_confidence} further low-confidence candidate lesion{'s are' if many else ' is'} listed "
                     "for the reader to judge.")
    return MSDecision(active, n_new, n_enl, active, activity, reason, unresolved_regions, reader_marked,
                      low_confidence)
