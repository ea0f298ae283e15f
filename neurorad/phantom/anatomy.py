"""Real anatomy the phantoms are built on (loaded once per process, float32).

Grid: the Colin27 head grid (Holmes et al., J Comput Assist Tomogr 1998; Debian
``mricron-data`` ``ch2.nii.gz``: 181 x 217 x 181, 1 mm, RAS). The MNI152 2009c symmetric
GM and WM probability maps and brain mask (Fonov et al., NeuroImage 2011; shipped with
nilearn) sit on a 1 mm grid whose origin differs from Colin27's by a whole number of voxels
(8, 9, 1), so they are cut onto the Colin27 grid without interpolation. Colin27 and MNI152 are
both in MNI space; their brain masks agree with Dice 0.94, close enough for a phantom (the
MNI brain wins where they disagree, so the skull never cuts into brain).

Tissue fractions per voxel (sum to 1 inside the head):

* ``gm``, ``wm``: the MNI152 probability maps / 255;
* ``csf``: brain mask (MNI152 T1 > 0) minus GM minus WM, clipped to [0, 1];
* outside the brain, from the Colin27 T1 intensity ``h`` of the head: ``bone`` (dark, within
  20 mm of the brain: the skull), ``fat`` (bright: scalp fat, marrow), ``soft`` (the rest:
  skin, muscle); dark voxels far from the brain are ``air`` (sinuses, outside the head).

Placement regions for lesions (boolean masks): ``ventricles`` (CSF > 0.5 deeper than 20 mm
from the brain surface, components > 1 mL: the lateral ventricles), ``periventricular`` WM,
``juxtacortical`` WM, ``deep_wm``, ``deep_gm`` (basal ganglia/thalamus region) and ``lobar``
(cortical GM/WM junction).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from neurorad import resources

#: Voxel offset of the Colin27 grid origin inside the MNI152 (nilearn, 197x233x189) grid.
_MNI_OFFSET = (8, 9, 1)


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Tissue fractions and placement masks on the base (Colin27) grid."""

    affine: np.ndarray
    fractions: dict[str, np.ndarray]  # gm, wm, csf, bone, fat, soft (float32, sum <= 1; rest is air)
    regions: dict[str, np.ndarray]  # boolean placement masks
    brain_mask: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.brain_mask.shape
        return int(s[0]), int(s[1]), int(s[2])


def _mni_on_colin(kind: str, shape: tuple[int, int, int]) -> np.ndarray:
    img = nib.load(str(resources.mni152(kind)))
    o = _MNI_OFFSET
    data = np.asarray(img.dataobj)[o[0]:o[0] + shape[0], o[1]:o[1] + shape[1], o[2]:o[2] + shape[2]]
    return data.astype(np.float32)


_CACHE_VERSION = "anatomy-masks-v1"


def _cache_dir() -> Path:
    return Path(os.environ.get("NEURORAD_CACHE", Path.home() / ".cache" / "neurorad"))


def _cache_key() -> str:
    """Changes when the code version or any source file changes."""
    h = hashlib.sha256(_CACHE_VERSION.encode())
    for p in (resources.colin27_head(), resources.mni152("t1"), resources.mni152("gm"), resources.mni152("wm")):
        st = Path(p).stat()
        h.update(f"{Path(p).name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _placement_masks(brain: np.ndarray, gm: np.ndarray, wm: np.ndarray, csf: np.ndarray) -> dict[str, np.ndarray]:
    """Distance-based masks (four Euclidean distance transforms, the slow part of the anatomy)."""
    dist_brain = ndimage.distance_transform_edt(~brain)
    depth = ndimage.distance_transform_edt(brain)
    vent = (csf > 0.5) & (depth > 20)
    lab, n = ndimage.label(vent)
    if n:
        sizes = ndimage.sum(vent, lab, range(1, n + 1))
        vent = np.isin(lab, 1 + np.flatnonzero(sizes > 1000))
    d_vent = ndimage.distance_transform_edt(~vent)
    d_gm = ndimage.distance_transform_edt(~(gm > 0.5))
    wm_core = wm > 0.9
    return {
        "near": dist_brain <= 20.0,  # within 20 mm of the brain: where the skull is
        "ventricles": vent,
        "periventricular": wm_core & (d_vent >= 2) & (d_vent <= 6),
        "juxtacortical": (wm > 0.6) & (d_gm >= 1) & (d_gm <= 3) & (depth > 6),
        "deep_wm": wm_core & (d_vent > 10) & (d_gm > 5),
        "deep_gm": (gm > 0.5) & (depth > 25),  # basal ganglia and thalami
        "lobar": (wm > 0.3) & (gm > 0.3) & (depth > 5),
        "wm": wm > 0.5,
    }


def _cached_masks(brain: np.ndarray, gm: np.ndarray, wm: np.ndarray, csf: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`_placement_masks`, kept on disk (``$NEURORAD_CACHE`` or ``~/.cache/neurorad``, ~1 MB)
    so later processes skip the distance transforms. Identical results with or without the cache;
    an unwritable cache folder is ignored."""
    path = _cache_dir() / f"phantom-{_cache_key()}.npz"
    shape = brain.shape
    try:
        with np.load(path) as z:
            return {k: np.unpackbits(z[k], count=int(np.prod(shape))).reshape(shape).view(bool) for k in z.files}
    except (OSError, ValueError, KeyError):
        pass
    masks = _placement_masks(brain, gm, wm, csf)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
        os.close(fd)
        np.savez_compressed(tmp, **{k: np.packbits(v.ravel()) for k, v in masks.items()})
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True) if "tmp" in locals() else None
    return masks


@lru_cache(maxsize=1)
def load_anatomy() -> Anatomy:
    """The base anatomy (cached in memory; distance masks also on disk). Arrays are read-only."""
    head_img = nib.load(str(resources.colin27_head()))
    head = np.asarray(head_img.dataobj).astype(np.float32)
    shape = head.shape
    mni_img = nib.load(str(resources.mni152("t1")))
    expected = mni_img.affine[:3, 3] + np.asarray(_MNI_OFFSET, dtype=float)
    if not np.allclose(head_img.affine[:3, 3], expected) or not np.allclose(head_img.affine[:3, :3], np.eye(3)):
        raise RuntimeError("Colin27/MNI152 grids are not the expected 1 mm RAS grids; update _MNI_OFFSET")

    gm = _mni_on_colin("gm", shape) / 255.0
    wm = _mni_on_colin("wm", shape) / 255.0
    brain = _mni_on_colin("t1", shape) > 0
    gm *= brain
    wm *= brain
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0.0, 1.0)

    # head mask: Colin27 T1 above background, holes filled slice by slice
    smooth = ndimage.gaussian_filter(head, 1.0)
    headmask = smooth > 12
    headmask = ndimage.binary_closing(headmask, iterations=2)
    for k in range(shape[2]):
        headmask[:, :, k] = ndimage.binary_fill_holes(headmask[:, :, k])
    outside = headmask & ~brain
    masks = _cached_masks(brain, gm, wm, csf)
    near = masks.pop("near")
    fat = np.clip((head - 85.0) / 60.0, 0.0, 1.0)
    dark = np.clip((70.0 - head) / 45.0, 0.0, 1.0)
    bone = np.where(near, dark, 0.0)
    air_in = np.where(near, 0.0, dark) * 0.8
    soft = np.clip(1.0 - fat - bone - air_in, 0.0, 1.0)
    z = np.float32(0)
    fractions = {
        "gm": gm.astype(np.float32),
        "wm": wm.astype(np.float32),
        "csf": csf.astype(np.float32),
        "bone": np.where(outside, bone, z).astype(np.float32),
        "fat": np.where(outside, fat, z).astype(np.float32),
        "soft": np.where(outside, soft, z).astype(np.float32),
    }
    regions = masks
    for a in list(fractions.values()) + list(regions.values()) + [brain]:
        a.setflags(write=False)
    return Anatomy(head_img.affine.astype(float), fractions, regions, brain)
