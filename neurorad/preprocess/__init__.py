"""Preprocessing: registration, brain extraction, N4 bias correction, intensity normalisation,
longitudinal harmonisation. Pure functions over :class:`neurorad.image.Volume`.

Transforms are 4x4 matrices in world RAS+ mm mapping **fixed -> moving** points
(see :mod:`neurorad.preprocess.transforms`).
"""

from neurorad.image.masks import dice  # the project's one Dice, re-exported here
from neurorad.preprocess.bias import n4_bias_correct
from neurorad.preprocess.brain_extraction import (
    ENGINES,
    BrainExtractor,
    apply_mask,
    envelope,
    extract_brain,
    fuse_masks,
    get_extractor,
)
from neurorad.preprocess.harmonize import HarmonizedPair, check_acquisition, harmonize_pair
from neurorad.preprocess.normalize import (
    LinearFit,
    NyulStandardizer,
    histogram_match,
    joint_histogram_fit,
    joint_histogram_normalize,
    percentile_scale,
    zscore,
)
from neurorad.preprocess.registration import RegistrationLimits, RegistrationResult, register
from neurorad.preprocess.transforms import AffineTransform, resample

__all__ = [
    "ENGINES", "AffineTransform", "BrainExtractor", "HarmonizedPair", "LinearFit", "NyulStandardizer",
    "RegistrationLimits", "RegistrationResult", "apply_mask", "check_acquisition", "dice", "envelope",
    "extract_brain", "fuse_masks", "get_extractor", "harmonize_pair", "histogram_match", "joint_histogram_fit",
    "joint_histogram_normalize", "n4_bias_correct", "percentile_scale", "register", "resample", "zscore",
]
