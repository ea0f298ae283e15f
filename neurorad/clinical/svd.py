"""Clinical rules of the small-vessel-disease workflows: WMH load, Fazekas-style grade proposal,
longitudinal change, microbleed location classes and distribution.

Every rule is a pure function of per-lesion measurements, so a reviewed result (lesions discarded by
the reader) is re-graded from the lesions that remain.

* Periventricular vs deep WMH: the "10 mm rule" (a lesion is periventricular when any of its voxels lies
  within 10 mm of the lateral ventricles; DeCarli et al., Stroke 2005; Griffanti et al., NeuroImage
  2018 compared it with the continuity rule).
* Fazekas-style grade proposal (Fazekas et al., AJR 1987), from measurements instead of visual
  impression; the rule is written into the result beside the grade:
  periventricular 0 = none, 1 = caps / pencil-thin lining (extends <= 5 mm from the ventricle wall),
  2 = smooth halo (<= 10 mm), 3 = irregular, extending into the deep white matter (> 10 mm);
  deep 0 = none, 1 = punctate foci (largest deep lesion < 10 mm across), 2 = beginning confluence
  (10-20 mm), 3 = large confluent areas (>= 20 mm). The overall proposal is the larger of the two.
  It is a proposal for the reader, not a validated grading.
* Size strata (Shan et al., PAPERS.md B1): small < 20, medium 20-150, large > 150 mm^3.
* Microbleed location (MARS, Gregoire et al., Neurology 2009): infratentorial (brainstem, cerebellum),
  deep (basal ganglia, thalamus, internal/external capsule, corpus callosum, deep and periventricular
  white matter) or lobar (cortex and subcortical white matter). Distribution: strictly lobar
  (the pattern of cerebral amyloid angiopathy in the Boston criteria 2.0, Charidimou et al., Lancet
  Neurol 2022) versus deep / infratentorial or mixed (the pattern of hypertensive arteriopathy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PERIVENTRICULAR_MM", "WMH_STRATA_MM3", "FAZEKAS_RULE", "WMHLesion", "FazekasProposal", "fazekas_proposal",
    "size_stratum", "volume_change", "CMB_LOCATIONS", "cmb_location", "cmb_distribution",
]

PERIVENTRICULAR_MM = 10.0
WMH_STRATA_MM3: dict[str, tuple[float, float]] = {"small": (0.0, 20.0), "medium": (20.0, 150.0),
                                                  "large": (150.0, float("inf"))}
FAZEKAS_RULE = (
    "Fazekas-style proposal from measurements: periventricular (lesions within 10 mm of the lateral "
    "ventricles) 0 none, 1 extends <= 5 mm from the ventricle wall (caps, pencil-thin lining), 2 <= 10 mm "
    "(smooth halo), 3 > 10 mm (irregular, into the deep white matter); deep 0 none, 1 largest lesion < 10 mm "
    "across (punctate), 2 10-20 mm (beginning confluence), 3 >= 20 mm (confluent); overall = the larger grade.")


@dataclass(frozen=True)
class WMHLesion:
    """What the rules need of one WMH lesion."""

    volume_mm3: float
    periventricular: bool
    extent_from_ventricle_mm: float  # largest distance of a lesion voxel from the ventricles
    max_diameter_mm: float  # largest extent across (bounding-box diagonal of the lesion's voxels)


@dataclass(frozen=True)
class FazekasProposal:
    periventricular: int
    deep: int
    overall: int
    rule: str = FAZEKAS_RULE


def fazekas_proposal(lesions: Sequence[WMHLesion]) -> FazekasProposal:
    """Fazekas-style grades (0-3) from lesion measurements (rule in :data:`FAZEKAS_RULE`)."""
    pv = [x for x in lesions if x.periventricular]
    deep = [x for x in lesions if not x.periventricular]
    if not pv:
        g_pv = 0
    else:
        ext = max(x.extent_from_ventricle_mm for x in pv)
        g_pv = 1 if ext <= 5.0 else 2 if ext <= 10.0 else 3
    if not deep:
        g_deep = 0
    else:
        d = max(x.max_diameter_mm for x in deep)
        g_deep = 1 if d < 10.0 else 2 if d < 20.0 else 3
    return FazekasProposal(g_pv, g_deep, max(g_pv, g_deep))


def size_stratum(volume_mm3: float) -> str:
    """``small`` (< 20 mm^3), ``medium`` (20-150) or ``large`` (>= 150), the WMH paper's strata."""
    for name, (lo, hi) in WMH_STRATA_MM3.items():
        if lo <= volume_mm3 < hi:
            return name
    return "large"


def volume_change(current_ml: float, prior_ml: float) -> tuple[float, float | None]:
    """(change in mL, change in % of the prior; None when the prior is 0)."""
    diff = float(current_ml) - float(prior_ml)
    return diff, (100.0 * diff / float(prior_ml)) if prior_ml > 0 else None


CMB_LOCATIONS = ("lobar", "deep", "infratentorial")

_INFRA_AAL = ("Cerebelum", "Vermis")
_DEEP_AAL = ("Caudate", "Putamen", "Pallidum", "Thalamus")
_INFRA_JHU = ("peduncle", "Pontine", "lemniscus", "Corticospinal", "Cerebral peduncle")
_DEEP_JHU = ("internal capsule", "External capsule", "corpus callosum", "Fornix", "thalamic radiation",
             "Sagittal stratum", "Corona radiata")


def cmb_location(aal_name: str, jhu_name: str, mni_z_mm: float | None = None) -> str:
    """``lobar``, ``deep`` or ``infratentorial`` from the AAL and JHU region names at a microbleed (MARS
    classes). Unlabelled points below the tentorium (MNI z < -25 mm) count as infratentorial."""
    a, j = aal_name or "", (jhu_name or "").lower()
    if any(k in a for k in _INFRA_AAL) or any(k.lower() in j for k in _INFRA_JHU):
        return "infratentorial"
    if any(k in a for k in _DEEP_AAL) or any(k.lower() in j for k in _DEEP_JHU):
        return "deep"
    if not a and not j and mni_z_mm is not None and mni_z_mm < -25.0:
        return "infratentorial"
    return "lobar"


def cmb_distribution(locations: Sequence[str]) -> str:
    """``none``, ``strictly lobar``, ``deep/infratentorial`` or ``mixed`` (MARS classes of each microbleed)."""
    locs = set(locations)
    unknown = locs - set(CMB_LOCATIONS)
    if unknown:
        raise ValueError(f"unknown microbleed locations {sorted(unknown)}")
    if not locs:
        return "none"
    if locs == {"lobar"}:
        return "strictly lobar"
    if "lobar" not in locs:
        return "deep/infratentorial"
    return "mixed"
