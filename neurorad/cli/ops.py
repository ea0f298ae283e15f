"""Operations commands: ``neurorad doctor``, ``neurorad backup``, ``neurorad restore``."""

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

    @app.command("backup")
    def backup_cmd(
        dest: Path = typer.Argument(..., help="Folder in which the backup folder neurorad-backup-<UTC> is made."),
        data_dir: Path = typer.Option(None, "--data-dir", help="Data folder (default $NEURORAD_DATA_DIR)."),
        database_url: str = typer.Option(None, "--database-url", help="SQLAlchemy URL (default SQLite in the "
                                         "data folder; also $NEURORAD_DATABASE_URL)."),
    ) -> None:
        """Back up the database (SQLite online backup or pg_dump) and the data folder, with a manifest of
        row counts and file hashes. The vault key is NOT included: back it up apart."""
        from neurorad.store.backup import backup

        settings = _settings(data_dir, database_url)
        rep = backup(settings.data_dir, str(settings.database_url), dest)
        typer.echo(f"backup {rep.path}: {sum(rep.tables.values())} rows in {len(rep.tables)} tables, "
                   f"{rep.files} files ({rep.bytes / 1e6:.1f} MB); back up the vault key separately")

    @app.command("restore")
    def restore_cmd(
        backup_dir: Path = typer.Argument(..., help="A folder made by `neurorad backup`."),
        data_dir: Path = typer.Option(None, "--data-dir", help="EMPTY data folder to restore into."),
        database_url: str = typer.Option(None, "--database-url", help="EMPTY database to restore into "
                                         "(default SQLite in the data folder)."),
    ) -> None:
        """Restore a backup into an empty instance, migrate it to head and check it against its manifest."""
        from neurorad.store.backup import restore

        settings = _settings(data_dir, database_url)
        rep = restore(backup_dir, settings.data_dir, str(settings.database_url))
        typer.echo(f"restored {sum(rep.tables.values())} rows and {rep.files} files into {settings.data_dir}; "
                   "all match the manifest")
