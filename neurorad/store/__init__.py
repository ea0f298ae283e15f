"""neurorad.store layer (see ARCHITECTURE.md)."""
