"""CLI commands of this area (registered by :mod:`neurorad.cli`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
