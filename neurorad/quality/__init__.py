"""neurorad.quality layer (see ARCHITECTURE.md)."""
