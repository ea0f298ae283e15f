"""MRQy-style image-quality metrics per volume (Sadri et al. 2020, "MRQy - An open-source tool for
quality control of MR imaging data", Med Phys 47:6029), computed in 3D.

Foreground mask (documented, and replaceable by passing ``foreground``): voxels above the Otsu
threshold of the volume, the largest 26-connected component, holes filled slice by slice
(axial, axis 2) and in 3D. Background = all other voxels. ``f`` / ``b`` below are the
foreground / background intensities; patches are 5x5x5 voxels centred on the brightest voxel
of the foreground (``fp``) and of the background (``bp``), clipped at the image border.

| metric | definition |
|---|---|
| MEAN, RNG, VAR | mean, max - min, variance of f |
| CV | 100 x std(f) / mean(f) (percent) |
| CPP | foreground mean of the image filtered with 1 at the centre, -1/26 on the 26 neighbours |
| PSNR | 20 log10(max(f) / RMSE) with RMSE between the image and its 3x3x3 median filter, over the foreground |
| SNR1 | std(f) / std(b) |
| SNR2 | mean(fp) / std(b) |
| SNR3 | mean(fp) / std(fp) |
| SNR4 | mean(fp) / std(bp) |
| CNR | mean(fp - bp) / std(bp) |
| CVP | std(fp) / mean(fp) |
| CJV | (std(f) + std(b)) / abs(mean(f) - mean(b)) |
| EFC | entropy focus criterion (Atkinson 1997, MRIQC form): E / E_max, see below |
| FBER | median(f^2) / median(b^2) (inf when the background median is 0) |

CPP is the 3D form of MRQy's 3x3 kernel. EFC: E = -sum (x/B) ln(x/B) over all voxels with
B = sqrt(sum x^2); E_max is E of a uniform image, so EFC = 1 for a uniform (maximally
blurred/ghosted) image and is lower for a sharp one.

Where we differ from the ``mrqy`` package (src/mrqy/QCF.py): MRQy works slice by slice
(2D Otsu on an equalised + raw image mix, convex hull) and averages over sampled slices; we work
on the 3D volume. MRQy's ``patch`` pads by 5 but slices for a 5-wide patch, so its "centred"
patch sits 3 voxels up-left of the brightest voxel; ours is centred. MRQy's PSNR compares the
image with the median filter of the image divided by its maximum (different scales), which
makes PSNR ~ 20 log10(max/rms(image)); ours compares like with like. MRQy's EFC adds 1e16
(instead of 1e-16) inside the logarithm, which makes the value meaningless; ours uses the
MRIQC formula (normalised positive). MRQy's FBER returns 0 for a dark background; ours inf.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from neurorad.errors import InputError
from neurorad.quality.checks import as_binary, check_same_shape

METRICS = ("MEAN", "RNG", "VAR", "CV", "CPP", "PSNR", "SNR1", "SNR2", "SNR3", "SNR4",
           "CNR", "CVP", "CJV", "EFC", "FBER")


def otsu_threshold(values: np.ndarray, n_bins: int = 256) -> float:
    """Otsu's threshold of an intensity sample (histogram with ``n_bins`` bins)."""
    hist, edges = np.histogram(values, bins=n_bins)
    centers = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0 = m0 / w0
        mu1 = (m0[-1] - m0) / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.nanargmax(between))])


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Default foreground: Otsu, largest 26-connected component, holes filled (see module docstring)."""
    img = np.asarray(image, dtype=np.float32)
    fg = img > otsu_threshold(img[::2, ::2, ::2].ravel() if img.size > 1e6 else img.ravel())
    lab, n = ndimage.label(fg, structure=np.ones((3, 3, 3), bool))
    if n > 1:
        fg = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    for k in range(fg.shape[2]):
        fg[:, :, k] = ndimage.binary_fill_holes(fg[:, :, k])
    return ndimage.binary_fill_holes(fg)


def _patch(img: np.ndarray, where: np.ndarray, size: int = 5) -> np.ndarray:
    vals = np.where(where, img, -np.inf)
    c = np.unravel_index(int(np.argmax(vals)), img.shape)
    h = size // 2
    sl = tuple(slice(max(0, ci - h), min(n, ci + h + 1)) for ci, n in zip(c, img.shape, strict=True))
    return img[sl].astype(np.float64)


def image_quality_metrics(image: np.ndarray, foreground: np.ndarray | None = None) -> dict[str, float]:
    """The MRQy metrics of one 3D volume (one sequence), see the module docstring."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise InputError(f"image quality metrics need a 3D volume, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise InputError("image holds NaN or inf")
    fg = foreground_mask(img) if foreground is None else as_binary(foreground, "foreground mask")
    check_same_shape(("image", img), ("foreground", fg))
    if not fg.any() or fg.all():
        raise InputError("foreground mask must hold some but not all voxels")
    f, b = img[fg], img[~fg]
    fp, bp = _patch(img, fg), _patch(img, ~fg)
    box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in ndimage.find_objects(fg.astype(np.uint8))[0])
    sub, fsub = img[box], fg[box]
    k = -np.ones((3, 3, 3)) / 26.0
    k[1, 1, 1] = 1.0
    cpp = float(ndimage.convolve(sub, k, mode="constant")[fsub].mean())
    med = ndimage.median_filter(sub, size=3, mode="nearest")
    rmse = float(np.sqrt(np.mean((sub[fsub] - med[fsub]) ** 2)))
    x = np.abs(img.ravel())
    bmax = float(np.sqrt(np.sum(x**2)))
    n = x.size
    e_max = -n * (1 / np.sqrt(n)) * np.log(1 / np.sqrt(n))
    xn = x[x > 0] / bmax
    efc = float(-np.sum(xn * np.log(xn)) / e_max) if bmax > 0 else float("nan")
    std_b = float(np.std(b))
    std_bp = float(np.std(bp))

    def _div(a: float, c: float) -> float:
        return float(a / c) if c else (float("inf") if a else float("nan"))

    med_b2 = float(np.median(b**2))
    return {
        "MEAN": float(f.mean()), "RNG": float(np.ptp(f)), "VAR": float(f.var()),
        "CV": _div(100 * f.std(), f.mean()), "CPP": cpp,
        "PSNR": float(20 * np.log10(f.max() / rmse)) if rmse > 0 else float("inf"),
        "SNR1": _div(f.std(), std_b), "SNR2": _div(fp.mean(), std_b), "SNR3": _div(fp.mean(), fp.std()),
        "SNR4": _div(fp.mean(), std_bp),
        "CNR": _div(fp.mean() - bp.mean(), std_bp),
        "CVP": _div(fp.std(), fp.mean()),
        "CJV": _div(f.std() + std_b, abs(f.mean() - b.mean())),
        "EFC": efc, "FBER": _div(float(np.median(f**2)), med_b2),
    }


def quality_table(images: dict[str, dict[str, np.ndarray]], foregrounds: dict[str, np.ndarray] | None = None):
    """Metrics per case and sequence: ``images[case][sequence]`` -> DataFrame indexed by case with
    columns ``<sequence>_<METRIC>``. ``foregrounds[case]`` (optional) is shared by a case's sequences."""
    import pandas as pd

    rows = {}
    for case, seqs in images.items():
        fg = None if foregrounds is None else foregrounds.get(case)
        row = {}
        for seq, img in seqs.items():
            row.update({f"{seq}_{k}": v for k, v in image_quality_metrics(img, fg).items()})
        rows[case] = row
    return pd.DataFrame.from_dict(rows, orient="index")
