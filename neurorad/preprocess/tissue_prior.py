"""Prior-guided tissue segmentation and weak brain masks ("SPM12-p" in miniature).

The skull-stripping paper (Ranjbar et al., PAPERS.md E2) trained its network on weak labels:
SPM12's GM, WM and CSF probability maps summed, binarised at 0.7, cleaned by erosion followed by
dilation. SPM12 (MATLAB) cannot be installed here; this module rebuilds the idea of SPM's
unified segmentation (Ashburner & Friston, NeuroImage 2005) from installable parts:

1. the MNI152 2009 T1 template (nilearn) is registered to the subject with an affine
   transform maximising Mattes mutual information (itk-elastix, :mod:`neurorad.preprocess.
   registration`), so any contrast works (T1, T2, FLAIR);
2. the MNI152 GM and WM probability maps (and CSF = template brain - GM - WM) are carried onto
   the subject grid by that transform; "other" (skull, scalp, air) takes the rest;
3. a Gaussian mixture on the (lightly smoothed) intensities - one Gaussian each for GM, WM and
   CSF, three for "other" - is fitted by EM with the warped maps as voxel-wise priors
   (posterior ∝ prior x likelihood);
4. brain = posterior GM + WM + CSF > 0.7, then erosion, largest component, dilation (the paper's
   "erosion followed by dilation") and hole filling.

No deformable registration and no bias-field term (SPM has both): a limitation stated in the
model card of every model trained on these labels.

Known failure (measured on domain-randomised phantoms, docs/segment.md): the affine registration of
the BRAIN-ONLY template to a whole head often converges to the head outline (|det| of the affine
~0.4 instead of ~1), so the mask covers the head (Dice ~0.63, 5 of 9 cases checked). SPM avoids this
with a head template and a prior on the affine's zooms; neither is here yet. ``neurorad-weak-brain``
0.2.0 is therefore trained on deepbet labels instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from neurorad.errors import InputError
from neurorad.image.geometry import resample_to_reference
from neurorad.image.nifti import load_nifti
from neurorad.image.volume import Volume


@functools.lru_cache(maxsize=1)
def mni_template() -> tuple[Volume, np.ndarray]:
    """MNI152 2009 T1 (brain) and its priors ``[gm, wm, csf]`` (float32, 1 mm, MNI grid)."""
    from neurorad import resources

    t1 = load_nifti(resources.mni152("t1"))
    gm = np.asarray(load_nifti(resources.mni152("gm")).data, np.float32) / 255.0
    wm = np.asarray(load_nifti(resources.mni152("wm")).data, np.float32) / 255.0
    brain = np.asarray(t1.data) > 0
    gm, wm = gm * brain, wm * brain
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0.0, 1.0)
    return Volume(np.asarray(t1.data, np.float32), t1.affine), np.stack([gm, wm, csf])


@dataclass
class TissueResult:
    """Posterior probabilities ``[gm, wm, csf]`` on the subject grid, the fitted mixture, the
    registration quality and the warped priors."""

    posteriors: np.ndarray  # [3, X, Y, Z]
    priors: np.ndarray  # [3, X, Y, Z]
    means: list[float]
    sds: list[float]
    nmi_after: float


def _em(x: np.ndarray, priors: np.ndarray, n_iter: int, init_mu: dict[int, float]
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for a prior-weighted Gaussian mixture (means, variances, class weights).

    ``priors`` ``[K, N]``: voxel-wise prior of each Gaussian; ``init_mu`` overrides starting means
    (Gaussians that share one prior must start apart)."""
    w = priors / np.maximum(priors.sum(0, keepdims=True), 1e-6)
    mu = (w * x).sum(1) / np.maximum(w.sum(1), 1e-6)
    for i, m in init_mu.items():
        mu[i] = m
    var = (w * (x - mu[:, None]) ** 2).sum(1) / np.maximum(w.sum(1), 1e-6) + 1e-6
    mix = np.ones(priors.shape[0])
    for _ in range(n_iter):
        ll = -0.5 * (x - mu[:, None]) ** 2 / var[:, None] - 0.5 * np.log(var[:, None])
        ll -= ll.max(0, keepdims=True)
        r = priors * mix[:, None] * np.exp(ll)
        r /= np.maximum(r.sum(0, keepdims=True), 1e-12)
        nk = r.sum(1) + 1e-6
        mu = (r * x).sum(1) / nk
        var = (r * (x - mu[:, None]) ** 2).sum(1) / nk + 1e-4 * (x.var() or 1.0)
        mix = nk / np.maximum(priors.sum(1), 1e-6)
        mix /= mix.mean()
    return mu, var, mix


def tissue_probabilities(volume: Volume, n_iter: int = 20, seed: int = 0) -> TissueResult:
    """GM/WM/CSF posteriors of ``volume`` (any MR contrast) with MNI152 priors (module docstring)."""
    from neurorad.preprocess.registration import register
    from neurorad.preprocess.transforms import resample

    if volume.data.ndim != 3:
        raise InputError(f"tissue segmentation needs a 3D image, got shape {volume.shape}",
                         volume.metadata.get("source"))
    volume.check_finite()
    subj = volume.with_data(np.asarray(volume.data, np.float32))
    t1, priors_mni = mni_template()
    reg = register(subj, t1, "affine", check=False)
    pri = np.stack([resample(Volume(p, t1.affine), subj, reg.transform, "linear").data for p in priors_mni])
    pri = np.clip(pri.astype(np.float32), 0.0, 1.0)
    other = np.clip(1.0 - pri.sum(0), 0.0, 1.0)
    x = ndimage.gaussian_filter(np.asarray(subj.data, np.float32), 0.5).ravel()
    lo, hi = np.percentile(x, [0.5, 99.5])
    x = np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    # classes: gm, wm, csf, other x3 (other's prior split in three)
    full_pri = np.concatenate([pri.reshape(3, -1), np.repeat(other.reshape(1, -1) / 3.0, 3, 0)])
    full_pri = np.maximum(full_pri, 1e-4)
    rng = np.random.default_rng(seed)
    idx = rng.choice(x.size, size=min(x.size, 300_000), replace=False)
    # "other" Gaussians start dark, middle and bright so they can take air, bone and fat
    mu, var, mix = _em(x[idx], full_pri[:, idx], n_iter, {3: 0.02, 4: 0.35, 5: 0.8})
    ll = -0.5 * (x - mu[:, None]) ** 2 / var[:, None] - 0.5 * np.log(var[:, None])
    ll -= ll.max(0, keepdims=True)
    r = full_pri * mix[:, None] * np.exp(ll)
    r /= np.maximum(r.sum(0, keepdims=True), 1e-12)
    post = r[:3].reshape(3, *subj.spatial_shape).astype(np.float32)
    return TissueResult(post, pri, [float(m) for m in mu[:3]], [float(np.sqrt(v)) for v in var[:3]],
                        float(reg.nmi_after))


def clean_mask(mask: np.ndarray, spacing_mm: tuple[float, float, float], radius_mm: float = 2.0) -> np.ndarray:
    """Erosion, largest connected component, dilation (same radius), 3D then slice-wise hole filling."""
    r = [max(1, int(round(radius_mm / s))) for s in spacing_mm]
    zz, yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    ball = (zz / max(r[0], 1)) ** 2 + (yy / max(r[1], 1)) ** 2 + (xx / max(r[2], 1)) ** 2 <= 1.0
    m = ndimage.binary_erosion(mask, ball)
    lab, n = ndimage.label(m)
    if n == 0:
        return np.zeros_like(mask, bool)
    sizes = ndimage.sum(m, lab, range(1, n + 1))
    m = lab == (1 + int(np.argmax(sizes)))
    m = ndimage.binary_dilation(m, ball)
    m = ndimage.binary_fill_holes(m)
    for k in range(m.shape[2]):
        m[:, :, k] = ndimage.binary_fill_holes(m[:, :, k])
    return m


def weak_brain_mask(volume: Volume, threshold: float = 0.7, radius_mm: float = 2.0,
                    work_spacing_mm: float | None = 2.0) -> Volume:
    """The weak-label brain mask of the skull-stripping paper, rebuilt (module docstring).

    The mixture is fitted on a ``work_spacing_mm`` copy (None: the image's own grid); the summed
    posterior is interpolated back (linear) before the 0.7 threshold and the clean-up."""
    from neurorad.image.geometry import resample_to_spacing

    vol = volume.with_data(np.asarray(volume.data, np.float32))
    work = vol
    if work_spacing_mm is not None and min(vol.spacing_mm) < work_spacing_mm:
        work = resample_to_spacing(vol, work_spacing_mm)
    res = tissue_probabilities(work)
    summed = res.posteriors.sum(0)
    if work is not vol:
        summed = resample_to_reference(work.with_data(summed), vol, "linear").data
    mask = clean_mask(summed > threshold, volume.spacing_mm, radius_mm)
    return volume.with_data(mask, weak_labels={"method": "MNI152 priors (affine) + prior-guided GMM",
                                               "threshold": threshold, "radius_mm": radius_mm,
                                               "nmi_after": round(res.nmi_after, 4)})


class PriorGMM:
    """Brain-extraction engine ``prior-gmm``: :func:`weak_brain_mask` (the label source of the
    ``neurorad-weak`` model 0.1.0; on randomised phantoms its affine registration of the brain-only
    template often inflates the template to the whole head, Dice ~0.63: docs/segment.md)."""

    name = "prior-gmm"
    weights_sha256 = "none (classical: MNI152 2009 priors from nilearn)"

    def extract(self, volume: Volume) -> Volume:
        from neurorad.preprocess.brain_extraction import _as_mask, _check_input

        _check_input(volume)
        m = weak_brain_mask(volume)
        return _as_mask(volume, np.asarray(m.data), self.name, self.weights_sha256)

