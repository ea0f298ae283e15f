"""neurorad.pipelines layer (see ARCHITECTURE.md)."""
