"""neurorad.quantify layer (see ARCHITECTURE.md)."""
