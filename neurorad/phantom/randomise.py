"""Phantom training cases (real anatomy, known truth) with domain randomisation.

Domain randomisation (Tobin et al., IROS 2017; for brain MRI, Billot et al., "SynthSeg",
Med Image Anal 2023) makes a network trained on synthetic images robust to the acquisition:
each case draws, from one seeded generator,

* ``contrast``: a random gamma (0.6-1.6) on the image intensities and a random global scale;
* ``bias``: log-std of the smooth multiplicative bias field, 0-0.35;
* ``noise``: MR signal-to-noise ratio 8-40 (CT: noise 2-8 HU);
* ``resolution``: in-plane voxel size 0.9-1.6 mm;
* ``thickness``: slice thickness 1-5 mm;
* ``pose``: a rigid rotation (up to 12 degrees about each axis) and shift (up to 10 mm) of the
  head in the scanner frame, applied to image and truth alike (through the affine);
* ``warp``: a smooth random deformation (control points every ~40 mm, displacement SD ~3 mm) of
  image and truth, so the anatomy is not always Colin27's.

Any phantom kind works; ``target="lesion"`` takes the kind's lesion classes, ``target="brain"``
its brain mask (brain extraction). :func:`training_cases` yields ``(case_id, images, labels)``
for :func:`neurorad.segment.dataset.write_dataset` (the nnU-Net raw layout), which is what
``neurorad dataset phantom`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from neurorad.errors import InputError
from neurorad.image.geometry import rigid_matrix
from neurorad.image.volume import Volume

RANDOMISATIONS = ("contrast", "bias", "noise", "resolution", "thickness", "pose", "warp")

#: kind -> (default channels, truth key of the lesion target, labels, image prefix)
KIND_TARGETS: dict[str, tuple[tuple[str, ...], str, dict[int, str], str]] = {
    "wmh": (("flair", "t1"), "truth_wmh", {0: "background", 1: "wmh"}, ""),
    "cmb": (("swi", "t1"), "truth_cmb", {0: "background", 1: "microbleed"}, ""),
    "glioma": (("t1", "t1c", "t2", "flair"), "truth_baseline_tumour_class",
               {0: "background", 1: "necrosis", 2: "oedema", 3: "enhancing", 4: "non_enhancing"}, "baseline_"),
    "ich-pair": (("ct",), "truth_baseline_ich_class", {0: "background", 1: "haematoma", 2: "perihaematomal_oedema"},
                 "baseline_"),
    "ms-pair": (("flair",), "truth_baseline_lesions", {0: "background", 1: "lesion"}, "baseline_"),
}


def random_warp(rng: np.random.Generator, shape: tuple[int, int, int], spacing_mm: tuple[float, float, float],
                sd_mm: float = 3.0, control_mm: float = 40.0) -> np.ndarray:
    """A smooth displacement field ``[3, X, Y, Z]`` in voxels (cubic-upsampled random control grid)."""
    ctrl = [max(2, int(round(s * sp / control_mm)) + 1) for s, sp in zip(shape, spacing_mm, strict=True)]
    out = np.empty((3, *shape), np.float32)
    for d in range(3):
        coarse = rng.normal(0.0, sd_mm / spacing_mm[d], ctrl).astype(np.float32)
        zoom = [s / c for s, c in zip(shape, ctrl, strict=True)]
        out[d] = ndimage.zoom(coarse, zoom, order=3, mode="nearest", grid_mode=True)[: shape[0], : shape[1], : shape[2]]
    return out


def apply_warp(data: np.ndarray, field: np.ndarray, order: int) -> np.ndarray:
    coords = np.indices(data.shape, dtype=np.float32) + field
    return ndimage.map_coordinates(data, coords, order=order, mode="nearest").astype(data.dtype)


def randomised_case(kind: str, seed: int, target: str = "lesion", contrasts: tuple[str, ...] | None = None,
                    randomise: set[str] | frozenset[str] = frozenset(RANDOMISATIONS)
                    ) -> tuple[list[Volume], Volume, dict]:
    """One domain-randomised phantom case: images (one per contrast), truth labels, parameters."""
    from neurorad.phantom.cases import make_case

    if kind not in KIND_TARGETS:
        raise InputError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KIND_TARGETS)}")
    if target not in ("lesion", "brain"):
        raise InputError(f"target must be lesion or brain, got {target!r}")
    default_chans, truth_key, _labels, prefix = KIND_TARGETS[kind]
    chans = tuple(contrasts or default_chans)
    rng = np.random.default_rng([seed, 104729])
    is_ct = kind == "ich-pair"
    opts: dict = {}
    rec: dict = {"kind": kind, "seed": seed}
    if "resolution" in randomise:
        opts["in_plane_mm"] = float(rng.uniform(0.9, 1.6))
    if "thickness" in randomise:
        opts["slice_thickness_mm"] = float(rng.uniform(1.0, 5.0))
    if is_ct:
        if "noise" in randomise:
            opts["noise_hu"] = float(rng.uniform(2.0, 8.0))
        if chans != ("ct",):
            raise InputError("ich-pair phantoms have one channel: ct")
    else:
        opts["contrasts"] = chans
        if "noise" in randomise:
            opts["snr"] = float(rng.uniform(8.0, 40.0))
        if "bias" in randomise:
            opts["bias_strength"] = float(rng.uniform(0.0, 0.35))
    if kind == "glioma":
        opts["pair"] = False
    if kind in ("ms-pair", "ich-pair"):
        opts.update(misalign_deg=0.0, misalign_mm=0.0)
    rec.update({k: v for k, v in opts.items() if k != "contrasts"})
    case = make_case(kind, seed=seed, **opts)
    try:
        images = [case.images[f"{prefix}{c}"] for c in chans]
    except KeyError as exc:
        raise InputError(f"phantom kind {kind} has no {exc.args[0]!r} image (contrasts {', '.join(chans)})") from exc
    if target == "brain":
        bkey = next(k for k in case.truth if k.endswith("brain"))
        lab = (np.asarray(case.truth[bkey].data) > 0).astype(np.uint8)
    else:
        arr = np.asarray(case.truth[truth_key].data)
        lab = (arr > 0).astype(np.uint8) if len(KIND_TARGETS[kind][2]) == 2 else arr.astype(np.uint8)
    ref = images[0]
    datas = [np.asarray(v.data, np.float32) for v in images]
    if "contrast" in randomise and not is_ct:
        out = []
        for d in datas:
            g = float(rng.uniform(0.6, 1.6))
            hi = float(np.percentile(d, 99.9)) or 1.0
            out.append((np.clip(d / hi, 0, None) ** g * hi * float(rng.uniform(0.5, 2.0))).astype(np.float32))
        datas = out
        rec["contrast"] = "gamma 0.6-1.6, scale 0.5-2"
    if "warp" in randomise:
        field = random_warp(rng, ref.spatial_shape, ref.spacing_mm)
        datas = [apply_warp(d, field, 1) for d in datas]
        lab = apply_warp(lab, field, 0)
        rec["warp_sd_mm"] = 3.0
    affine = ref.affine.copy()
    if "pose" in randomise:
        rot = tuple(float(v) for v in rng.uniform(-12.0, 12.0, 3))
        shift = tuple(float(v) for v in rng.uniform(-10.0, 10.0, 3))
        m = rigid_matrix(rot, shift)
        affine = m @ affine
        rec.update(pose_rotation_deg=rot, pose_shift_mm=shift)
    vols = [Volume(d, affine.copy(), {"contrast": c}) for d, c in zip(datas, chans, strict=True)]
    return vols, Volume(lab, affine.copy(), {}), rec


@dataclass
class TrainingCases:
    """A lazily generated phantom training set: iterate ``cases`` once; ``records`` fills as it goes."""

    kind: str
    target: str
    channel_names: list[str]
    labels: dict[int, str]
    description: str
    cases: Iterator[tuple[str, list[Volume], Volume]]
    records: list[dict] = field(default_factory=list)


def training_cases(kind: str, n: int, target: str = "lesion", contrasts: tuple[str, ...] | None = None,
                   seed: int = 0, randomise: set[str] | frozenset[str] = frozenset(RANDOMISATIONS),
                   progress: Callable[[int], None] | None = None, mix_contrasts: bool = False,
                   relabel: Callable[[list[Volume], Volume], Volume] | None = None,
                   label_source: str = "truth", label_contrast: str | None = None) -> TrainingCases:
    """``n`` randomised cases of ``kind`` (deterministic given ``seed``), generated on iteration.

    ``mix_contrasts``: each case has ONE channel ("MRI"), the contrasts taken in turn (for a
    contrast-agnostic model). ``relabel(images, truth) -> labels`` replaces the truth by another
    label source (e.g. weak labels from a classical method), named by ``label_source``.
    ``label_contrast`` (with ``relabel``): the label source runs on that contrast of the same case
    (generated beside the case's images, same pose/warp, not written), as the skull-stripping paper
    computed its weak labels on T1Gd and trained on the co-registered FLAIR too."""
    if kind not in KIND_TARGETS:
        raise InputError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KIND_TARGETS)}")
    if n < 1:
        raise InputError("need at least one case")
    chans = tuple(contrasts or KIND_TARGETS[kind][0])
    labels = {0: "background", 1: "brain"} if target == "brain" else dict(KIND_TARGETS[kind][2])
    desc = (f"neurorad phantom dataset: kind {kind}, target {target}, seed {seed}, randomised "
            f"{', '.join(sorted(randomise)) or 'nothing'}; labels: {label_source}; synthetic images on real anatomy "
            f"(Colin27 + MNI152){'; one contrast per case: ' + ', '.join(chans) if mix_contrasts else ''}")
    names = ["MRI"] if mix_contrasts else [c.upper() for c in chans]
    out = TrainingCases(kind, target, names, labels, desc, iter(()))

    def gen() -> Iterator[tuple[str, list[Volume], Volume]]:
        for i in range(n):
            case_chans = (chans[i % len(chans)],) if mix_contrasts else chans
            extra = (label_contrast,) if relabel is not None and label_contrast not in (None, *case_chans) else ()
            vols, lab, rec = randomised_case(kind, seed * 100003 + i, target, (*case_chans, *extra), randomise)
            rec["contrasts"] = list(case_chans)
            if relabel is not None:
                src = vols[(*case_chans, *extra).index(label_contrast)] if label_contrast else vols[0]
                lab = relabel([src], lab)
                rec["labels"] = label_source
                rec["labels_from"] = label_contrast or case_chans[0]
            vols = vols[:len(case_chans)]
            out.records.append(rec)
            if progress:
                progress(1)
            yield f"{kind.replace('-', '')}_{i:04d}", vols, lab

    out.cases = gen()
    return out
