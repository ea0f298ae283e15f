"""neurorad.preprocess layer (see ARCHITECTURE.md)."""
