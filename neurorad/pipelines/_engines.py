"""Adapters from the MS pipeline to the imaging engine (neurorad.preprocess).

The pipeline calls only these small functions, so swapping an engine never touches the steps.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from neurorad.image.volume import Volume
from neurorad.preprocess.bias import n4_bias_correct
from neurorad.preprocess.brain_extraction import get_extractor
from neurorad.preprocess.normalize import NyulStandardizer, histogram_match, joint_histogram_normalize

_load_lock = threading.Lock()


def brain_mask(volume: Volume, engine: str = "deepbet") -> tuple[Volume, str, str | None]:
    """Brain mask (bool Volume on ``volume``'s grid), engine name, weights hash.

    Engines that keep per-call state in the instance are serialised by a lock (deepbet's own object run from
    two threads at once gave a second mask differing in 23,900 of its voxels); a ``reentrant`` engine (deepbet
    through :class:`~neurorad.preprocess.brain_extraction.DeepBet`, which works on a copy per call) is loaded
    under the lock and then runs concurrently.
    """
    with _load_lock:
        ext = get_extractor(engine)
        reentrant = bool(getattr(ext, "reentrant", False))
        if reentrant:
            ext.load()
    with contextlib.nullcontext() if reentrant else _load_lock:
        m = ext.extract(volume)
    info = m.metadata.get("brain_extraction") or {}
    return m, f"preprocess.brain_extraction:{info.get('engine', engine)}", info.get("weights_sha256")


def n4(volume: Volume, mask: Volume | None, shrink: int | tuple[int, ...] = 4,
       iterations: tuple[int, ...] = (50, 50, 50, 50), nonpositive: str = "floor",
       shift_medians: float = 2.0, sample_mm: float | None = None) -> tuple[Volume, str]:
    """N4 bias-field correction (Tustison et al. 2010) inside ``mask`` (Otsu head mask when None).

    ``shrink``: the fit's shrink factor, one for every axis or one per axis (the MS workflow passes
    :func:`neurorad.preprocess.bias.n4_shrink_factors` of its common grid, computed once for both time points);
    ``sample_mm``: the sample spacing per-axis factors aim at, named in the engine string. ``nonpositive`` and
    ``shift_medians`` go to :func:`neurorad.preprocess.bias.n4_bias_correct` (the MS workflow passes its ``MSConfig``
    values)."""
    out = n4_bias_correct(volume.with_data(np.asarray(volume.data, np.float32)), mask=mask, shrink_factor=shrink,
                          iterations=iterations, nonpositive=nonpositive, shift_medians=shift_medians)
    its = ",".join(str(i) for i in iterations)
    how = (f"shrink {shrink}" if isinstance(shrink, int)
           else f"shrink {'x'.join(map(str, shrink))}" + (f" (to {sample_mm:g} mm)" if sample_mm is not None else ""))
    return out, f"preprocess.bias:n4 ({how}, iterations {its})"  # type: ignore[return-value]


def both(fn: Callable[[Any], Any], a: Any, b: Any, concurrent: bool) -> tuple[Any, Any]:
    """``(fn(a), fn(b))``, in two threads when ``concurrent`` (the engines release the GIL:
    torch, ITK, NumPy's partition, interp and ufuncs), else one after the other. The first exception is raised."""
    fa, fb = parallel(fn, [a, b], concurrent)
    return fa, fb


def parallel(fn: Callable[[Any], Any], items: list[Any], concurrent: bool) -> list[Any]:
    """``[fn(x) for x in items]``, two at a time in threads when ``concurrent`` (for work that
    releases the GIL: gzip compression, SciPy filters). The first exception is raised."""
    if not concurrent or len(items) < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ms-io") as ex:
        return list(ex.map(fn, items))


def joint_normalise(
    baseline: Volume, followup: Volume, mask: np.ndarray, method: str = "nyul", concurrent: bool = False,
) -> tuple[np.ndarray, np.ndarray, str, dict[str, float]]:
    """Both time points on one intensity scale, baseline brain median = 1.

    1. joint-histogram linear fit of the co-registered pair (Jain et al. 2016): follow-up mapped
       onto the baseline's scale;
    2. Nyul & Udupa (1999) piecewise-linear standardisation with landmarks learnt on the pair
       (``method='nyul'``), or exact histogram matching of the follow-up onto the baseline
       (``method='histogram'``).

    ``concurrent``: each time point's percentiles and piecewise-linear map in a thread of its own (the same
    values; about 0.3 s less per 1 mm pair on 2 cores).
    """
    m = np.asarray(mask, bool)
    f_lin, fit = joint_histogram_normalize(baseline, followup, m)
    if method == "nyul":
        ny = NyulStandardizer()
        lm_b, lm_f = both(lambda v: ny.image_landmarks(v, m), baseline, f_lin, concurrent)
        ny.fit_landmarks([lm_b, lm_f])
        b2, f2 = both(lambda vl: ny.transform(vl[0], landmarks=vl[1]), (baseline, lm_b), (f_lin, lm_f), concurrent)
    elif method == "histogram":
        b2, f2 = baseline, histogram_match(f_lin, baseline, m, m)
    else:
        raise ValueError(f"unknown normalisation {method!r} (nyul, histogram)")
    scale = float(np.median(np.asarray(b2.data)[m])) or 1.0
    b, f = both(lambda v: (np.asarray(v.data, np.float64) / scale).astype(np.float32), b2, f2, concurrent)
    return b, f, f"preprocess.normalize: joint-histogram fit + {method}", {
        "joint_fit_slope": fit.slope, "joint_fit_intercept": fit.intercept}
