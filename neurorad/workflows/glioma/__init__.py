"""The ``glioma`` workflow plug-in (EASE glioma volumetry); see :mod:`.workflow`."""

from neurorad.workflows.glioma.workflow import GliomaWorkflow

__all__ = ["GliomaWorkflow"]
