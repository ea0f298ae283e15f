"""Operations commands: ``neurorad doctor`` (and later backup, restore)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    from neurorad.cli.server import _settings

    @app.command("doctor")
    def doctor(
        data_dir: Path = typer.Option(None, "--data-dir",
                                      help="Data folder (default $NEURORAD_DATA_DIR or ~/.neurorad)."),
        database_url: str = typer.Option(None, "--database-url", help="SQLAlchemy URL (default SQLite in the data "
                                         "folder; also $NEURORAD_DATABASE_URL)."),
        config: Path = typer.Option(None, "--config", help="JSON settings file of the installation."),
        no_peers: bool = typer.Option(False, "--no-peers", help="Do not contact the destinations."),
    ) -> None:
        """Check the installation (binaries, workflows, model hashes, database schema, destinations, disk
        space, key-file permissions) and say what to fix; exit 1 when a check fails."""
        from neurorad.server.doctor import FAIL, format_checks, run_checks

        settings = _settings(data_dir, database_url, config)
        checks = run_checks(settings, config_file=config, peers=not no_peers)
        typer.echo(format_checks(checks))
        if any(c.status == FAIL for c in checks):
            raise typer.Exit(1)
