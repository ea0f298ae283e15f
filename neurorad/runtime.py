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

**glibc's allocator keeps freed memory.** glibc serves every block of 32 MB or more (its largest mmap threshold)
with a fresh ``mmap`` and unmaps it when freed, and each thread that allocates gets an arena of its own whose
64 MB heaps are unmapped as soon as they empty. The imaging steps allocate and free 40-90 MB arrays all the
time, from several threads, so every such array was new memory: each 1 mm MS pair took 1.7-2.3 million page
faults and 3-4.7 s of system CPU (of about 34 s). Where the C library is glibc, :func:`configure_malloc` makes
large blocks come from the main heap (``M_MMAP_MAX`` 0), one arena for all threads (``M_ARENA_MAX`` 1) and
keeps up to 1 GB free at the heap's top (``M_TRIM_THRESHOLD``; mallopt(3)). Four pairs in one process then took
0.00-0.46 million faults and 0.25-1.4 s of system CPU each instead of 1.6-2.2 million and 2.7-3.5 s, and 1.3 s
less wall time per pair (median of 9 alternated pairs each, 17.1 against 18.4 s; 0.9 s in a third run), at a peak
resident memory of 4.1-4.4 GB against 3.9-4.3 GB (``bench/ms_speed.py --compare-malloc 3 --pairs 3 --warm``). Freed
memory inside the heap stays with the process until :func:`release_free_memory` hands it back (``malloc_trim``; a
job process calls it when it waits for work). ``NEURORAD_MALLOC=glibc`` in the environment leaves glibc's defaults.
Values are unchanged: only where memory comes from changes.
"""

from __future__ import annotations

import ctypes
import functools
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


# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
MALLOC_KEEP_TRIM_BYTES = 1 << 30  # free memory kept at the heap's top before glibc returns it


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's glibc (None where the C library is another one, e.g. musl or macOS)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
        return ctypes.CDLL("libc.so.6")
    except (ValueError, OSError, AttributeError):  # no such confstr name (not glibc), or no libc.so.6
        return None


def malloc_mode_wanted(env: str | None) -> str:
    """``"keep"`` (the default: freed memory stays with the process, module doc) or ``"glibc"`` (glibc's own
    defaults), from the environment's ``NEURORAD_MALLOC``; anything else is an error naming the variable."""
    value = (env or "").strip().lower() or "keep"
    if value not in ("keep", "glibc"):
        raise ValueError(f"NEURORAD_MALLOC={env!r}: expected 'keep' (default) or 'glibc'")
    return value


def configure_malloc() -> str:
    """Apply :func:`malloc_mode_wanted` to this process (module doc); returns the mode now in force:
    ``"keep"``, ``"glibc"``, or ``"unavailable"`` where the C library is not glibc. Call it before the threads
    that allocate start (arenas already made stay): :mod:`neurorad` does on import."""
    mode = malloc_mode_wanted(os.environ.get("NEURORAD_MALLOC"))
    libc = _glibc()
    if libc is None:
        return "unavailable"
    if mode == "glibc":
        return mode
    ok = (libc.mallopt(_M_ARENA_MAX, 1) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
          and libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_KEEP_TRIM_BYTES) == 1)
    return "keep" if ok else "glibc"


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the operating system (glibc ``malloc_trim(0)``); True when
    some were. A no-op returning False where the C library is not glibc."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
