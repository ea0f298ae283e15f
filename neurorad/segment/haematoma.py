"""Intracerebral haematoma segmentation on non-contrast CT: the classical engine and the learned ones.

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

Learned engines (:func:`learned_haematoma`): ``unet2d`` is the shipped starter model ``ich-unet2d`` (a 2D
U-Net on a 2 mm grid trained on synthetic ICH CT phantoms by ``python -m neurorad.workflows.ich.train``; its
card says it must be validated locally); any other engine name is a model reference: a registry
``name[@version]``, a model folder, or ``nnunet:FOLDER`` for a site's nnU-Net v2 results folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from neurorad.errors import InputError
from neurorad.image.volume import Volume
from neurorad.preprocess.ct_brain import distance_mm, median_filter
from neurorad.quantify.components import connected_components

__all__ = ["ClassicalHaematoma", "segment_haematoma", "learned_haematoma", "learned_segmenter", "engine_record",
           "haematoma_classes", "ENGINES", "LEARNED_MODEL"]

#: the shipped learned starter model (registry name@version; retrain: neurorad.workflows.ich.train)
LEARNED_MODEL = "ich-unet2d@0.1.0"


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
    "unet2d": f"learned starter model {LEARNED_MODEL} (2D U-Net, 2 mm grid, trained on synthetic ICH CT phantoms; "
              "card: synthetic, validate locally)",
}

#: label names a site model's haematoma class may carry (case-insensitive substrings)
HAEMATOMA_LABEL_WORDS = ("haemat", "hemat", "haemorrh", "hemorrh", "ich", "blood", "bleed")


def _model_ref(engine: str) -> str:
    """The model reference behind a learned engine name: ``unet2d`` is the shipped starter; anything else
    is taken as a registry ``name[@version]``, a model folder, or ``nnunet:FOLDER`` (a site's nnU-Net v2
    results folder through :class:`neurorad.segment.nnunet.NnUNetSegmenter`)."""
    return LEARNED_MODEL if engine == "unet2d" else engine


@lru_cache(maxsize=4)
def learned_segmenter(engine: str):  # noqa: ANN201 - a neurorad.segment Segmenter
    """The Segmenter of a learned engine (cached: a pair loads and hash-checks the model once)."""
    ref = _model_ref(engine)
    from neurorad.segment.engine import open_model_reference

    try:
        return open_model_reference(ref)
    except InputError as exc:
        hint = (" (retrain the starter with `python -m neurorad.workflows.ich.train --out RUN`)"
                if ref == LEARNED_MODEL else "")
        raise InputError(f"haematoma engine {engine!r}: {exc.problem}; engines: {', '.join(ENGINES)}, or a "
                         f"registry model name[@version], a model folder, nnunet:FOLDER{hint}") from exc


def haematoma_classes(labels: dict[int, str]) -> list[int]:
    """The classes of a model counted as haematoma: those named like blood (:data:`HAEMATOMA_LABEL_WORDS`),
    else every foreground class."""
    named = [k for k, v in labels.items() if k != 0 and any(w in str(v).lower() for w in HAEMATOMA_LABEL_WORDS)]
    return named or [k for k in labels if k != 0]


def learned_haematoma(ct: Volume, brain: Volume, engine: str = "unet2d", threshold: float = 0.5,
                      min_component_ml: float = 0.5) -> tuple[Volume, dict]:
    """Haematoma mask (uint8, on the CT grid) from a learned engine, and the model's provenance record.

    The summed probability of the haematoma classes (:func:`haematoma_classes`) >= ``threshold``, inside the
    brain mask (intracerebral blood, as the classical engine), components < ``min_component_ml`` dropped and
    holes filled (the classical engine's clean-up, so the engines differ only in the voxel decision)."""
    seg = learned_segmenter(engine)
    res = seg.predict([ct])
    p = np.asarray(res.probabilities.data, np.float32)
    cls = haematoma_classes(res.labels)
    blood = (p[..., cls].sum(axis=-1) >= threshold) & (np.asarray(brain.data) > 0)
    labels, n = connected_components(blood, 26)
    if n:
        counts = np.bincount(labels.ravel())[1:] * ct.voxel_volume_mm3 / 1000.0
        blood = ndimage.binary_fill_holes(np.isin(labels, np.flatnonzero(counts >= min_component_ml) + 1))
    record = {"name": seg.name, "version": seg.version, "sha256": seg.weights_sha256 or "",
              "classes": [res.labels[c] for c in cls]}
    return ct.with_data(blood.astype(np.uint8), segmentation=f"{seg.name} {seg.version}"), record


def segment_haematoma(ct: Volume, brain: Volume, engine: str = "classical") -> Volume:
    """Haematoma mask of ``ct`` with the named engine (``classical``, ``unet2d`` or a model reference,
    :func:`learned_haematoma`); the mask's ``segmentation`` metadata names the engine and version."""
    if engine == "classical":
        return ClassicalHaematoma().segment(ct, brain)
    return learned_haematoma(ct, brain, engine)[0]


def engine_record(engine: str) -> dict:
    """Name, version, weights sha256 and kind of an engine (provenance of a result)."""
    if engine == "classical":
        return {"name": "ich-classical", "version": ClassicalHaematoma.version, "sha256": "", "kind": "classical"}
    seg = learned_segmenter(engine)
    return {"name": seg.name, "version": seg.version, "sha256": seg.weights_sha256 or "", "kind": "learned"}
