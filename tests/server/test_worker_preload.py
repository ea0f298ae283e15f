"""Workflow.preload: a worker's job processes fork from a server that imported the enabled
workflows' heavy modules once (ITK-elastix alone is seconds per cold process)."""

from __future__ import annotations

import multiprocessing.forkserver as fs
import subprocess
import sys

from neurorad.server.worker import Worker
from neurorad.workflows import registry
from neurorad.workflows.contract import Workflow


def test_ms_lesions_declares_importable_preload_modules():
    mods = registry.preload_modules(["summary", "ms-lesions", "no-such-workflow"])
    assert "neurorad.preprocess.elastix_preload" in mods and "neurorad.pipelines.ms_lesions" in mods
    assert len(mods) == len(set(mods))
    assert registry.preload_modules(["summary"]) == list(registry.load("summary").preload)
    # in a fresh process (this one may have loaded ITK-elastix already): a plain `import itk` leaves
    # elastix's wrapped module unloaded (ITK loads lazily); importing the declared modules loads it
    probe = ("import importlib, sys, itk\n"
             "key = 'itk.itkElastixRegistrationMethodPython'\n"
             "before = key in sys.modules, 'highdicom' in sys.modules\n"
             f"for m in {mods!r}: importlib.import_module(m)\n"
             "print(*before, key in sys.modules, 'highdicom' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    # ... and the report writers' highdicom (matplotlib's font list too: neurorad.report.preload)
    assert r.stdout.split()[-4:] == ["False", "False", "True", "True"]


def test_worker_hands_the_enabled_workflows_preload_to_the_forkserver(settings, monkeypatch):
    class Heavy(Workflow):
        name = "preload-probe"
        preload = ("json", "neurorad.quantify.components")

        def run(self, inputs, out_dir, progress):  # pragma: no cover - never run
            raise AssertionError

    registry.register(Heavy)
    try:
        settings.workflows = ["summary", "preload-probe"]
        monkeypatch.setattr(fs._forkserver, "_preload_modules", [])
        Worker(settings)
        assert {"json", "neurorad.quantify.components", "neurorad.server.orchestration"} <= set(
            fs._forkserver._preload_modules)
    finally:
        registry.unregister("preload-probe")
