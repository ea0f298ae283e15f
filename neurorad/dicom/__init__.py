"""neurorad.dicom layer (see ARCHITECTURE.md): DICOM in and out of the hospital.

Modules (import them directly; this package imports nothing heavy):

* :mod:`neurorad.dicom.deid` - PS3.15 Annex E de-identification (``DeidOptions``,
  ``deidentify_dataset``, ``deidentify_folder``, ``reidentify_dataset``, ``QuarantineError``).
* :mod:`neurorad.dicom.vault` - keyed pseudonyms, UIDs, date shifts; encrypted way back
  (``PseudonymVault``).
* :mod:`neurorad.dicom.classify` - series classification and per-workflow selection.
* :mod:`neurorad.dicom.transport` - DIMSE: ``StoreSCP``, ``send_cstore``, ``echo``.
* :mod:`neurorad.dicom.dicomweb` - ``DicomWebClient`` (QIDO-RS, WADO-RS, STOW-RS).
* :mod:`neurorad.dicom.ingest` - ``validate_instance``, ``import_folder``, ``group_instances``,
  ``StudyCompletion``.
* :mod:`neurorad.dicom.results` - SEG / Encapsulated PDF / SC writers (MS-workflow area).
"""
