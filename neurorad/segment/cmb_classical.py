"""Classical cerebral microbleed (CMB) detection on SWI: multi-scale Laplacian-of-Gaussian blobs,
sphericity, exclusion of vessel-like and brain-surface candidates, 2-10 mm size filter.

Microbleeds are small round hypointense foci of 2-10 mm on susceptibility-weighted images (Greenberg et
al., Lancet Neurol 2009); the classical detectors find dark blobs with a scale-normalised LoG and
reject vessels (elongated: one small and two large Hessian eigenvalues, Frangi et al. 1998) and
mimics at the brain surface (sulcal CSF/air-bone boundaries), e.g. Kuijf et al. 2012 (radial symmetry),
Bian et al. 2013, and the two-stage candidate screening of Dou et al. 2016.

1. Intensity: SWI / local brain reference (Gaussian-weighted brain mean, FWHM ``reference_fwhm_mm``):
   ratio r ~ 1 in parenchyma, < 1 in dark foci.
2. Candidates: local minima (3x3x3) of r smoothed with sigma 0.7 mm, inside the brain, at least
   ``surface_margin_mm`` from the brain surface, with r <= ``max_centre_ratio``.
3. Scale-normalised LoG response at each candidate, R = max over sigma of sigma^2 * LoG_sigma(r)
   (positive at dark blobs), sigma = radius / sqrt(3) for radii of 1-4.5 mm (diameters 2-9 mm),
   computed on a crop around the candidate (the whole-volume filter bank was the slow part);
   R >= ``min_response`` kept.
4. Each candidate's focus: voxels within 1.5 blob radii of the centre darker than r_c + ``focus_level``
   (1 - r_c) (r_c: the centre's ratio), 26-connected to the centre.
5. Shape: Hessian eigenvalues of r at the candidate's scale; vessel-like (|l1| / |l3| < ``min_blobness``,
   l1 the smallest) rejected; focus sphericity (smallest / largest principal axis) >= ``min_sphericity``.
6. Size: equivalent-sphere diameter of the focus in [2, 10] mm (PAPERS.md C2 step 3).
7. Score (for ROC analyses; not calibrated): logistic of the contrast 1 - r(centre).

Operating points were chosen on CMB phantoms (neurorad.phantom; synthetic), not on patients.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from neurorad.quantify.components import connected_components
from neurorad.segment.wmh_classical import erode_mm, smooth_box

__all__ = ["CMBParams", "CMBCandidate", "CMBDetection", "detect_cmb"]


@dataclass(frozen=True)
class CMBParams:
    radii_mm: tuple[float, ...] = (1.0, 1.5, 2.2, 3.2, 4.5)
    reference_fwhm_mm: float = 15.0
    surface_margin_mm: float = 3.0
    min_response: float = 0.08
    max_centre_ratio: float = 0.8
    min_blobness: float = 0.3
    min_sphericity: float = 0.45
    focus_level: float = 0.25
    min_diameter_mm: float = 2.0
    max_diameter_mm: float = 10.0
    score_centre: float = 0.35
    score_width: float = 0.08

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class CMBCandidate:
    centre_ijk: tuple[int, int, int]
    radius_mm: float
    response: float
    centre_ratio: float
    blobness: float
    sphericity: float
    diameter_mm: float
    score: float
    accepted: bool
    reason: str


@dataclass
class CMBDetection:
    mask: np.ndarray  # bool: accepted foci
    labels: np.ndarray  # int32: accepted focus k has label k (1..n), same order as ``accepted``
    probability: np.ndarray  # float32 in [0, 1]: the score of each focus painted on its voxels
    accepted: list[CMBCandidate]
    rejected: list[CMBCandidate] = field(default_factory=list)


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _hessian_eigs(img: np.ndarray, c: tuple[int, int, int], sig_vox: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending by magnitude) of the Gaussian-scale Hessian of ``img`` at voxel ``c``, in
    physical units (per mm^2: derivatives along an axis divided by its spacing, so thick slices do not
    make a sphere look elongated)."""
    r = np.ceil(3 * sig_vox).astype(int) + 2
    sl = tuple(slice(max(ci - ri, 0), min(ci + ri + 1, s)) for ci, ri, s in zip(c, r, img.shape, strict=True))
    sub = img[sl]
    loc = tuple(ci - s.start for ci, s in zip(c, sl, strict=True))
    h = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            d = ndimage.gaussian_filter(sub, sig_vox, order=order)
            h[a, b] = h[b, a] = d[loc] / (sp[a] * sp[b])
    ev = np.linalg.eigvalsh(h)
    return ev[np.argsort(np.abs(ev))]


def _local_log(r: np.ndarray, c: tuple[int, int, int], radii_mm: tuple[float, ...], sp: np.ndarray
               ) -> tuple[float, float]:
    """(radius, response) of the scale-normalised LoG maximum over ``radii_mm`` at voxel ``c`` (computed
    on a crop around it)."""
    reach = np.ceil(3.0 * max(radii_mm) / np.sqrt(3.0) / sp).astype(int) + 2
    sl = tuple(slice(max(a - q, 0), min(a + q + 1, s)) for a, q, s in zip(c, reach, r.shape, strict=True))
    sub = r[sl]
    loc = tuple(a - s.start for a, s in zip(c, sl, strict=True))
    best, best_rad = -np.inf, radii_mm[0]
    for rad in radii_mm:
        s_mm = rad / np.sqrt(3.0)
        v = float((s_mm**2) * ndimage.gaussian_laplace(sub, s_mm / sp, mode="nearest")[loc])
        if v > best:
            best, best_rad = v, rad
    return float(best_rad), best


def detect_cmb(swi: np.ndarray, brain: np.ndarray, spacing_mm: tuple[float, float, float],
               params: CMBParams = CMBParams()) -> CMBDetection:
    """Microbleed foci of one SWI magnitude volume (arrays on one grid; see the module docstring)."""
    p = params
    brain = np.asarray(brain, bool)
    if not brain.any():
        raise ValueError("empty brain mask")
    sp = np.asarray(spacing_mm, float)
    box = _box(brain, 4)
    img = np.asarray(swi, np.float32)[box]
    b = brain[box]
    sig_ref = p.reference_fwhm_mm / 2.3548 / sp
    num = smooth_box(np.where(b, img, 0), sig_ref)
    den = smooth_box(b, sig_ref)
    med = float(np.median(img[b]))
    ref = np.where(den > 0.05, num / np.maximum(den, 1e-6), med)
    r = np.where(b, img / np.maximum(ref, 1e-6), 1.0).astype(np.float32)
    inner = erode_mm(b, p.surface_margin_mm, sp)
    # candidate centres: local minima of the lightly smoothed ratio (cheap), then the multi-scale LoG
    # only around each of them
    rs = ndimage.gaussian_filter(r, 0.7 / sp)
    peaks = (rs == ndimage.minimum_filter(rs, size=3)) & inner & (rs <= p.max_centre_ratio)
    cand = np.argwhere(peaks)
    cand = cand[np.argsort(rs[peaks])]
    labels_box = np.zeros(r.shape, np.int32)
    prob_box = np.zeros(r.shape, np.float32)
    acc: list[CMBCandidate] = []
    rej: list[CMBCandidate] = []
    vox_mm3 = float(np.prod(sp))
    visited = np.zeros(r.shape, bool)
    for c in cand:
        ci = tuple(int(x) for x in c)
        if labels_box[ci] or visited[ci]:
            continue  # inside a focus already examined
        rad, resp = _local_log(r, ci, p.radii_mm, sp)
        if resp < p.min_response:
            continue
        rv = float(r[ci])
        reach = np.ceil(1.5 * rad / sp + 1).astype(int) + 1
        sl = tuple(slice(max(a - q, 0), min(a + q + 1, s)) for a, q, s in zip(ci, reach, r.shape, strict=True))
        sub = r[sl]
        loc = tuple(a - s.start for a, s in zip(ci, sl, strict=True))
        grid = np.stack(np.meshgrid(*[(np.arange(s.start, s.stop) - a) * d for s, a, d in zip(sl, ci, sp, strict=True)],
                                    indexing="ij"), axis=-1)
        inside = np.linalg.norm(grid, axis=-1) <= 1.5 * rad + 0.5 * sp.max()
        half = rv + p.focus_level * (1.0 - rv)
        dark = inside & (sub <= half) & b[sl]
        lab, _n = connected_components(dark, 26)
        focus = lab == lab[loc] if lab[loc] else np.zeros_like(dark)
        visited[sl] |= focus
        nvox = int(focus.sum())
        diam = float(np.cbrt(6.0 * nvox * vox_mm3 / np.pi)) if nvox else 0.0
        pts = grid[focus]
        if len(pts) >= 4:
            ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T) + np.eye(3) * (sp.max() ** 2) / 12.0))
            spher = float(np.sqrt(ev[0] / ev[-1]))
        else:
            spher = 1.0
        hev = _hessian_eigs(r, ci, (rad / np.sqrt(3.0)) / sp, sp)
        blob = float(abs(hev[0]) / max(abs(hev[2]), 1e-9)) if np.all(hev > 0) else 0.0
        score = float(1.0 / (1.0 + np.exp(-((1.0 - rv) - p.score_centre) / p.score_width)))
        reason = ""
        if blob < p.min_blobness:
            reason = "vessel-like (elongated: Hessian eigenvalue ratio)"
        elif spher < p.min_sphericity:
            reason = "not spherical"
        elif not p.min_diameter_mm <= diam <= p.max_diameter_mm:
            reason = f"size {diam:.1f} mm outside {p.min_diameter_mm:g}-{p.max_diameter_mm:g} mm"
        cand_rec = CMBCandidate(ci, rad, resp, rv, blob, spher, diam, score, not reason, reason or "ok")
        if reason:
            rej.append(cand_rec)
            continue
        k = len(acc) + 1
        target = labels_box[sl]
        free = focus & (target == 0)
        target[free] = k
        prob_box[sl][free] = score
        acc.append(cand_rec)
    labels = np.zeros(brain.shape, np.int32)
    labels[box] = labels_box
    prob = np.zeros(brain.shape, np.float32)
    prob[box] = prob_box
    off = np.array([s.start for s in box])
    acc = [CMBCandidate(tuple(int(x) for x in np.asarray(a.centre_ijk) + off), *list(asdict(a).values())[1:])
           for a in acc]
    rej = [CMBCandidate(tuple(int(x) for x in np.asarray(a.centre_ijk) + off), *list(asdict(a).values())[1:])
           for a in rej]
    return CMBDetection(labels > 0, labels, prob, acc, rej)
