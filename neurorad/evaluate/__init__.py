"""neurorad.evaluate layer (see ARCHITECTURE.md)."""
