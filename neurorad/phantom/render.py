"""From tissue fractions and lesions to images: contrasts, lesion shapes, acquisition.

Image formation (partial-volume model, as in the BrainWeb simulator's fuzzy tissue model,
Collins et al., IEEE TMI 1998): the signal of a voxel is the sum over tissues of
``fraction x tissue intensity`` for the contrast. Lesions are painted on top with soft
(partial-volume) fractions: ``I = (1 - f) I + f mu_lesion``.

Acquisition (:func:`acquire`): the scanner sees the subject moved by a rigid transform; its
voxels are averaged blocks of the 1 mm base image (thick slices and coarse in-plane
resolution), then a smooth multiplicative bias field (Sled et al. 1998 model of intensity
non-uniformity), a global scanner scaling, and Rician noise (Gudbjartsson & Patz, MRM 1995:
magnitude of complex Gaussian noise) for MR, Gaussian noise in HU for CT.

Intensities are relative (white matter ~ 1 on T1) and roughly follow published 3 T contrast
(e.g. FLAIR lesion > GM > WM > CSF; T1 WM > GM > CSF; T2 CSF > lesion > GM > WM). CT values are
Hounsfield units (grey matter 38, white matter 30, CSF 8, bone 1000, fat -100, fresh clot 70).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from neurorad.image.geometry import resample_to_reference
from neurorad.image.volume import Volume

CONTRASTS = ("t1", "t1c", "t2", "flair", "swi", "ct")

#: Tissue intensity per contrast (MR: arbitrary units with WM ~ 1 on T1; CT: Hounsfield units).
TISSUE_INTENSITY: dict[str, dict[str, float]] = {
    "t1": {"gm": 0.62, "wm": 1.00, "csf": 0.18, "bone": 0.08, "fat": 1.15, "soft": 0.55, "air": 0.0},
    "t1c": {"gm": 0.64, "wm": 1.00, "csf": 0.20, "bone": 0.08, "fat": 1.15, "soft": 0.70, "air": 0.0},
    "t2": {"gm": 0.62, "wm": 0.42, "csf": 1.00, "bone": 0.05, "fat": 0.55, "soft": 0.40, "air": 0.0},
    "flair": {"gm": 0.66, "wm": 0.48, "csf": 0.10, "bone": 0.05, "fat": 0.70, "soft": 0.45, "air": 0.0},
    "swi": {"gm": 0.72, "wm": 0.82, "csf": 0.95, "bone": 0.10, "fat": 0.60, "soft": 0.50, "air": 0.0},
    "ct": {"gm": 38.0, "wm": 30.0, "csf": 8.0, "bone": 1000.0, "fat": -100.0, "soft": 40.0, "air": -1000.0},
}

#: Lesion intensity per contrast (same units). ``None`` = the lesion does not change that contrast.
LESION_INTENSITY: dict[str, dict[str, float | None]] = {
    "ms": {"t1": 0.55, "t1c": 0.57, "t2": 0.85, "flair": 1.05, "swi": 0.80, "ct": 24.0},
    "wmh": {"t1": 0.70, "t1c": 0.70, "t2": 0.80, "flair": 0.98, "swi": 0.80, "ct": 24.0},
    "necrosis": {"t1": 0.25, "t1c": 0.26, "t2": 0.95, "flair": 0.55, "swi": 0.85, "ct": 15.0},
    "enhancing": {"t1": 0.58, "t1c": 1.45, "t2": 0.72, "flair": 0.80, "swi": 0.70, "ct": 40.0},
    "non_enhancing": {"t1": 0.52, "t1c": 0.54, "t2": 0.80, "flair": 0.88, "swi": 0.72, "ct": 32.0},
    "oedema": {"t1": 0.68, "t1c": 0.68, "t2": 0.82, "flair": 0.92, "swi": 0.80, "ct": 20.0},
    "haematoma": {"t1": 0.70, "t1c": 0.70, "t2": 0.40, "flair": 0.60, "swi": 0.15, "ct": 70.0},
    "perihaematomal_oedema": {"t1": 0.68, "t1c": 0.68, "t2": 0.82, "flair": 0.92, "swi": 0.80, "ct": 20.0},
    "microbleed": {"t1": None, "t1c": None, "t2": 0.30, "flair": None, "swi": 0.08, "ct": None},
}

#: Contrasts acquired as MR (the rest as CT).
MR_CONTRASTS = ("t1", "t1c", "t2", "flair", "swi")


@dataclass
class Lesion:
    """One lesion instance: a blobby ellipsoid in world (RAS mm) coordinates.

    ``kind`` selects its intensities (:data:`LESION_INTENSITY`); ``label`` is written in the
    truth map; ``restrict`` names an anatomy region or fraction the lesion is confined to
    (e.g. ``"parenchyma"``); ``intensity_scale`` jitters its contrast per lesion.
    """

    lesion_id: int
    kind: str
    label: int
    center_mm: np.ndarray
    semi_axes_mm: np.ndarray
    rotation: np.ndarray
    bump_dirs: np.ndarray
    bump_amps: np.ndarray
    bump_phases: np.ndarray
    restrict: str | None = "parenchyma"
    intensity_scale: float = 1.0
    bloom_factor: float = 1.0  # >1: darkening on SWI extends beyond the label (microbleed blooming)
    extra: dict = field(default_factory=dict)

    def scaled(self, factor: float, lesion_id: int | None = None) -> Lesion:
        """The same shape grown by ``factor`` in every direction (an enlarging lesion)."""
        return Lesion(self.lesion_id if lesion_id is None else lesion_id, self.kind, self.label,
                      self.center_mm.copy(), self.semi_axes_mm * factor, self.rotation, self.bump_dirs,
                      self.bump_amps, self.bump_phases, self.restrict, self.intensity_scale, self.bloom_factor,
                      dict(self.extra))

    @property
    def nominal_diameter_mm(self) -> float:
        return float(2.0 * np.mean(self.semi_axes_mm))


def random_lesion(rng: np.random.Generator, lesion_id: int, kind: str, label: int, center_mm: np.ndarray,
                  diameter_mm: float, elongation: float = 1.6, irregularity: float = 0.15, **kw) -> Lesion:
    """A randomly oriented blob with mean diameter ``diameter_mm``; ``irregularity`` = relative
    amplitude of the low-frequency surface bumps (0 = ellipsoid)."""
    from scipy.spatial.transform import Rotation

    e = rng.uniform(1.0, elongation)
    axes = np.array([e, 1.0, 1.0 / np.sqrt(e)])
    axes = axes / axes.mean() * diameter_mm / 2.0
    rot = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
    nb = 5
    dirs = rng.normal(size=(nb, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = rng.integers(1, 4, size=nb).astype(float)
    return Lesion(lesion_id, kind, label, np.asarray(center_mm, float), axes, rot, dirs * freqs[:, None],
                  rng.uniform(0, irregularity, nb) / np.sqrt(nb) * 2, rng.uniform(0, 2 * np.pi, nb), **kw)


def lesion_fraction(lesion: Lesion, shape: tuple[int, int, int], affine: np.ndarray,
                    scale: float = 1.0) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """(box, soft fraction in box) of a lesion on a grid; ``scale`` enlarges it (blooming halo).

    The fraction is ``clip(0.5 + signed depth / voxel size)``: a one-voxel partial-volume ramp
    across the surface, so ``fraction >= 0.5`` is exactly the blob ``rho <= 1``.
    """
    spacing = float(np.cbrt(abs(np.linalg.det(affine[:3, :3]))))
    r_max = float(lesion.semi_axes_mm.max() * scale * (1 + lesion.bump_amps.sum()) + 2 * spacing)
    inv = np.linalg.inv(affine)
    c_vox = inv[:3, :3] @ lesion.center_mm + inv[:3, 3]
    half = np.abs(inv[:3, :3]) @ np.full(3, r_max)
    lo = np.maximum(np.floor(c_vox - half).astype(int), 0)
    hi = np.minimum(np.ceil(c_vox + half).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return (slice(0, 0),) * 3, np.zeros((0, 0, 0), np.float32)
    # local blob coordinates u = R^T (A ijk + t - c) are separable in i, j, k: build them by
    # broadcasting three 1D ramps instead of a (N, 3) coordinate list (5x faster, float32)
    m = lesion.rotation.T @ affine[:3, :3]
    off = lesion.rotation.T @ (affine[:3, 3] - lesion.center_mm)
    ramps = [np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi, strict=True)]
    axes = (lesion.semi_axes_mm * scale).astype(np.float32)
    local = []
    for row in range(3):
        u = (np.float32(m[row, 0]) * ramps[0])[:, None, None] + (np.float32(m[row, 1]) * ramps[1])[None, :, None] \
            + (np.float32(m[row, 2]) * ramps[2])[None, None, :] + np.float32(off[row])
        local.append(u)
    norm = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
    rho = np.sqrt((local[0] / axes[0]) ** 2 + (local[1] / axes[1]) ** 2 + (local[2] / axes[2]) ** 2)
    inv_norm = 1.0 / np.maximum(norm, np.float32(1e-6))
    bumps = np.ones_like(rho)
    for d, amp, ph in zip(lesion.bump_dirs, lesion.bump_amps, lesion.bump_phases, strict=True):
        proj = (local[0] * np.float32(d[0]) + local[1] * np.float32(d[1]) + local[2] * np.float32(d[2])) * inv_norm
        bumps += np.float32(amp) * np.cos(proj * np.float32(np.pi) + np.float32(ph))
    rho_eff = rho / np.maximum(bumps, np.float32(0.3))
    r_mean = float(np.mean(axes))
    frac = np.clip(0.5 + (1.0 - rho_eff) * np.float32(r_mean / spacing), 0.0, 1.0).astype(np.float32)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return box, frac  # type: ignore[return-value]


def _restriction(anat_fractions: dict[str, np.ndarray], regions: dict[str, np.ndarray], name: str | None,
                 box: tuple[slice, ...]) -> np.ndarray | None:
    if name is None:
        return None
    if name == "parenchyma":
        return (anat_fractions["gm"][box] + anat_fractions["wm"][box]).astype(np.float32)
    if name == "wm":
        return np.clip(anat_fractions["wm"][box] * 1.5, 0, 1).astype(np.float32)
    if name == "brain":
        return (anat_fractions["gm"][box] + anat_fractions["wm"][box] + anat_fractions["csf"][box])
    return regions[name][box].astype(np.float32)


@dataclass
class Scene:
    """Lesions painted on the base anatomy at one time point."""

    lesions: list[Lesion]
    fractions: list[tuple[tuple[slice, ...], np.ndarray]]  # soft fractions after restriction
    labels: np.ndarray  # instance ids (uint16) on the base grid, fraction >= 0.5
    classes: np.ndarray  # class labels (uint8) on the base grid


def build_scene(lesions: list[Lesion], anatomy) -> Scene:  # noqa: ANN001 (Anatomy, avoids import cycle)
    """Soft fractions and hard instance / class label maps of ``lesions`` on the base grid.

    Lesions are painted in list order (later ones win where they overlap, e.g. glioma necrosis
    inside the enhancing rim inside the oedema).
    """
    shape, affine = anatomy.shape, anatomy.affine
    ids = np.zeros(shape, np.uint16)
    classes = np.zeros(shape, np.uint8)
    fracs = []
    for les in lesions:
        box, f = lesion_fraction(les, shape, affine)
        if f.size == 0:
            fracs.append((box, f))
            continue
        r = _restriction(anatomy.fractions, anatomy.regions, les.restrict, box)
        if r is not None:
            f = np.minimum(f, np.clip(r * 2.0 - 0.5, 0, 1)) if les.restrict == "parenchyma" else f * r
        hard = f >= 0.5
        ids[box][hard] = les.lesion_id
        classes[box][hard] = les.label
        fracs.append((box, f.astype(np.float32)))
    return Scene(lesions, fracs, ids, classes)


@lru_cache(maxsize=len(CONTRASTS))
def _tissue_image(anatomy, contrast: str) -> np.ndarray:  # noqa: ANN001
    """Lesion-free image of one contrast: sum of tissue fraction x intensity (cached, read-only)."""
    table = TISSUE_INTENSITY[contrast]
    img = np.full(anatomy.shape, table["air"], np.float32)
    for tissue, frac in anatomy.fractions.items():
        img += frac * np.float32(table[tissue] - table["air"])
    img.setflags(write=False)
    return img


def tissue_image(anatomy, table: dict[str, float]) -> np.ndarray:  # noqa: ANN001
    """Lesion-free image for a given tissue intensity table (sum of fraction x intensity)."""
    img = np.full(anatomy.shape, table["air"], np.float32)
    for tissue, frac in anatomy.fractions.items():
        img += frac * np.float32(table[tissue] - table["air"])
    return img


def render(anatomy, scene: Scene | None, contrast: str,  # noqa: ANN001
           tissue: dict[str, float] | None = None) -> np.ndarray:
    """The noiseless 1 mm image of one contrast (float32) on the base grid; ``tissue`` replaces
    the contrast's :data:`TISSUE_INTENSITY` row (e.g. another protocol's grey/white contrast)."""
    img = _tissue_image(anatomy, contrast).copy() if tissue is None else tissue_image(anatomy, tissue)
    if scene is None:
        return img
    for les, (box, f) in zip(scene.lesions, scene.fractions, strict=True):
        if f.size == 0:
            continue
        mu = LESION_INTENSITY[les.kind][contrast]
        if les.bloom_factor > 1.0 and contrast in ("swi", "t2"):
            # susceptibility blooming: dark halo larger than the deposit (the truth label)
            bbox, bf = lesion_fraction(les, anatomy.shape, anatomy.affine, scale=les.bloom_factor)
            dark = np.float32(LESION_INTENSITY[les.kind][contrast] or 0.1)
            img[bbox] = img[bbox] * (1 - bf) + bf * dark * img[bbox]
            continue
        if mu is None:
            continue
        if contrast == "ct":
            mu_v = np.float32(mu + (les.intensity_scale - 1.0) * 10.0)
        else:
            mu_v = np.float32(mu * les.intensity_scale)
        img[box] = img[box] * (1 - f) + f * mu_v
    return img


# --------------------------------------------------------------------------------------------
# acquisition
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Acquisition:
    """Scanner grid and imperfections of one acquisition."""

    voxel_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)  # in-plane x, in-plane y, slice thickness
    world_transform: np.ndarray | None = None  # rigid motion of the subject (RAS mm, 4x4)
    snr: float | None = 30.0  # white-matter signal / noise sigma (MR); None = no noise
    noise_hu: float = 3.0  # CT noise sigma in HU
    bias_strength: float = 0.15  # std of the log bias field (0 = none)
    scale: float = 1.0  # scanner intensity scaling (MR)


def acquisition_grid(anatomy, voxel_mm: tuple[float, float, float]) -> tuple[tuple[int, int, int], np.ndarray]:  # noqa: ANN001
    """Axial grid with ``voxel_mm`` spacing covering the base field of view (same centre)."""
    base_shape = np.asarray(anatomy.shape)
    extent = base_shape * 1.0
    sp = np.asarray(voxel_mm, float)
    shape = np.maximum(1, np.round(extent / sp)).astype(int)
    aff = np.diag([*sp, 1.0])
    centre = anatomy.affine[:3, :3] @ ((base_shape - 1) / 2) + anatomy.affine[:3, 3]
    aff[:3, 3] = centre - sp * (shape - 1) / 2
    return (int(shape[0]), int(shape[1]), int(shape[2])), aff


#: slice orientations of a 2D acquisition: the world axis (RAS) of the slice normal
SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def oriented_acquisition_grid(anatomy, in_plane_mm: float, slice_thickness_mm: float,  # noqa: ANN001
                              slice_axis: int = 2) -> tuple[tuple[int, int, int], np.ndarray]:
    """A 2D acquisition's grid of slices normal to world axis ``slice_axis`` (:data:`SLICE_AXES`), stored as a
    scanner stores it: array axes (row, column, slice), the slice axis last. Axial (2) is :func:`acquisition_grid`
    with voxels ``(in_plane, in_plane, thickness)``. Coronal (1): rows along x, columns from superior to inferior,
    slices along y; sagittal (0): rows along y, columns from superior to inferior, slices along x (the DICOM
    convention of those planes, so the affine permutes and flips axes and the reader must reorient). Each covers
    the base field of view about the same centre."""
    if slice_axis == 2:
        return acquisition_grid(anatomy, (in_plane_mm, in_plane_mm, slice_thickness_mm))
    if slice_axis not in (0, 1):
        raise ValueError(f"slice_axis must be 0 (sagittal), 1 (coronal) or 2 (axial), not {slice_axis!r}")
    order = (0, 2, 1) if slice_axis == 1 else (1, 2, 0)  # the world axis of each array axis
    signs = np.array([1.0, -1.0, 1.0])  # columns run superior -> inferior
    base_shape = np.asarray(anatomy.shape)
    world_sp = np.full(3, float(in_plane_mm))
    world_sp[slice_axis] = float(slice_thickness_mm)
    shape = np.array([max(1, int(round(base_shape[w] / world_sp[w]))) for w in order])
    aff = np.eye(4)
    for k, w in enumerate(order):
        aff[:3, k] = 0.0
        aff[w, k] = signs[k] * world_sp[w]
    centre = anatomy.affine[:3, :3] @ ((base_shape - 1) / 2) + anatomy.affine[:3, 3]
    aff[:3, 3] = centre - aff[:3, :3] @ ((shape - 1) / 2)
    return (int(shape[0]), int(shape[1]), int(shape[2])), aff


def _fine_grid(shape: tuple[int, int, int], affine: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """Sub-sampling factors (about 1 mm sub-voxels), fine shape and affine."""
    sp = np.sqrt((affine[:3, :3] ** 2).sum(0))
    n = np.maximum(1, np.round(sp / 1.0)).astype(int)
    fine_sp = sp / n
    fine = affine.copy()
    fine[:3, :3] = affine[:3, :3] / sp * fine_sp
    # first sub-voxel centre of voxel 0 sits (n-1)/2 sub-voxels before the voxel centre
    fine[:3, 3] = affine[:3, 3] - fine[:3, :3] @ ((n - 1) / 2.0)
    fine_shape = tuple(int(s * k) for s, k in zip(shape, n, strict=True))
    return n, fine_shape, fine  # type: ignore[return-value]


def _block(arr: np.ndarray, n: np.ndarray) -> np.ndarray:
    s = arr.shape
    return arr.reshape(s[0] // n[0], n[0], s[1] // n[1], n[1], s[2] // n[2], n[2])


def acquire_signal(anatomy, image: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray,  # noqa: ANN001
                   world_transform: np.ndarray | None, default: float) -> np.ndarray:
    """Sample the base image as the scanner would: moved by ``world_transform``, block-averaged."""
    n, fine_shape, fine_aff = _fine_grid(shape, affine)
    base = Volume(image, anatomy.affine)
    fine = resample_to_reference(base, (fine_shape, fine_aff), "linear", world_transform, default_value=default).data
    if np.all(n == 1):
        return fine.astype(np.float32)
    return _block(fine, n).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def acquire_labels(anatomy, labels: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray,  # noqa: ANN001
                   world_transform: np.ndarray | None) -> np.ndarray:
    """Truth labels on the scanner grid: plurality vote (background included) over each voxel's
    ~1 mm sub-voxels, each sampled by nearest neighbour from the base label map."""
    n, fine_shape, fine_aff = _fine_grid(shape, affine)
    base = Volume(labels, anatomy.affine)
    fine = resample_to_reference(base, (fine_shape, fine_aff), "nearest", world_transform, default_value=0).data
    if np.all(n == 1):
        return fine.astype(labels.dtype)
    blocks = _block(fine, n).transpose(0, 2, 4, 1, 3, 5).reshape(*shape, -1)
    values = np.unique(fine)
    best = np.zeros(shape, labels.dtype)
    best_count = (blocks == 0).sum(-1)
    for v in values[values != 0]:
        c = (blocks == v).sum(-1)
        win = c > best_count
        best[win] = v
        best_count = np.where(win, c, best_count)
    return best


def bias_field(shape: tuple[int, int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth random multiplicative field ``exp(sum of low-order cosines)`` with log-std ~ strength."""
    if strength <= 0:
        return np.ones(shape, np.float32)
    order = 3
    coef = rng.normal(size=(order, order, order))
    coef[0, 0, 0] = 0.0
    basis = [np.stack([np.cos(np.pi * k * (np.arange(s) + 0.5) / s) for k in range(order)], 1) for s in shape]
    log_b = np.einsum("abc,ia,jb,kc->ijk", coef, basis[0], basis[1], basis[2], optimize=True)
    log_b *= strength / max(float(log_b.std()), 1e-9)
    return np.exp(log_b).astype(np.float32)


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of (signal + complex Gaussian noise of std ``sigma`` per channel)."""
    s = np.float32(sigma)
    re = image + s * rng.standard_normal(image.shape, dtype=np.float32)
    im = s * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)


def acquire(anatomy, image: np.ndarray, contrast: str, acq: Acquisition, rng: np.random.Generator,  # noqa: ANN001
            grid: tuple[tuple[int, int, int], np.ndarray] | None = None) -> tuple[Volume, dict]:
    """The acquired Volume of a base image, and a record of what was applied."""
    shape, affine = grid or acquisition_grid(anatomy, acq.voxel_mm)
    is_ct = contrast == "ct"
    default = TISSUE_INTENSITY[contrast]["air"]
    sig = acquire_signal(anatomy, image, shape, affine, acq.world_transform, default)
    record: dict = {"contrast": contrast, "voxel_mm": [float(v) for v in acq.voxel_mm]}
    if is_ct:
        if acq.noise_hu > 0:
            sig = sig + np.float32(acq.noise_hu) * rng.standard_normal(sig.shape, dtype=np.float32)
        record["noise_sigma_hu"] = float(acq.noise_hu)
        sig = np.clip(sig, -1024, 3071)
    else:
        b = bias_field(shape, rng, acq.bias_strength)
        sig = sig * b * np.float32(acq.scale)
        record.update(bias_log_std=float(acq.bias_strength), intensity_scale=float(acq.scale))
        if acq.snr:
            ref = TISSUE_INTENSITY[contrast]["wm"] * acq.scale
            sigma = ref / acq.snr
            sig = add_rician_noise(sig, sigma, rng)
            record.update(snr_wm=float(acq.snr), noise_sigma=float(sigma))
    meta = {"contrast": contrast, "modality": "CT" if is_ct else "MR", "slice_thickness_mm": float(acq.voxel_mm[2])}
    return Volume(sig.astype(np.float32), affine, meta), record
