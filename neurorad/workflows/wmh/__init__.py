"""The ``wmh`` workflow: white-matter hyperintensities on FLAIR (see :mod:`.workflow`)."""

from neurorad.workflows.wmh.workflow import WMHWorkflow

__all__ = ["WMHWorkflow"]
