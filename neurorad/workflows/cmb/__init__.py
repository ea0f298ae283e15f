"""The ``cmb`` workflow: cerebral microbleeds on SWI (see :mod:`.workflow`)."""

from neurorad.workflows.cmb.workflow import CMBWorkflow

__all__ = ["CMBWorkflow"]
