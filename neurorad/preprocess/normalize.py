"""Intensity normalisation.

* :func:`zscore` and :func:`percentile_scale` inside a mask;
* :func:`restore_magnitude_origin`: an image whose zero was moved (a series written z-scored or with an offset)
  shifted back so that its darkest signal sits at 0, as in a magnitude image;
* :func:`histogram_match`: exact quantile mapping of one image onto another (the algorithm of
  ``skimage.exposure.match_histograms``, here restricted to masks);
* :func:`joint_histogram_fit` / :func:`joint_histogram_normalize`: the longitudinal linear
  intensity normalisation of MSmetrix-long / MUSIC (Jain et al., "Two time point MS lesion
  segmentation in brain MRI: an expectation-maximization framework", Front. Neurosci. 2016):
  fit ``baseline ~ a * followup + b`` by least squares on the joint histogram of the two
  co-registered images inside the brain;
* :class:`NyulStandardizer`: piecewise-linear histogram standardisation (Nyul & Udupa, "On
  standardizing the MR image intensity scale", Magn. Reson. Med. 1999; Nyul, Udupa & Zhang,
  IEEE TMI 2000): learn mean landmark positions on a standard scale from a training set, then
  map each image's landmarks onto them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurorad.errors import InputError, ProcessingError
from neurorad.image.volume import Volume


def _mask_of(volume: Volume, mask: Volume | np.ndarray | None) -> np.ndarray:
    if mask is None:
        return np.ones(volume.spatial_shape, dtype=bool)
    m = mask.data if isinstance(mask, Volume) else np.asarray(mask)
    if isinstance(mask, Volume) and not mask.same_grid(volume):
        raise InputError("mask is not on the image grid; resample it first", mask.metadata.get("source"))
    if m.shape[:3] != volume.spatial_shape:
        raise InputError(f"mask shape {m.shape} does not match image {volume.spatial_shape}")
    m = m.astype(bool)
    if m.sum() < 10:
        raise InputError("mask has fewer than 10 voxels")
    return m


def zscore(volume: Volume, mask: Volume | np.ndarray | None = None) -> Volume:
    """``(x - mean) / sd`` with mean and sd taken inside ``mask`` (whole image if None)."""
    m = _mask_of(volume, mask)
    x = np.asarray(volume.data, dtype=np.float64)
    mu, sd = x[m].mean(), x[m].std()
    if sd == 0:
        raise ProcessingError("intensity is constant inside the mask; cannot z-score")
    return volume.with_data(((x - mu) / sd).astype(np.float32), normalization={"method": "zscore"})


#: more than this fraction of an image's signal voxels below zero: not a magnitude image (interpolation undershoot
#: at bright edges stays far under it)
NEGATIVE_FRACTION_LIMIT = 0.1


def restore_magnitude_origin(volume: Volume, support: np.ndarray | None = None, origin_percentile: float = 1.0,
                             max_negative_fraction: float = NEGATIVE_FRACTION_LIMIT) -> tuple[Volume, float]:
    """The image shifted so that its darkest signal sits at 0 when it is not a magnitude image, and the shift.

    An MR magnitude image is never negative (its noise is Rician, Gudbjartsson & Patz, Magn. Reson. Med. 1995):
    air reads about one noise SD and FLAIR's suppressed CSF a little more. Research pipelines write series z-scored
    (whole image, or inside the brain with 0 outside) or with an offset, which moves that zero. Rules that compare
    ratios (a lesion's contrast over white matter, N4's multiplicative field) then read other numbers: on the
    independent simulator's 40 pairs a z-scored follow-up moved the MS workflow's results on 9 (a lesion lost on
    two, gained on two; MS workflow 1.22.2, which gives each the pair's own result back). No scale factor is needed
    (the ratios do not depend on it).

    When more than ``max_negative_fraction`` of the ``support`` voxels (the voxels with signal, e.g.
    :func:`neurorad.preprocess.brain_extraction.signal_support`; all when None) are negative, the support is
    shifted so that its ``origin_percentile`` sits at 0: the air of a z-scored head, the constant background of a
    stripped-then-z-scored one (exactly 0 again), the darkest CSF of one z-scored inside its brain (whose zeros
    outside the support stay 0). An image with a positive offset cannot be told from a magnitude image by its
    values and is left as it is. Returns the image as float32 and the shift added (0.0 when none)."""
    data = np.asarray(volume.data, dtype=np.float32)
    inside = np.ones(data.shape, bool) if support is None else np.asarray(support, bool)
    if inside.shape != data.shape:
        raise InputError(f"support shape {inside.shape} does not match image {data.shape}",
                         volume.metadata.get("source"))
    values = data[inside]
    if values.size == 0 or np.count_nonzero(values < 0) <= max_negative_fraction * values.size:
        return volume.with_data(data), 0.0
    shift = np.float32(-np.percentile(values, origin_percentile))
    out = np.where(inside, data + shift, data) if support is not None else data + shift
    return volume.with_data(out.astype(np.float32)), float(shift)


def percentile_scale(volume: Volume, mask: Volume | np.ndarray | None = None, lower: float = 1.0,
                     upper: float = 99.0, clip: bool = False) -> Volume:
    """Linear map of the ``lower``/``upper`` percentiles (inside ``mask``) to 0 and 1."""
    if not 0 <= lower < upper <= 100:
        raise InputError(f"need 0 <= lower < upper <= 100, got {lower}, {upper}")
    m = _mask_of(volume, mask)
    x = np.asarray(volume.data, dtype=np.float64)
    lo, hi = np.percentile(x[m], [lower, upper])
    if hi <= lo:
        raise ProcessingError("percentiles coincide; cannot scale")
    y = (x - lo) / (hi - lo)
    if clip:
        y = np.clip(y, 0, 1)
    return volume.with_data(y.astype(np.float32), normalization={"method": "percentile", "lower": lower,
                                                                   "upper": upper})


def histogram_match(volume: Volume, reference: Volume, mask: Volume | np.ndarray | None = None,
                    reference_mask: Volume | np.ndarray | None = None) -> Volume:
    """Map intensities so that the histogram inside ``mask`` equals the reference's.

    Same algorithm as ``skimage.exposure.match_histograms`` (each distinct source value goes to
    the reference value at the same empirical quantile, linear interpolation between quantiles),
    applied to the voxels in ``mask``; voxels outside keep their value.
    """
    m = _mask_of(volume, mask)
    rm = _mask_of(reference, reference_mask)
    src = np.asarray(volume.data)[m]
    ref = np.asarray(reference.data)[rm]
    s_values, s_idx, s_counts = np.unique(src, return_inverse=True, return_counts=True)
    r_values, r_counts = np.unique(ref, return_counts=True)
    s_q = np.cumsum(s_counts) / src.size
    r_q = np.cumsum(r_counts) / ref.size
    mapped = np.interp(s_q, r_q, r_values)
    out = np.asarray(volume.data, dtype=np.float64).copy()
    out[m] = mapped[s_idx.ravel()]
    return volume.with_data(out.astype(np.float32), normalization={"method": "histogram_match"})


@dataclass(frozen=True)
class LinearFit:
    """``y = slope * x + intercept``."""

    slope: float
    intercept: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(x, dtype=np.float64) + self.intercept


def joint_histogram_fit(baseline: Volume, followup: Volume, mask: Volume | np.ndarray | None = None,
                        bins: int = 256, min_count: int = 1) -> LinearFit:
    """Least-squares line ``baseline ~ a * followup + b`` through the joint histogram.

    The two images must be co-registered on one grid. Each occupied bin of the 2D histogram of
    (follow-up, baseline) intensities inside ``mask`` contributes its centre, weighted by its
    count (bins with fewer than ``min_count`` voxels are ignored, which suppresses rare
    pairs such as new lesions). With ``min_count=1`` this is ordinary least squares on the voxels
    up to the bin quantisation (Jain et al. 2016).
    """
    if not baseline.same_grid(followup):
        raise InputError("baseline and follow-up must be co-registered on one grid", followup.metadata.get("source"))
    m = _mask_of(baseline, mask)
    y = np.asarray(baseline.data, dtype=np.float64)[m]
    x = np.asarray(followup.data, dtype=np.float64)[m]
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ProcessingError("an image is constant inside the mask; cannot fit intensities")
    h, xe, ye = np.histogram2d(x, y, bins=bins)
    xc = (xe[:-1] + xe[1:]) / 2
    yc = (ye[:-1] + ye[1:]) / 2
    xx, yy = np.meshgrid(xc, yc, indexing="ij")
    w = np.where(h >= min_count, h, 0).ravel()
    if np.count_nonzero(w) < 3:
        raise ProcessingError("joint histogram too sparse for a line fit")
    a_mat = np.stack([xx.ravel(), np.ones(w.size)], axis=1) * np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(a_mat, yy.ravel() * np.sqrt(w), rcond=None)
    return LinearFit(float(coef[0]), float(coef[1]))


def joint_histogram_normalize(baseline: Volume, followup: Volume, mask: Volume | np.ndarray | None = None,
                              bins: int = 256) -> tuple[Volume, LinearFit]:
    """Follow-up mapped onto the baseline's intensity scale by :func:`joint_histogram_fit`."""
    fit = joint_histogram_fit(baseline, followup, mask, bins)
    out = followup.with_data(fit(followup.data).astype(np.float32), normalization={
        "method": "joint-hist", "slope": fit.slope, "intercept": fit.intercept})
    return out, fit


# ---------------------------------------------------------------------------------------------
# Nyul & Udupa
# ---------------------------------------------------------------------------------------------

DEFAULT_LANDMARKS = (10, 20, 30, 40, 50, 60, 70, 80, 90)


@dataclass
class NyulStandardizer:
    """Piecewise-linear standardisation (Nyul & Udupa 1999).

    ``pc_low``/``pc_high`` (percentiles, default 1 and 99) bound the "intensity of interest"; they map
    to ``s_min``/``s_max`` of the standard scale. ``landmarks`` are the inner percentiles (deciles by
    default) whose mean standard-scale positions are learnt by :meth:`fit`. Values beyond the end
    landmarks are extrapolated with the slope of the end segments.
    """

    pc_low: float = 1.0
    pc_high: float = 99.0
    landmarks: Sequence[float] = DEFAULT_LANDMARKS
    s_min: float = 1.0
    s_max: float = 100.0
    standard_: np.ndarray | None = field(default=None)

    @property
    def percentiles(self) -> np.ndarray:
        return np.asarray([self.pc_low, *self.landmarks, self.pc_high], dtype=float)

    def image_landmarks(self, volume: Volume, mask: Volume | np.ndarray | None = None) -> np.ndarray:
        m = _mask_of(volume, mask)
        return np.percentile(np.asarray(volume.data)[m].astype(np.float64), self.percentiles)

    def fit(
        self, volumes: Sequence[Volume], masks: Sequence[Volume | np.ndarray | None] | None = None,
    ) -> NyulStandardizer:
        """Learn the standard landmark positions from a training set."""
        if len(volumes) == 0:
            raise InputError("Nyul standardisation needs at least one training image")
        masks = list(masks) if masks is not None else [None] * len(volumes)
        return self.fit_landmarks([self.image_landmarks(v, m) for v, m in zip(volumes, masks, strict=True)])

    def fit_landmarks(self, landmarks: Sequence[np.ndarray]) -> NyulStandardizer:
        """:meth:`fit` from the training images' landmarks (:meth:`image_landmarks`), so a caller that
        also transforms those images computes each image's percentiles once."""
        if len(landmarks) == 0:
            raise InputError("Nyul standardisation needs at least one training image")
        mapped = []
        for lm in landmarks:
            if lm[-1] <= lm[0]:
                raise ProcessingError("training image has no intensity range between its end percentiles")
            mapped.append(self.s_min + (lm - lm[0]) / (lm[-1] - lm[0]) * (self.s_max - self.s_min))
        self.standard_ = np.mean(mapped, axis=0)
        return self

    def transform(self, volume: Volume, mask: Volume | np.ndarray | None = None,
                  landmarks: np.ndarray | None = None) -> Volume:
        """Map ``volume`` (all voxels; landmarks taken inside ``mask``, or ``landmarks`` when the caller has
        them from :meth:`image_landmarks`) onto the standard scale."""
        if self.standard_ is None:
            raise ProcessingError("NyulStandardizer is not fitted; call fit() or load()")
        lm = self.image_landmarks(volume, mask) if landmarks is None else np.asarray(landmarks, dtype=np.float64)
        if np.any(np.diff(lm) <= 0):
            # ties (e.g. many identical values): make strictly increasing so the map is a function
            lm = lm + np.arange(lm.size) * 1e-6 * max(1.0, float(np.abs(lm).max()))
        x = np.asarray(volume.data, dtype=np.float64)
        s = self.standard_
        y = np.interp(x, lm, s)
        lo_slope = (s[1] - s[0]) / (lm[1] - lm[0])
        hi_slope = (s[-1] - s[-2]) / (lm[-1] - lm[-2])
        below, above = x < lm[0], x > lm[-1]  # extrapolated with the end segments' slopes
        y[below] = s[0] + (x[below] - lm[0]) * lo_slope
        y[above] = s[-1] + (x[above] - lm[-1]) * hi_slope
        return volume.with_data(y.astype(np.float32), normalization={"method": "nyul"})

    def save(self, path: str | Path) -> None:
        if self.standard_ is None:
            raise ProcessingError("nothing to save: NyulStandardizer is not fitted")
        Path(path).write_text(json.dumps({
            "format": "neurorad-nyul/1", "pc_low": self.pc_low, "pc_high": self.pc_high,
            "landmarks": list(self.landmarks), "s_min": self.s_min, "s_max": self.s_max,
            "standard": self.standard_.tolist()}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> NyulStandardizer:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read Nyul landmarks ({exc})", p) from exc
        if d.get("format") != "neurorad-nyul/1":
            raise InputError("not a neurorad Nyul landmark file", p)
        return cls(d["pc_low"], d["pc_high"], tuple(d["landmarks"]), d["s_min"], d["s_max"],
                   np.asarray(d["standard"], dtype=float))
