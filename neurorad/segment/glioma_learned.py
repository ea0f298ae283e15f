"""Learned glioma engines: the shipped starter 3D model and a site's own model (registry or nnU-Net v2).

Issue 12's engines (a) and (b) beside the classical baseline (:mod:`neurorad.segment.glioma_classical`):

* ``unet3d``: the shipped starter :data:`LEARNED_MODEL` (a 3D U-Net on a 2 mm grid trained with
  :mod:`neurorad.segment.train` on glioma phantoms; retrain: :mod:`neurorad.workflows.glioma.train`);
* any other engine string is a model reference: a registry ``name[@version]``, a model folder, or
  ``nnunet:FOLDER`` for a site's nnU-Net v2 results folder (the way HD-GLIO-like models are shared), run
  through nnU-Net's own predictor (:class:`neurorad.segment.nnunet.NnUNetSegmenter`).

A model is matched to EASE's three regions (PAPERS.md A2) by the NAMES in its labels, so a BraTS-style model
works as it was trained: necrosis / necrotic core / NCR / non-enhancing core -> 1; oedema / edema / ED / peritumoral
/ non-enhancing T2-FLAIR hyperintensity / non-enhancing tumour (NET) -> 2 (EASE's non-enhancing region is the
whole T2-FLAIR hyperintensity that does not enhance); enhancing / ET -> 3. A label that matches none is refused
with the list of labels found (a site's model must say what its classes are). Channels are matched by name in the
same way (T1; T1c / T1ce / T1Gd / T1-post; T2; FLAIR / T2-FLAIR).

The inputs are the four co-registered, bias-corrected sequences on the T1c grid, skull-stripped (zero outside
the brain mask: HD-GLIO and BraTS-style nnU-Net models are trained on skull-stripped images). The class of each
voxel is the arg-max of the region probabilities inside the brain; the components rule (size and fraction of the
largest) is the classical engine's, so the engines differ only in the voxel decision.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np

from neurorad.errors import InputError
from neurorad.image.volume import Volume

__all__ = ["CHANNELS", "LABEL_NAMES", "LEARNED_MODEL", "ENGINES", "learned_segmenter", "region_of_label",
           "channel_order", "segment_glioma_learned", "engine_record"]

#: the shipped learned starter model (registry name@version; retrain: neurorad.workflows.glioma.train)
LEARNED_MODEL = "glioma-unet3d@0.1.0"
#: the workflow's sequences, in the starter model's channel order
CHANNELS = ("t1", "t1c", "t2", "flair")
#: the starter model's labels (index = class value = EASE region value of glioma_classical.LABELS)
LABEL_NAMES = ("background", "necrosis", "non_enhancing", "enhancing")
ENGINES = {
    "unet3d": f"learned starter model {LEARNED_MODEL} (3D U-Net, 2 mm grid, trained on synthetic glioma phantoms; "
              "validate locally)",
}

# label-name patterns per region, tried in this order (necrosis and "non-enhancing core" before the
# non-enhancing hyperintensity; "non-enhancing" before "enhancing")
_REGION_PATTERNS: tuple[tuple[int, str], ...] = (
    (1, r"necro|\bncr\b|non.?enhancing.?(tumou?r.?)?core|\bnetc\b|\bcore\b"),
    (2, r"o?edema|\bed\b|peritumou?ral|hyperintens|flair|non.?enhancing|\bnet\b|infiltrat"),
    (3, r"enhanc|\bet\b|\bgd\b"),
)
_CHANNEL_PATTERNS: tuple[tuple[str, str], ...] = (
    ("flair", r"flair"),
    ("t1c", r"t1.?(c|ce|gd|post|contrast|\+c)\b|t1.?(gd|post|contrast)|t1c"),
    ("t2", r"t2"),
    ("t1", r"t1"),
)


def region_of_label(name: str) -> int | None:
    """EASE region (1 necrosis, 2 non-enhancing, 3 enhancing) of a model's label name; None for background."""
    n = name.strip().lower().replace("_", " ").replace("-", " ")
    if n in ("background", "bg", "0", "") or n.startswith("background"):
        return None
    for region, pat in _REGION_PATTERNS:
        if re.search(pat, n):
            return region
    raise InputError(f"glioma engine: cannot match the model label {name!r} to a region (necrosis, oedema / "
                     "non-enhancing, enhancing); name the model's labels in its dataset.json or card")


def channel_order(contrasts: tuple[str, ...] | list[str], model: str) -> list[str]:
    """The workflow sequence (``t1``/``t1c``/``t2``/``flair``) for each of a model's input channels, by name."""
    out = []
    for c in contrasts:
        low = str(c).lower().replace("_", "").replace(" ", "")
        seq = next((s for s, pat in _CHANNEL_PATTERNS if re.search(pat, low)), None)
        if seq is None:
            raise InputError(f"glioma engine {model}: input channel {c!r} is none of T1, T1c, T2, FLAIR")
        out.append(seq)
    if len(set(out)) != len(out):
        raise InputError(f"glioma engine {model}: channels {list(contrasts)} map to {out} (a sequence twice)")
    return out


def _model_ref(engine: str) -> str:
    return LEARNED_MODEL if engine == "unet3d" else engine


@lru_cache(maxsize=4)
def learned_segmenter(engine: str) -> Any:  # a neurorad.segment Segmenter
    """The Segmenter behind a learned engine name or model reference (cached: loaded and hash-checked once)."""
    ref = _model_ref(engine)
    from neurorad.segment.engine import open_model_reference

    try:
        return open_model_reference(ref)
    except InputError as exc:
        hint = (" (retrain the starter with `python -m neurorad.workflows.glioma.train --out RUN`)"
                if ref == LEARNED_MODEL else "")
        raise InputError(f"glioma engine {engine!r}: {exc.problem}; engines: classical, {', '.join(ENGINES)}, or a "
                         f"registry model name[@version], a model folder, nnunet:FOLDER{hint}") from exc


def engine_record(engine: str) -> dict[str, str]:
    """Name, version, weights sha256 and kind of a learned engine (provenance of a result)."""
    seg = learned_segmenter(engine)
    return {"name": seg.name, "version": seg.version, "sha256": getattr(seg, "weights_sha256", "") or "",
            "kind": "learned"}


def segment_glioma_learned(sequences: dict[str, Volume], brain: np.ndarray, engine: str = "unet3d",
                           params: Any = None) -> Any:
    """EASE's regions from a learned engine: a :class:`~neurorad.segment.glioma_classical.GliomaSegmentation`
    on the grid of ``sequences["t1c"]`` (module doc). ``params``: the classical engine's
    :class:`~neurorad.segment.glioma_classical.GliomaParams` (only its components rule is used)."""
    from neurorad.segment.glioma_classical import GliomaParams, components_rule

    p = params or GliomaParams()
    seg = learned_segmenter(engine)
    order = channel_order(seg.contrasts, seg.name)
    brain = np.asarray(brain, bool)
    vols = []
    for s in order:
        v = sequences[s]
        if v.spatial_shape != brain.shape:
            raise InputError(f"glioma engine: {s.upper()} grid {v.spatial_shape} differs from the brain mask "
                             f"{brain.shape}")
        vols.append(v.with_data(np.where(brain, np.asarray(v.data, np.float32), 0.0).astype(np.float32)))
    res = seg.predict(vols)
    prob = np.asarray(res.probabilities.data, np.float32)
    if prob.shape[:3] != brain.shape:
        raise InputError(f"glioma engine {seg.name}: probabilities on grid {prob.shape[:3]}, expected "
                         f"{brain.shape} (the T1c grid)")
    regions = np.zeros((*brain.shape, 4), np.float32)  # background, necrosis, non-enhancing, enhancing
    for k, name in res.labels.items():
        r = region_of_label(name) if k != 0 else None
        regions[..., 0 if r is None else r] += prob[..., k]
    classes = np.argmax(regions, axis=-1).astype(np.uint8)
    classes[~brain] = 0
    return components_rule(classes, sequences["t1c"].spacing_mm, p)
