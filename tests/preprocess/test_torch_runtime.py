"""Subnormal flushing is on only inside the block (numpy/scipy on the same thread need subnormals)."""

from __future__ import annotations

import numpy as np

from neurorad.preprocess.torch_runtime import denormals_flushed


def test_flush_is_scoped_to_the_block():
    tiny = np.array([1e-310])  # a float64 subnormal
    assert (tiny * 1.0)[0] != 0.0
    with denormals_flushed() as supported:
        if supported:  # SSE3 CPUs: subnormal inputs read as zero
            assert (tiny * 1.0)[0] == 0.0
    assert (tiny * 1.0)[0] != 0.0  # the caller's arithmetic is IEEE again
