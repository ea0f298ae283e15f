"""neurorad.phantom layer (see ARCHITECTURE.md)."""
