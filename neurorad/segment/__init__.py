"""neurorad.segment layer (see ARCHITECTURE.md)."""
