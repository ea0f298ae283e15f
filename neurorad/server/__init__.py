"""neurorad.server layer (see ARCHITECTURE.md)."""
