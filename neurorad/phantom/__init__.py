"""Phantom layer: realistic synthetic heads with known lesions, built on real anatomy.

Python API::

    from neurorad.phantom import ms_pair, write_case
    case = ms_pair(seed=1, n_new=3, slice_thickness_mm=3, misalign_deg=4, misalign_mm=3)
    case.followup_flair, case.truth_new, case.case["lesions"]
    write_case(case, "out/ms1", format="both")
"""

from neurorad.phantom.anatomy import Anatomy, load_anatomy
from neurorad.phantom.cases import KINDS, PhantomCase, ms_pair
from neurorad.phantom.io import write_case

__all__ = ["KINDS", "Anatomy", "PhantomCase", "load_anatomy", "ms_pair", "write_case"]
