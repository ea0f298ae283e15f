"""Importing this module loads ITK-elastix's wrapped modules (and nothing else happens).

ITK's Python package loads its modules lazily, on the first use of a class: the first
``itk.ElastixRegistrationMethod`` of a process loads the whole chain it depends on, 8-14 s on
the 2-core machine (``bench/ms_speed.py``: 13 of a cold 1 mm MS pair's 51 s). A worker's job
processes fork from a server process that imports the enabled workflows' ``Workflow.preload``
modules once; a workflow that registers with elastix lists this module there so its jobs start
with ITK loaded. No threads are started and no image is processed, so forking afterwards is safe.
A failure is logged and swallowed: the forkserver must start anyway (the job then reports the
registration error itself).
"""

from __future__ import annotations

import logging

from neurorad.preprocess.registration import load_elastix

try:
    load_elastix()
except Exception as exc:  # noqa: BLE001 - a broken ITK must not stop the forkserver; the job reports it
    logging.getLogger(__name__).warning("ITK-elastix could not be preloaded: %s", type(exc).__name__)
