"""neurorad.clinical layer (see ARCHITECTURE.md)."""
