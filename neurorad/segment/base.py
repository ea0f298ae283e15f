"""The one segmentation interface: volumes in, per-class probability maps on the input grid out.

Every engine - a trained network (:mod:`neurorad.segment.torch_engine`), an ONNX Runtime
session, an nnU-Net v2 results folder, a k-fold ensemble or a classical method - is a
:class:`Segmenter`. A pipeline only ever calls ``segmenter.predict([flair, t1, ...])`` and
receives a :class:`Segmentation` whose probabilities lie on the grid of the FIRST input volume
(array axes ``[i, j, k, class]``, class 0 = background, the classes of ``segmenter.labels``).

Adding an engine never touches the pipelines (ARCHITECTURE.md, "engines behind small
interfaces").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from neurorad.errors import InputError
from neurorad.image.volume import Volume


@dataclass
class Segmentation:
    """What a :class:`Segmenter` returns.

    ``probabilities``: 4D Volume ``[i, j, k, class]`` (float32, sums to 1 over classes) on the
    grid of the first input; ``uncertainty``: optional 3D Volume on the same grid (for an
    ensemble: the standard deviation of the members' foreground probability, the "member
    disagreement" the quality alarms count); ``record``: engine, model name/version, weights
    hash, parameters and timings (goes into the result's provenance).
    """

    probabilities: Volume
    labels: dict[int, str]
    uncertainty: Volume | None = None
    record: dict[str, Any] = field(default_factory=dict)

    def label_map(self) -> Volume:
        """Arg-max class per voxel (uint8 Volume on the input grid)."""
        lab = np.argmax(np.asarray(self.probabilities.data), axis=-1).astype(np.uint8)
        return Volume(lab, self.probabilities.affine.copy(), {"labels": {str(k): v for k, v in self.labels.items()},
                                                              "segmentation": self.record})

    def foreground(self, threshold: float = 0.5) -> Volume:
        """Boolean mask where the summed foreground probability (all classes but 0) >= ``threshold``."""
        p = np.asarray(self.probabilities.data)
        fg = 1.0 - p[..., 0]
        return Volume(fg >= threshold, self.probabilities.affine.copy(), {"segmentation": self.record})


@runtime_checkable
class Segmenter(Protocol):
    """Takes co-registered or not, any-grid input volumes (one per contrast, in the order of
    ``contrasts``) and returns per-class probabilities on the first volume's grid."""

    name: str
    version: str
    labels: dict[int, str]
    contrasts: tuple[str, ...]

    @property
    def weights_sha256(self) -> str | None: ...

    def predict(self, volumes: Sequence[Volume]) -> Segmentation: ...


def check_inputs(volumes: Sequence[Volume] | Volume, contrasts: Sequence[str], engine: str) -> list[Volume]:
    """Validate the inputs of a segmenter: the right number of 3D, finite volumes."""
    if isinstance(volumes, Volume):
        volumes = [volumes]
    vols = list(volumes)
    if len(vols) != len(contrasts):
        raise InputError(f"{engine} needs {len(contrasts)} input image(s) ({', '.join(contrasts)}), "
                         f"got {len(vols)}")
    for v, c in zip(vols, contrasts, strict=True):
        src = v.metadata.get("source")
        if v.data.ndim != 3:
            raise InputError(f"{engine}: the {c} input must be a 3D image, got shape {v.shape}", src)
        v.check_finite()
        if min(v.spatial_shape) < 1:
            raise InputError(f"{engine}: the {c} input is empty", src)
    return vols


class ClassicalSegmenter:
    """A classical (non-learned) method as a Segmenter.

    ``fn(volumes) -> array`` returns either integer labels ``[i, j, k]`` (turned into one-hot
    probabilities) or probabilities ``[i, j, k, class]`` on the first volume's grid.
    """

    def __init__(self, name: str, fn: Callable[[list[Volume]], np.ndarray], labels: dict[int, str],
                 contrasts: Sequence[str], version: str = "1.0.0", weights_sha256: str | None = None) -> None:
        self.name = name
        self.version = version
        self.labels = dict(labels)
        self.contrasts = tuple(contrasts)
        self._fn = fn
        self._weights = weights_sha256

    @property
    def weights_sha256(self) -> str | None:
        return self._weights

    def predict(self, volumes: Sequence[Volume]) -> Segmentation:
        vols = check_inputs(volumes, self.contrasts, self.name)
        ref = vols[0]
        out = np.asarray(self._fn(vols))
        n = len(self.labels)
        if out.shape == ref.spatial_shape:
            lab = out.astype(np.int64)
            if lab.min() < 0 or lab.max() >= n:
                raise ValueError(f"{self.name} returned labels outside 0..{n - 1}")
            prob = np.eye(n, dtype=np.float32)[lab]
        elif out.shape == (*ref.spatial_shape, n):
            prob = out.astype(np.float32)
        else:
            raise ValueError(f"{self.name} returned shape {out.shape}; expected {ref.spatial_shape} (labels) or "
                             f"{(*ref.spatial_shape, n)} (probabilities)")
        record = {"engine": "classical", "name": self.name, "version": self.version,
                  "weights_sha256": self._weights}
        return Segmentation(Volume(prob, ref.affine.copy(), {}), self.labels, None, record)


def brain_extractor_segmenter(engine: str = "deepbet", contrast: str = "t1") -> ClassicalSegmenter:
    """A brain-extraction engine of :mod:`neurorad.preprocess.brain_extraction` as a 2-class Segmenter."""
    from neurorad.preprocess.brain_extraction import get_extractor

    ext = get_extractor(engine)

    def fn(vols: list[Volume]) -> np.ndarray:
        return np.asarray(ext.extract(vols[0]).data, dtype=np.uint8)

    return ClassicalSegmenter(f"brain-extraction:{engine}", fn, {0: "background", 1: "brain"}, (contrast,),
                              weights_sha256=None)
