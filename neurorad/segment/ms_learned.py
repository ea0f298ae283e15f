"""Learned MS engine (issue 17): a two-time-point network, and its fusion with the classical engine.

The network (:data:`LEARNED_MODEL`, a small 3D U-Net trained on widened MS phantoms by
:mod:`neurorad.workflows.ms_lesions.train`) takes the workflow's normalised baseline and registered
follow-up FLAIR in the common halfway space as two channels, as the MUSIC workflow's nnU-Net takes its
time points (PAPERS.md), and gives the probability of a new or enlarging lesion per voxel.

Engines of the workflow's candidate step (``MSConfig.lesion_engine``):

* ``classical``: the difference-image score of :mod:`neurorad.segment.ms_difference` (default);
* ``learned``: the network's probability, mapped onto the classical score's scale
  (:func:`probability_to_score`: ``extent_probability`` -> the scale's extent anchor 0.01 (the post-processing's
  binarisation threshold), ``core_probability`` -> its core anchor 0.1, 1 -> 1), so the same post-processing,
  false-positive rules, new/enlarging classification, delineation and FROC apply unchanged. The two anchors
  are the engine's operating point, chosen by a sweep on widened tuning pairs (``bench/ms_sweep.py --engine
  learned``; docs/ms-lesions-log.md "Workflow 1.10.0"), one pair for the learned engine alone and one for the
  learned part of the fusion engine (``fusion_extent_probability``, ``fusion_core_probability``). They belong
  to a model's calibration, so they live on the model's card (``operating_point``, :func:`set_operating_point`;
  ms-unet3d 0.2.0: 0.08 / 0.4 alone, 0.3 / 0.5 in fusion, where lower anchors found no lesion more and only
  added false positives; 0.3.0: 0.05 / 0.2 alone, 0.3 / 0.5 in fusion, "Workflow 1.15.0"), a
  ``LearnedParams`` anchor overrides the card's, and a card without one falls back on :data:`DEFAULT_ANCHORS`;
* ``fusion``: a lesion is reported when EITHER engine is confident about it and its own rules keep it
  (:func:`merge_engine_lesions`: each engine runs the whole detection, post-processing to delineation, on
  its own score; the classical lesions unchanged, each learned lesion joined to the classical one it overlaps
  or added); the score of the lesion table (peaks, FROC) is the voxel-wise maximum of the two
  (:func:`fuse_scores`). Where the engines disagree
  strongly on a reported lesion (one confident, ``peak >= disagree_score``, the other not seeing it at all,
  ``peak < 0.01``), the run raises a quality warning (:func:`disagreement_warning`), which the platform
  shows as a quality alarm: ensemble disagreement as the uncertainty signal of learned segmentation
  (the k-fold ensembles of :mod:`neurorad.segment.engine` use member disagreement the same way).

The model is loaded and its file hashes checked once per process (:func:`learned_segmenter`), before the
workflow's first step; a model with the wrong inputs or labels is refused with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from neurorad.errors import InputError
from neurorad.image.volume import Volume
from neurorad.segment.ms_difference import SCORE_AT_CORE, SCORE_AT_EXTENT

__all__ = ["LEARNED_MODEL", "CHANNELS", "LABEL_NAMES", "LESION_ENGINES", "DEFAULT_ANCHORS", "LearnedParams",
           "model_operating_point", "set_operating_point", "learned_segmenter",
           "check_model", "engine_record", "learned_probability", "probability_to_score", "fuse_scores",
           "engine_disagreement", "disagreement_warning", "apply_lesion_engine", "merge_engine_lesions"]

#: the shipped learned MS model (registry name@version; retrain: neurorad.workflows.ms_lesions.train)
LEARNED_MODEL = "ms-unet3d@0.3.0"
#: the model's input channels, in order (the workflow's normalised common-space pair)
CHANNELS = ("BASELINE_FLAIR", "FOLLOWUP_FLAIR")
#: the model's classes (index = class value)
LABEL_NAMES = ("background", "new_or_enlarging")
#: the candidate step's engines (``MSConfig.lesion_engine``)
LESION_ENGINES = ("classical", "learned", "fusion")


#: the anchors an engine falls back on when neither its parameters nor the model's card give them
#: (``(extent_probability, core_probability)``; ms-unet3d 0.2.0's swept point, workflow 1.10.0)
DEFAULT_ANCHORS: dict[str, tuple[float, float]] = {"learned": (0.08, 0.4), "fusion": (0.3, 0.5)}
#: LearnedParams' anchor fields (probabilities; None: the model card's)
ANCHOR_FIELDS = ("extent_probability", "core_probability", "fusion_extent_probability", "fusion_core_probability")


@dataclass(frozen=True)
class LearnedParams:
    """The learned engine's model and how its probability joins the classical score scale.

    The probability anchors are the engine's operating point. They belong to a model's calibration, so they
    are read from the model card's ``operating_point`` (:func:`model_operating_point`, written by
    :func:`set_operating_point` after a sweep); an anchor given here (``--set learned.core_probability=...``)
    overrides the card, and a card without one falls back on :data:`DEFAULT_ANCHORS`. :meth:`resolve` gives
    the anchors a run uses; the candidate step records them and where they came from."""

    model: str = LEARNED_MODEL  # registry name[@version] or a model folder
    # the learned engine's operating point, as probability anchors (probability_to_score); None: the card's.
    # ms-unet3d 0.2.0's card: 0.08 / 0.4 (workflow 1.10.0), from a sweep on the 48 widened tuning pairs 0-47 at
    # 1 mm (bench/ms_sweep.py --engine learned): extent/core 0.3/0.5, 0.15/0.3, 0.08/0.15, 0.03/0.06 found 71,
    # 76, 78, 78 of 93 lesions at 0.021, 0.042, 0.167, 0.188 FP per patient. A low extent lets the candidate
    # cover the lesion (the 40 % rule, the delineation); the core then only sorts candidates: with extent 0.08
    # the 78 hold for cores up to about 0.47 (one lost from 0.5) while FP fall, 0.3: 0.062, 0.4: 0.021 per
    # patient. 0.4: the fewest FP at full sensitivity with a margin to the edge. Before 1.10.0: 0.3 / 0.5.
    # ms-unet3d 0.3.0's card (workflow 1.15.0): 0.05 / 0.2, the most tuning lesions (80 of 93) with no FP at any
    # setting tried (bench/results/ms_learned_operating_point_0_3_0.json); fusion keeps 0.3 / 0.5
    extent_probability: float | None = None  # -> score 0.01 (SCORE_AT_EXTENT, the post-processing's binarisation)
    core_probability: float | None = None  # -> score 0.1 (SCORE_AT_CORE: "confident")
    # the same anchors for the learned part of the fusion engine; 0.2.0's card: 0.3 / 0.5. In the same sweep
    # (--engine fusion) fusion found 84/93 at every setting and its false positives rose from 0.083 to 0.125,
    # 0.250 and 0.271 per patient: the lesions a lower learned threshold adds are the classical engine's already
    fusion_extent_probability: float | None = None
    fusion_core_probability: float | None = None
    disagree_score: float = 0.5  # fusion: one engine's peak >= this while the other's < 0.01 -> quality warning
    # test-time mirroring: the network's probability averaged over the image as it is and mirrored along these axes
    # of its RAS working grid (0: left-right; every combination of the axes given; (): none). The model was
    # trained with mirroring on every axis (neurorad.segment.train's mirror_augment), so each pass is an image of
    # the kind it learned; nnU-Net mirrors over all axes at inference (Isensee et al., Nat Methods 2021). Tried in
    # session 50 with left-right mirroring (one pass more, about 4 s a pair on one core): on the 384 widened
    # tuning pairs 699 -> 700 of 767 lesions at the same 50 false positives (one lesion lost, two gained, a
    # confident false positive on a stable pair traded for another), so none by default (docs/ms-lesions-log.md
    # "Tried 2026-12-07 (session 50)"). Ignored for an nnU-Net folder (nnunet:...), which mirrors as its plans say.
    mirror_axes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        axes = tuple(self.mirror_axes)
        if len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
            raise ValueError(f"LearnedParams: mirror_axes must be distinct axes 0, 1 or 2, got {self.mirror_axes}")
        object.__setattr__(self, "mirror_axes", tuple(int(a) for a in axes))
        for name in ANCHOR_FIELDS:
            v = getattr(self, name)
            if v is not None and not 0.0 < v < 1.0:
                raise ValueError(f"LearnedParams: {name} must be in (0, 1), got {v}")
        for engine in ("learned", "fusion"):
            extent, core = self._given(engine)
            if extent is not None and core is not None:
                _check_anchors(engine, extent, core, "LearnedParams")

    def _given(self, engine: str) -> tuple[float | None, float | None]:
        if engine == "fusion":
            return self.fusion_extent_probability, self.fusion_core_probability
        if engine == "learned":
            return self.extent_probability, self.core_probability
        raise ValueError(f"LearnedParams.anchors: unknown engine {engine!r} (learned, fusion)")

    def _resolved(self, engine: str, card_point: dict[str, Any] | None) -> tuple[float, float, str]:
        """``engine``'s anchors, each as given here, else the card's, else the default, and where they came from
        (``parameters``, ``model card``, ``default``; joined with `` + `` when they differ)."""
        card = (card_point or {}).get(engine)
        values, sources = [], set()
        for i, g in enumerate(self._given(engine)):
            if g is not None:
                values.append(g)
                sources.add("parameters")
            else:
                values.append(card[i] if card else DEFAULT_ANCHORS[engine][i])
                sources.add("model card" if card else "default")
        _check_anchors(engine, values[0], values[1], "LearnedParams with its card's or the default anchors")
        return float(values[0]), float(values[1]), " + ".join(sorted(sources))

    def anchors(self, engine: str = "learned", card_point: dict[str, Any] | None = None) -> tuple[float, float]:
        """``(extent_probability, core_probability)`` of ``engine`` (``learned`` alone or ``fusion``): each
        anchor as given here, else the model card's ``card_point`` (:func:`model_operating_point`), else
        :data:`DEFAULT_ANCHORS`."""
        return self._resolved(engine, card_point)[:2]

    def resolve(self, card_point: dict[str, Any] | None = None) -> tuple[LearnedParams, dict[str, Any]]:
        """These parameters with every anchor filled in (:meth:`anchors`), and a record of the operating point
        for provenance: each engine's anchors and where they came from (``parameters``, ``model card``,
        ``default``; mixed when some anchors were given and the rest read)."""
        from dataclasses import replace

        (le, lc, ls), (fe, fc, fs) = self._resolved("learned", card_point), self._resolved("fusion", card_point)
        record = {"learned": {"extent_probability": le, "core_probability": lc, "source": ls},
                  "fusion": {"extent_probability": fe, "core_probability": fc, "source": fs}}
        return replace(self, extent_probability=le, core_probability=lc, fusion_extent_probability=fe,
                       fusion_core_probability=fc), record


def _check_anchors(engine: str, extent: float, core: float, what: str) -> None:
    if not 0.0 < extent < core < 1.0:
        prefix = "" if engine == "learned" else "fusion_"
        raise ValueError(f"{what}: need 0 < {prefix}extent_probability < {prefix}core_probability < 1, got "
                         f"{extent} and {core}")


def model_operating_point(ref: str) -> dict[str, tuple[float, float]] | None:
    """The operating point on the card of model ``ref`` (``operating_point``: per engine ``learned`` / ``fusion``
    its ``extent_probability`` and ``core_probability``), or None when the card has none. A malformed one is
    an error naming the model."""
    from neurorad.segment.registry import find_model

    info = find_model(ref, check=False)
    raw = info.card.get("operating_point")
    if raw is None:
        return None
    out: dict[str, tuple[float, float]] = {}
    try:
        for engine in ("learned", "fusion"):
            if engine in raw:
                e, c = float(raw[engine]["extent_probability"]), float(raw[engine]["core_probability"])
                _check_anchors(engine, e, c, f"model {info.name}@{info.version} card operating_point")
                out[engine] = (e, c)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"MS learned engine: model {info.name}@{info.version} has a malformed operating_point on "
                         f"its card ({exc})", info.path) from exc
    return out or None


def set_operating_point(model_dir: str, learned: tuple[float, float] | None = None,
                        fusion: tuple[float, float] | None = None, chosen_by: str = "") -> dict[str, Any]:
    """Write an operating point (per engine ``(extent_probability, core_probability)``) onto the card of the model
    folder ``model_dir``, with how it was chosen (the sweep's command and result): the anchors that
    :class:`LearnedParams` then reads for that model. The weights' hashes are unchanged (the card is not hashed)."""
    from neurorad.errors import ProcessingError
    from neurorad.segment.registry import finalize_folder, read_card, verify

    card = read_card(model_dir)
    problems = verify(model_dir)
    if problems:  # finalize_folder re-hashes the files: it must not bless a changed one
        raise ProcessingError(f"model folder {model_dir} failed verification, its card is left as it was: "
                              f"{'; '.join(problems)}")
    point: dict[str, Any] = dict(card.get("operating_point") or {})
    for engine, anchors in (("learned", learned), ("fusion", fusion)):
        if anchors is not None:
            _check_anchors(engine, anchors[0], anchors[1], "set_operating_point")
            point[engine] = {"extent_probability": float(anchors[0]), "core_probability": float(anchors[1])}
    if chosen_by:
        point["chosen_by"] = chosen_by
    return finalize_folder(model_dir, {**{k: v for k, v in card.items() if k != "files"}, "operating_point": point})


def check_model(seg: Any, ref: str) -> None:
    """Refuse a model that is not a two-time-point lesion model: two input channels (baseline, follow-up)
    and a background class plus at least one lesion class."""
    n_in = len(getattr(seg, "contrasts", ()))
    if n_in != len(CHANNELS):
        raise InputError(f"MS learned engine: model {ref} takes {n_in} input channel(s) "
                         f"({', '.join(map(str, getattr(seg, 'contrasts', ()))) or 'none'}); the MS engine needs 2 "
                         "(baseline FLAIR, registered follow-up FLAIR)")
    labels = dict(getattr(seg, "labels", {}))
    if len(labels) < 2 or 0 not in labels:
        raise InputError(f"MS learned engine: model {ref} has labels {labels}; expected background (0) and a "
                         "new/enlarging lesion class")


@lru_cache(maxsize=4)
def learned_segmenter(ref: str, mirror_axes: tuple[int, ...] = ()) -> Any:  # a neurorad.segment Segmenter
    """The Segmenter of a model reference, loaded and hash-checked once per process, checked to be a
    two-time-point lesion model (:func:`check_model`); ``mirror_axes``: its test-time mirroring
    (``LearnedParams.mirror_axes``; ``()``: none)."""
    from neurorad.segment.engine import open_model_reference

    try:
        seg = open_model_reference(ref, tuple(mirror_axes))
    except InputError as exc:
        hint = (" (retrain it with `python -m neurorad.workflows.ms_lesions.train --out RUN` and "
                "`neurorad model import RUN/run/model`)" if ref == LEARNED_MODEL else "")
        raise InputError(f"MS learned engine: model {ref!r}: {exc.problem}{hint}") from exc
    check_model(seg, ref)
    return seg


def engine_record(ref: str, mirror_axes: tuple[int, ...] = ()) -> dict[str, Any]:
    """Name, version and weights SHA-256 of the learned model, the numeric engine that runs it here
    (``inference_engine``: the card's preferred engine, or its float32 fallback on a CPU without native bfloat16;
    the two differ by a few probability hundredths at single voxels) and its test-time mirroring
    (``mirror_axes``, as run: ``[]`` for none or for an nnU-Net folder, which mirrors by its own plans): the
    provenance of a result."""
    seg = learned_segmenter(ref, tuple(mirror_axes))
    # learned_segmenter always gives its axes, so a mirroring segmenter has them (an nnU-Net folder has none)
    axes = list(getattr(getattr(seg, "inference", None), "mirror_axes", None) or ())
    return {"name": seg.name, "version": seg.version, "sha256": getattr(seg, "weights_sha256", "") or "",
            "inference_engine": str(getattr(seg, "engine", "") or ""), "mirror_axes": axes}


def learned_probability(seg: Any, baseline: Volume, followup: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The network's new-or-enlarging probability (sum of its non-background classes) on ``baseline``'s
    grid, zero outside ``brain``. ``baseline``: the normalised baseline on the common grid; ``followup``:
    the normalised follow-up array on the same grid."""
    brain = np.asarray(brain, bool)
    if baseline.spatial_shape != brain.shape or np.shape(followup) != brain.shape:
        raise InputError(f"MS learned engine: baseline {baseline.spatial_shape}, follow-up {np.shape(followup)} "
                         f"and brain mask {brain.shape} must share one grid")
    b = baseline.with_data(np.where(brain, np.asarray(baseline.data, np.float32), 0.0).astype(np.float32))
    f = baseline.with_data(np.where(brain, np.asarray(followup, np.float32), 0.0).astype(np.float32))
    res = seg.predict([b, f])
    prob = np.asarray(res.probabilities.data, np.float32)
    if prob.shape[:3] != brain.shape:
        raise InputError(f"MS learned engine {seg.name}: probabilities on grid {prob.shape[:3]}, expected "
                         f"{brain.shape}")
    p = np.clip(prob[..., 1:].sum(-1), 0.0, 1.0)
    return np.where(brain, p, 0.0).astype(np.float32)


def probability_to_score(p: np.ndarray, params: LearnedParams, score_at_extent: float = SCORE_AT_EXTENT,
                         score_at_core: float = SCORE_AT_CORE, engine: str = "learned") -> np.ndarray:
    """Map a probability onto the classical score scale, piecewise linear and increasing:
    0 -> 0, ``extent_probability`` -> ``score_at_extent``, ``core_probability`` -> ``score_at_core``,
    1 -> 1 (a score then means the same for both engines), with ``engine``'s anchors
    (:meth:`LearnedParams.anchors`). The score side is the scale's fixed anchors
    (``ms_difference.SCORE_AT_EXTENT`` / ``SCORE_AT_CORE``, the regional workflow's 0.01 and 0.1), not a run's
    post-processing thresholds: neither a lowered FROC floor nor the lesion operating point moves the scores."""
    extent, core = params.anchors(engine)
    xp = [0.0, extent, core, 1.0]
    fp = [0.0, score_at_extent, score_at_core, 1.0]
    return np.interp(np.asarray(p, np.float64), xp, fp).astype(np.float32)


def fuse_scores(classical: np.ndarray, learned: np.ndarray) -> np.ndarray:
    """The two engines' scores on the common scale joined voxel by voxel (the maximum): the fusion engine's
    score for the lesion table, where a lesion's peak is the more confident engine's."""
    a, b = np.asarray(classical, np.float32), np.asarray(learned, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"fuse_scores: score maps of different shapes {a.shape} and {b.shape}")
    return np.maximum(a, b)


def merge_engine_lesions(labels_c: np.ndarray, n_c: int, kinds_c: list[str], extents_c: dict[int, Any],
                         labels_l: np.ndarray, n_l: int, kinds_l: list[str],
                         extents_l: dict[int, Any]) -> tuple[np.ndarray, int, list[str], dict[int, Any]]:
    """The fusion engine's lesions: the union of the two engines' own final lesions, each engine having run the
    whole detection on its own score (post-processing, false-positive rules, new/enlarging classification,
    delineation). A lesion is so reported when EITHER engine is confident about it and its own rules keep it.

    The classical lesions come first with their numbers, kinds and enlarging extents; a learned lesion that
    overlaps classical ones is joined to the one it overlaps most (its voxels added where no other lesion lies:
    each engine's delineation of the same lesion, united); a learned lesion that overlaps none is added after
    them with its own kind and extent. Joining at this stage, not at the candidates, matters: a learned lesion
    inside a larger classical candidate that the classical rules drop whole (a new lesion next to a drifting
    baseline lesion) would otherwise be lost with it. Returns ``(labels, n, kinds, extents)``, numbered 1..n."""
    from scipy import ndimage

    if labels_c.shape != labels_l.shape:
        raise ValueError(f"merge_engine_lesions: label maps of different shapes {labels_c.shape} and "
                         f"{labels_l.shape}")
    lab_c, lab_l = np.asarray(labels_c, np.int32), np.asarray(labels_l, np.int32)
    out = lab_c.copy()
    kinds, extents = list(kinds_c), dict(extents_c)
    n = n_c
    for j, sl in enumerate(ndimage.find_objects(lab_l, max_label=n_l), start=1):
        if sl is None:
            continue
        m = lab_l[sl] == j
        under = lab_c[sl][m]
        under = under[under > 0]
        if under.size:  # joined to the classical lesion it overlaps most
            k = int(np.bincount(under).argmax())
        else:
            n += 1
            k = n
            kinds.append(kinds_l[j - 1])
            if j in extents_l:
                extents[k] = extents_l[j]
        out[sl][m & (out[sl] == 0)] = k
    return out, n, kinds, extents


def engine_disagreement(labels: np.ndarray, n: int, classical: np.ndarray, learned: np.ndarray,
                        params: LearnedParams, binarise_threshold: float = 0.01) -> list[dict[str, Any]]:
    """Per reported lesion (labels 1..n): each engine's peak score inside it and whether they disagree
    strongly (one peak >= ``params.disagree_score``, the other < ``binarise_threshold``)."""
    from scipy import ndimage

    if n == 0:
        return []
    # each lesion's peak inside its bounding box (find_objects: one pass over the labels), not
    # ndimage.maximum over the whole grid once per engine: about 0.6 s less per 1 mm fusion run
    lab = np.asarray(labels)
    out = []
    for i, sl in enumerate(ndimage.find_objects(lab, max_label=n), start=1):
        if sl is None:  # a number with no voxels: no peak (ndimage.maximum gives 0 for an empty label too)
            c = m = 0.0
        else:
            own = lab[sl] == i
            c, m = float(np.asarray(classical)[sl][own].max()), float(np.asarray(learned)[sl][own].max())
        strong = (c >= params.disagree_score and m < binarise_threshold) or \
                 (m >= params.disagree_score and c < binarise_threshold)
        out.append({"id": int(i), "classical_peak": round(c, 4), "learned_peak": round(m, 4),
                    "disagree": bool(strong),
                    "found_by": "both" if c >= binarise_threshold and m >= binarise_threshold
                    else ("classical" if c >= m else "learned")})
    return out


def disagreement_warning(records: list[dict[str, Any]]) -> str | None:
    """The quality warning of strong engine disagreement (None when the engines agree on every lesion)."""
    bad = [r for r in records if r["disagree"]]
    if not bad:
        return None
    parts = [f"{r['id']} (only the {r['found_by']} engine)" for r in bad]
    return (f"the classical and learned engines disagree on {len(bad)} of {len(records)} reported lesion(s): "
            f"{', '.join(parts)}; check these lesions on the images")


def apply_lesion_engine(cand: Any, baseline: Volume, followup: np.ndarray, brain: np.ndarray, engine: str,
                        params: LearnedParams, probability: np.ndarray | None = None,
                        ) -> tuple[Any, np.ndarray, np.ndarray, dict[str, Any]]:
    """The candidate step's score for ``engine`` (``learned`` or ``fusion``; module doc): the classical
    :class:`~neurorad.segment.ms_difference.Candidates` with its score replaced by the learned one (``learned``)
    or kept (``fusion``: the classical engine's detection runs on it unchanged, the learned engine's on the
    learned score, and :func:`merge_engine_lesions` unites their lesions), the classical and learned scores
    (kept apart for the fusion and the disagreement check) and the model's record (name, version, sha256,
    engine, and the operating point used: the anchors of :meth:`LearnedParams.resolve` with the model card's
    ``operating_point``, and where each came from). ``probability``: the model's :func:`learned_probability` for
    this pair when the caller already has it (the tuning sweep caches it per pair, so a sweep of
    ``LearnedParams`` thresholds runs the network once); None runs the network."""
    from dataclasses import replace

    if engine not in ("learned", "fusion"):
        raise InputError(f"MS lesion engine {engine!r} has no learned part (learned, fusion)")
    seg = learned_segmenter(params.model, params.mirror_axes)
    if probability is None:
        p = learned_probability(seg, baseline, followup, brain)
    elif np.shape(probability) != np.shape(brain):
        raise InputError(f"MS learned engine: a given probability map on grid {np.shape(probability)}, expected "
                         f"{np.shape(brain)}")
    else:
        p = np.asarray(probability, np.float32)
    resolved, point = params.resolve(model_operating_point(params.model))
    learned = probability_to_score(p, resolved, SCORE_AT_EXTENT, SCORE_AT_CORE, engine)
    classical = np.asarray(cand.score, np.float32)
    score = learned if engine == "learned" else classical
    rec: dict[str, Any] = dict(engine_record(params.model, params.mirror_axes))
    rec["engine"] = f"{rec['name']} {rec['version']}"
    rec["operating_point"] = point[engine]
    return replace(cand, score=score), classical, learned, rec
