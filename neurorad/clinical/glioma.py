"""Clinical rules of glioma volumetry (EASE, PAPERS.md A): volume change against earlier time points
and the 2D-first reading protocol.

* Progression threshold: a volume increase of >= 40 % is the volume equivalent of RANO's >= 25 %
  increase of the bidimensional product: for a shape growing alike in every direction the product
  scales with the square and the volume with the cube of its size, so (1.25)^(3/2) = 1.40 (Wen et
  al., J Clin Oncol 2010; EASE flags changes of >= 40 %).
* Response threshold: a 50 % decrease of the product is (0.5)^(3/2) = 0.35 of the volume, i.e. a
  >= 65 % volume decrease.
* Comparisons are made only when every time point was accepted by a radiologist, and never across
  an incompatible software version (the software-update protocol, ``neurorad reference-set``).
* The reader records the 2D-based assessment first; when the volume-based one differs, a second
  radiologist records an independent opinion before seeing the first (EASE A4).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROGRESSION_VOLUME_INCREASE", "RESPONSE_VOLUME_DECREASE", "ASSESSMENTS", "VolumeComparison",
           "compare_volume", "volume_assessment", "needs_second_reader"]

PROGRESSION_VOLUME_INCREASE = 0.40
RESPONSE_VOLUME_DECREASE = 0.65
ASSESSMENTS = ("progression", "stable", "response")


@dataclass(frozen=True)
class VolumeComparison:
    """The current volume against one earlier time point (``label`` e.g. ``t-1``)."""

    label: str
    prior_ml: float
    current_ml: float
    change_ml: float
    change_fraction: float | None  # None when the prior volume is 0
    flagged: bool  # |change| reaches the progression or response threshold

    @property
    def change_percent(self) -> float | None:
        return None if self.change_fraction is None else round(100.0 * self.change_fraction, 1)


def compare_volume(label: str, prior_ml: float, current_ml: float) -> VolumeComparison:
    """Change of ``current_ml`` against ``prior_ml``; flagged at >= +40 % or <= -65 % (or new tumour)."""
    if prior_ml < 0 or current_ml < 0:
        raise ValueError("volumes must be >= 0")
    change = current_ml - prior_ml
    frac = None if prior_ml == 0 else change / prior_ml
    if frac is None:
        flagged = current_ml > 0
    else:
        flagged = frac >= PROGRESSION_VOLUME_INCREASE or frac <= -RESPONSE_VOLUME_DECREASE
    return VolumeComparison(label, prior_ml, current_ml, change, frac, flagged)


def volume_assessment(comparison: VolumeComparison) -> str:
    """progression / stable / response from one comparison (thresholds above)."""
    if comparison.change_fraction is None:
        return "progression" if comparison.current_ml > 0 else "stable"
    if comparison.change_fraction >= PROGRESSION_VOLUME_INCREASE:
        return "progression"
    if comparison.change_fraction <= -RESPONSE_VOLUME_DECREASE:
        return "response"
    return "stable"


def needs_second_reader(assessment_2d: str | None, assessment_volume: str | None) -> bool:
    """EASE: a second radiologist reads the study when the 2D and the volume-based assessments differ."""
    return bool(assessment_2d and assessment_volume and assessment_2d != assessment_volume)
