"""``neurorad-weak``: the weakly supervised brain-extraction network as a brain-extraction engine.

The model (``neurorad/segment/models/neurorad-weak-brain/``) was trained as the skull-stripping
paper (Ranjbar et al., PAPERS.md E) trained its Dense V-Net: on weak labels computed on the T1
of each case (the paper: SPM12 on T1Gd; here deepbet on the phantom's T1, version 0.2.0 - the
0.1.0 label source :mod:`neurorad.preprocess.tissue_prior` mislabels most randomised phantoms,
docs/segment.md) rather than manual masks, Dice loss, best validation checkpoint - on
domain-randomised phantoms built on real anatomy, one contrast per case (T1, T1c, T2 or FLAIR), so
one model serves all of them.

This class plugs the registry model into :mod:`neurorad.preprocess.brain_extraction`'s engine
registry (``--engine neurorad-weak``): probabilities on the input grid, foreground >= 0.5,
largest connected component, holes filled.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from neurorad.image.volume import Volume
from neurorad.preprocess.brain_extraction import _as_mask, _check_input

MODEL = "neurorad-weak-brain"


class NeuroradWeak:
    """Brain-extraction engine backed by the shipped ``neurorad-weak-brain`` model."""

    name = "neurorad-weak"

    def __init__(self, model: str = MODEL, threshold: float = 0.5) -> None:
        self.model = model
        self.threshold = threshold

    @functools.cached_property
    def segmenter(self):  # noqa: ANN201 - NetworkSegmenter
        from neurorad.segment.engine import load_segmenter

        return load_segmenter(self.model)

    @property
    def weights_sha256(self) -> str:
        return str(self.segmenter.weights_sha256)

    def extract(self, volume: Volume) -> Volume:
        _check_input(volume)
        res = self.segmenter.predict([volume.with_data(np.asarray(volume.data, np.float32))])
        mask = np.asarray(res.foreground(self.threshold).data, bool)
        lab, n = ndimage.label(mask)
        if n > 1:
            sizes = ndimage.sum(mask, lab, range(1, n + 1))
            mask = lab == (1 + int(np.argmax(sizes)))
        mask = ndimage.binary_fill_holes(mask)
        out = _as_mask(volume, mask, self.name, self.weights_sha256)
        out.metadata["brain_extraction"]["model"] = f"{self.segmenter.name}@{self.segmenter.version}"
        return out
