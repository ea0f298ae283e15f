"""neurorad.dicom layer (see ARCHITECTURE.md)."""
