"""neurorad.report layer (see ARCHITECTURE.md)."""
