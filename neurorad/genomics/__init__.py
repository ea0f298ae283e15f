"""neurorad.genomics layer (see ARCHITECTURE.md)."""
