"""Process-wide settings that change how fast the platform runs, never what it computes.

Applied once when :mod:`neurorad` is imported (every CLI command, server, job process and Dask
worker imports it before any image is loaded).

**NumPy's huge-page advice.** On Linux NumPy marks every array of 4 MB or more with
``madvise(MADV_HUGEPAGE)``. Where the kernel's transparent-huge-page ``defrag`` setting is
``madvise`` (Debian's and most distributions' default), ``defer+madvise`` or ``always``, a page fault in such a
region that finds no free huge page compacts memory synchronously before it returns, and the
advice stays on the memory after NumPy frees it (numpy/numpy#31590). The imaging steps allocate
and free arrays of 20-100 MB all the time; on the 2-core virtual machines this project is measured
on, first touching a fresh 96 MB array took 0.64 s with the advice and 0.04 s without it, and the
candidate step of the MS workflow fell from 3.7 to 2.7 s (``bench/ms_speed.py
--compare-hugepages`` measures the whole pair with and without, in one process). So, only where
``defrag`` would stall, the advice is switched off; a ``NUMPY_MADVISE_HUGEPAGE`` set in the
environment (NumPy's own switch, https://numpy.org/doc/stable/reference/global_state.html) always
wins. Values are bit-identical either way: only the page size of the memory changes.
"""

from __future__ import annotations

import os
from pathlib import Path

THP_DEFRAG = Path("/sys/kernel/mm/transparent_hugepage/defrag")
# defrag settings under which a fault in MADV_HUGEPAGE memory compacts synchronously (kernel
# Documentation/admin-guide/mm/transhuge.rst)
# ("always" stalls on every huge-page request, advised or not; "defer" and "never" never stall)
STALLING_DEFRAG = frozenset({"always", "madvise", "defer+madvise"})


def thp_defrag_mode(path: Path = THP_DEFRAG) -> str | None:
    """The selected value of the kernel's THP ``defrag`` setting (the bracketed word), or None
    where there is none (not Linux, no THP, unreadable)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def numpy_hugepage_advice_wanted(defrag: str | None, env: str | None) -> bool:
    """Whether NumPy should keep advising huge pages: the environment's ``NUMPY_MADVISE_HUGEPAGE``
    when set (``"0"`` off, anything else on, as NumPy reads it), else only where ``defrag`` does not
    stall on such memory."""
    if env is not None and env.strip() != "":
        return env.strip() != "0"
    return defrag not in STALLING_DEFRAG


def configure_numpy_hugepages(defrag_path: Path = THP_DEFRAG) -> bool:
    """Apply :func:`numpy_hugepage_advice_wanted` to this process; returns the setting now in force.
    A NumPy without the switch (not Linux, or a future release that drops it) is left as it is."""
    import numpy as np

    core = getattr(np, "_core", None) or getattr(np, "core", None)
    multiarray = getattr(core, "multiarray", None)
    setter = getattr(multiarray, "_set_madvise_hugepage", None)
    getter = getattr(multiarray, "_get_madvise_hugepage", None)
    if setter is None:
        return bool(getter()) if getter is not None else False
    want = numpy_hugepage_advice_wanted(thp_defrag_mode(defrag_path), os.environ.get("NUMPY_MADVISE_HUGEPAGE"))
    setter(want)
    return want
