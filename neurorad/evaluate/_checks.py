"""Input checks (defined in :mod:`neurorad.quality.checks`, the upper layer, and shared here)."""

from neurorad.quality.checks import as_binary, check_probability, check_same_shape, check_spacing

__all__ = ["as_binary", "check_probability", "check_same_shape", "check_spacing"]
