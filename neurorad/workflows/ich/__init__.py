"""``ich``: spontaneous intracerebral haemorrhage on one non-contrast CT or a pair (prior 8-72 h earlier).

Implements the published paired-CT morphology study (PAPERS.md D): haematoma volume, SR index,
AP/LR/SI diameters and longitudinal axis type, and for a pair the volume change, haematoma
expansion (>= 6 mL or >= 33 %), per-axis length change, direction change, centre movement and the
"obvious change" flag. See docs/ich.md.
"""

from neurorad.workflows.ich.workflow import ICHWorkflow

__all__ = ["ICHWorkflow"]
