"""Intracerebral haematoma segmentation on non-contrast CT: the classical engine.

Acute blood is hyperdense, about 50-90 HU (clotted blood ~60-80 HU, against ~35-40 HU grey and
~25-30 HU white matter; Parizel et al., Eur Radiol 2001). The engine:

1. median filter (3 x 3 in-plane) against CT noise;
2. blood window ``window_hu`` (default 45-90 HU) inside the brain mask;
3. exclusions: **bone and calcification** (HU > ``calcification_hu`` = 100, grown by
   ``calc_margin_mm`` = 2 mm: choroid plexus, pineal and basal-ganglia calcifications and the
   skull's partial-volume rim are denser than blood) and **beam hardening/partial volume at the
   inner table** (voxels within ``skull_margin_mm`` = 3 mm of bone >= 150 HU; streaks there mimic
   blood);
4. 26-connected components; those smaller than ``min_component_ml`` (0.5 mL) are dropped, and
   holes are filled (a clot with a less dense core is one haematoma).

Operating points chosen on ich-pair phantoms (bench/ich.py); on real CT, thresholds are those
of the literature. The mask is on the CT's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from neurorad.image.volume import Volume
from neurorad.preprocess.ct_brain import distance_mm, median_filter
from neurorad.quantify.components import connected_components

__all__ = ["ClassicalHaematoma", "segment_haematoma", "ENGINES"]


@dataclass(frozen=True)
class ClassicalHaematoma:
    """Threshold + connected-component haematoma engine (module doc)."""

    window_hu: tuple[float, float] = (45.0, 90.0)
    calcification_hu: float = 100.0
    calc_margin_mm: float = 2.0
    bone_hu: float = 150.0
    skull_margin_mm: float = 3.0
    min_component_ml: float = 0.5

    name = "classical"
    version = "1.0"

    def segment(self, ct: Volume, brain: Volume) -> Volume:
        """Binary haematoma mask (uint8) on the CT grid."""
        spacing = tuple(float(s) for s in ct.spacing_mm)
        inside_full = np.asarray(brain.data) > 0
        out = np.zeros(inside_full.shape, bool)
        if not inside_full.any():
            return ct.with_data(out.astype(np.uint8), segmentation=f"{self.name} {self.version}")
        # the brain's bounding box plus a margin that holds the skull rim the exclusions need
        pad = np.ceil((max(self.skull_margin_mm, self.calc_margin_mm) + 3.0) / np.asarray(spacing)).astype(int)
        idx = np.argwhere(inside_full)
        lo, hi = np.maximum(idx.min(0) - pad, 0), idx.max(0) + pad + 1
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        raw = np.asarray(ct.data, np.float32)[box]
        data = median_filter(raw)
        inside = inside_full[box]
        dense = raw > self.calcification_hu
        near_dense = distance_mm(dense, spacing) <= self.calc_margin_mm
        bone = data >= self.bone_hu
        near_bone = distance_mm(bone, spacing) <= self.skull_margin_mm
        blood = (data >= self.window_hu[0]) & (data <= self.window_hu[1]) & inside & ~near_dense & ~near_bone
        labels, n = connected_components(blood, 26)
        if n:
            counts = np.bincount(labels.ravel())[1:] * ct.voxel_volume_mm3 / 1000.0
            keep = np.flatnonzero(counts >= self.min_component_ml) + 1
            blood = np.isin(labels, keep)
            blood = ndimage.binary_fill_holes(blood)
        out[box] = blood
        blood = out
        return ct.with_data(blood.astype(np.uint8), segmentation=f"{self.name} {self.version}")


ENGINES: dict[str, str] = {
    "classical": "blood window 45-90 HU inside the CT brain mask, calcification and skull-rim exclusions, "
                 "components >= 0.5 mL",
}


def segment_haematoma(ct: Volume, brain: Volume, engine: str = "classical") -> Volume:
    """Haematoma mask of ``ct`` with the named engine."""
    if engine == "classical":
        return ClassicalHaematoma().segment(ct, brain)
    raise ValueError(f"unknown haematoma engine {engine!r}; engines: {', '.join(ENGINES)}")
