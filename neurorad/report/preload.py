"""Importing this module loads the report and DICOM-result writers' dependencies (nothing else happens).

A workflow's report step renders key images and a PDF with matplotlib/PIL and writes DICOM SEG,
encapsulated PDF and secondary captures with highdicom/pydicom. Importing those, and matplotlib's
first font lookup (it reads its font list), took 2-3 s of a warm 1 mm MS pair's report step on the
2-core machine (``bench/ms_speed.py --warm``). A worker's job processes fork from a server process
that imports the enabled workflows' ``Workflow.preload`` modules once; a workflow that writes a
report lists this module there so its jobs start with them loaded. No threads are started and no
file is written, so forking afterwards is safe. A failure is logged and swallowed: the forkserver
must start anyway (the job then reports the error itself).
"""

from __future__ import annotations

import logging

try:
    import matplotlib

    matplotlib.use("Agg")
    import highdicom  # noqa: F401 - imported for its side effect (loaded once, before the fork)
    import matplotlib.pyplot  # noqa: F401
    from matplotlib import font_manager

    import neurorad.dicom.results  # noqa: F401
    import neurorad.report.key_images  # noqa: F401

    font_manager.findfont("DejaVu Sans:bold")
except Exception as exc:  # noqa: BLE001 - a broken optional dependency must not stop the forkserver
    logging.getLogger(__name__).warning("report writers could not be preloaded: %s", type(exc).__name__)
