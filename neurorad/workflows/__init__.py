"""Clinical workflows: the contract every workflow implements, the registry, and the built-ins.

``contract``: typed requirements, result, review form, viewer layout, report sections and the
:class:`Workflow` base class; ``registry``: entry points (group ``neurorad.workflows``);
``runner``: one way to run a workflow from the CLI and the server; ``outputs``: report and
DICOM objects of a result. One sub-package per built-in workflow (``ms_lesions`` ...).
"""

from neurorad.workflows.contract import (  # noqa: F401
    ACCEPTABLE,
    SCORE_1_5,
    UNACCEPTABLE,
    Alarm,
    Choice,
    Finding,
    FormField,
    KeyImage,
    ModelRef,
    Panel,
    Progress,
    Provenance,
    Quantity,
    ReportSection,
    ReportTable,
    Requirements,
    Review,
    ReviewForm,
    SeriesRole,
    ViewerLayout,
    Workflow,
    WorkflowInputs,
    WorkflowResult,
)
