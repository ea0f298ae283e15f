"""Operations commands: ``neurorad doctor``, ``backup``, ``restore`` and research ``batch`` runs over BIDS."""

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

    @app.command("batch")
    def batch_cmd(
        bids: Path = typer.Option(..., "--bids", help="BIDS dataset (with dataset_description.json)."),
        workflow: str = typer.Option(..., "--workflow", help="Installed workflow (`neurorad workflows`)."),
        out: Path = typer.Option(None, "--out",
                                 help="Derivatives folder (default BIDS/derivatives/neurorad-<workflow>)."),
        jobs: int = typer.Option(1, "--jobs", "-j", help="Sessions run at once (local processes)."),
        executor: str = typer.Option(None, "--executor", help="dask://HOST:PORT: run sessions on a Dask cluster."),
        reports: bool = typer.Option(False, "--reports", help="Also write each session's report and DICOM objects."),
    ) -> None:
        """Run a workflow on every subject/session of a BIDS dataset: parallel, resumable (done sessions are
        skipped), BIDS-derivatives outputs, one cohort table with units; failed sessions are listed and do
        not stop the others (exit 1 when any failed)."""
        from neurorad.cli import quiet
        from neurorad.workflows.batch import run_batch

        def progress(n: int, total: int, eta_s: float | None) -> None:
            if not quiet():
                eta = f", ETA {eta_s:.0f} s" if eta_s is not None else ""
                typer.echo(f"[{n}/{total}] sessions finished{eta}", err=True)

        rep = run_batch(bids, workflow, out, jobs=jobs, executor=executor, reports=reports, progress=progress)
        typer.echo(f"{len(rep.done)} done, {len(rep.skipped)} already done, {len(rep.failed)} failed, "
                   f"{len(rep.not_applicable)} without the inputs -> {rep.out_dir}")
        for case_id, why in rep.not_applicable:
            typer.echo(f"  not applicable {case_id}: {why}")
        for case_id, why in rep.failed:
            typer.echo(f"  FAILED {case_id}: {why}")
        if rep.table:
            typer.echo(f"cohort table {rep.table} (units in {rep.table.with_suffix('.json').name})")
        if rep.failed:
            raise typer.Exit(1)
