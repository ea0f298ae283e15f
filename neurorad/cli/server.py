"""``neurorad serve``, ``neurorad worker`` and administration (users, tokens, database, retention)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from neurorad.errors import InputError


def _settings(data_dir: Path | None, database_url: str | None = None, config: Path | None = None, **kw):
    """Settings from (in order) defaults, an optional JSON config file, then command-line options."""
    from neurorad.server.settings import Destination, Settings, default_data_dir

    values: dict = {}
    if config is not None:
        try:
            values = json.loads(Path(config).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read config: {exc}", config) from None
        values["destinations"] = [Destination(**d) for d in values.get("destinations", [])]
        if "allowed_modalities" in values:
            values["allowed_modalities"] = tuple(values["allowed_modalities"])
    values.update({k: v for k, v in kw.items() if v is not None})
    values["data_dir"] = Path(data_dir) if data_dir else Path(values.get("data_dir") or default_data_dir())
    values["database_url"] = database_url or values.get("database_url") or os.environ.get("NEURORAD_DATABASE_URL")
    return Settings(**values)


def _quiet_dicom_logs() -> None:
    """pynetdicom logs request details (original UIDs) at INFO/DEBUG: keep identifiers out of logs."""
    import logging

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    data_opt = typer.Option(None, "--data-dir", help="Data folder (default $NEURORAD_DATA_DIR or ~/.neurorad).")
    db_opt = typer.Option(None, "--database-url",
                          help="SQLAlchemy URL (default SQLite in the data folder; also $NEURORAD_DATABASE_URL).")
    cfg_opt = typer.Option(None, "--config", help="JSON settings file (destinations, quiet period, ...).")

    @app.command("serve")
    def serve(
        data_dir: Path = data_opt,
        host: str = typer.Option("127.0.0.1", "--host", help="HTTP listen address."),
        port: int = typer.Option(8000, "--port", help="HTTP port."),
        dicom_port: int = typer.Option(11112, "--dicom-port", help="C-STORE receiver port (0: no receiver)."),
        dicom_host: str = typer.Option(None, "--dicom-host", help="C-STORE listen address (default 127.0.0.1; "
                                       "a site's scanners need the machine's address)."),
        ae_title: str = typer.Option(None, "--ae-title", help="Receiver AE title (default NEURORAD)."),
        workers: int = typer.Option(1, "--workers", help="Local worker slots (0: no local worker)."),
        jobs_per_process: int = typer.Option(None, "--jobs-per-process", help="Jobs a local job process runs "
                                             "one after the other before a fresh one replaces it (default 20; "
                                             "1: a process per job)."),
        quiet_period_s: float = typer.Option(None, "--quiet-period", help="Seconds without a new instance "
                                             "after which a study is complete (default 30)."),
        workflows: str = typer.Option(None, "--workflows", help="Comma-separated workflows to enable (default "
                                      "'summary'; `neurorad workflows` lists the installed ones). Each complete "
                                      "study runs every enabled workflow whose series it has; a workflow that "
                                      "cannot be loaded stops the server at start."),
        allow_aet: list[str] = typer.Option(None, "--allow-aet", help="Calling AE title the receiver accepts "
                                            "(repeat for each scanner/PACS; '*' accepts any). Without one (here or "
                                            "in the config's allowed_calling_aets) the receiver does not start."),
        database_url: str = db_opt,
        config: Path = cfg_opt,
    ) -> None:
        """Start the API, the DICOM receiver, the scheduler and a local worker: one command for a small site."""
        import uvicorn

        from neurorad.server.app import create_app

        settings = _settings(data_dir, database_url, config, host=host, port=port, ae_title=ae_title,
                             dicom_host=dicom_host,
                             dicom_port=dicom_port or None, workers=max(workers, 1), quiet_period_s=quiet_period_s,
                             jobs_per_process=jobs_per_process,
                             workflows=workflows, run_receiver=bool(dicom_port), run_scheduler=True,
                             allowed_calling_aets=list(allow_aet) if allow_aet else None,
                             run_worker=workers > 0)
        _quiet_dicom_logs()
        app_ = create_app(settings)
        typer.echo(f"neurorad: API on http://{host}:{port}, DICOM {settings.ae_title}@{settings.dicom_host}:"
                   f"{dicom_port}, data in {settings.data_dir}", err=True)
        # keep idle connections 75 s (nginx's keepalive_timeout default), not uvicorn's 5 s: a client
        # (or proxy) reusing a connection after a few seconds of reading otherwise races the server's
        # close and gets "connection reset" (bench/load_locust.py saw it at 2-6 s think times)
        uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=75)

    @app.command("worker")
    def worker(
        data_dir: Path = data_opt,
        executor: str = typer.Option("local", "--executor", help="'local' (job processes forked from a "
                                     "forkserver) or dask://HOST:PORT."),
        concurrency: int = typer.Option(1, "--concurrency", help="Jobs run at the same time."),
        jobs_per_process: int = typer.Option(None, "--jobs-per-process", help="local: jobs a job process runs "
                                             "one after the other before a fresh one replaces it (default 20; "
                                             "1: a process per job)."),
        database_url: str = db_opt,
        config: Path = cfg_opt,
    ) -> None:
        """Join an existing server's database and run its jobs."""
        import signal

        from neurorad.server.worker import Worker
        from neurorad.workflows import registry

        settings = _settings(data_dir, database_url, config, jobs_per_process=jobs_per_process)
        if settings.database_url.startswith("sqlite") and not (settings.data_dir / "neurorad.db").exists():
            raise InputError("no neurorad database here; start `neurorad serve` first", settings.data_dir)
        registry.load_enabled(settings.workflows)  # an enabled workflow that cannot load stops the worker here
        _quiet_dicom_logs()
        w = Worker(settings, executor=executor, concurrency=concurrency)
        signal.signal(signal.SIGTERM, lambda *_: w.stop())
        try:
            w.run()
        except KeyboardInterrupt:
            w.stop()

    user_app = typer.Typer(help="Manage users (admin / radiologist / technologist).", no_args_is_help=True)
    app.add_typer(user_app, name="user")

    @user_app.command("add")
    def user_add(
        username: str = typer.Argument(..., help="Login name."),
        role: str = typer.Option(..., "--role", help="admin, radiologist or technologist."),
        password: str = typer.Option(None, "--password", help="Password (default: prompt; or $NEURORAD_PASSWORD)."),
        data_dir: Path = data_opt,
        database_url: str = db_opt,
    ) -> None:
        """Create a user with an Argon2id-hashed password."""
        from neurorad.server.auth import create_user
        from neurorad.store import Database
        from neurorad.store.audit import audit

        password = password or os.environ.get("NEURORAD_PASSWORD") or typer.prompt(
            "password", hide_input=True, confirmation_prompt=True)
        settings = _settings(data_dir, database_url)
        db = Database(settings.database_url)
        db.migrate()
        try:
            with db.session() as s:
                user = create_user(s, username, password, role)
                audit(s, "cli", "user.create", "user", user.id, role=role)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        typer.echo(f"user {username} ({role}) created")

    token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
    app.add_typer(token_app, name="token")

    @token_app.command("create")
    def token_create(username: str = typer.Argument(...), name: str = typer.Option("cli", "--name"),
                     days: float = typer.Option(90.0, "--days", help="Lifetime in days (at most 365)."),
                     data_dir: Path = data_opt, database_url: str = db_opt) -> None:
        """Create an API token for a user; prints it once (only its hash is stored)."""
        from sqlalchemy import select

        from neurorad.server.auth import create_api_token
        from neurorad.store import Database
        from neurorad.store.audit import audit
        from neurorad.store.models import User

        db = Database(_settings(data_dir, database_url).database_url)
        with db.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise InputError(f"no user {username!r}")
            try:
                token = create_api_token(s, user, name, days)
            except ValueError as exc:
                raise InputError(str(exc)) from None
            audit(s, "cli", "token.create", "user", user.id, name=name)
            typer.echo(token)

    @token_app.command("list")
    def token_list(username: str = typer.Option(None, "--user", help="Only this user's tokens."),
                   data_dir: Path = data_opt, database_url: str = db_opt) -> None:
        """List API tokens (id, user, name, state, expiry, last use); never their secrets."""
        from sqlalchemy import select

        from neurorad.server.auth import token_rows
        from neurorad.store import Database
        from neurorad.store.models import User

        db = Database(_settings(data_dir, database_url).database_url)
        with db.read_session() as s:
            uid = None
            if username is not None:
                uid = s.scalar(select(User.id).where(User.username == username))
                if uid is None:
                    raise InputError(f"no user {username!r}")
            rows = token_rows(s, uid)
        typer.echo(f"{'id':>5}  {'user':<16} {'name':<20} {'state':<8} {'expires (UTC)':<17} last used (UTC)")
        for r in rows:
            exp = r["expires_at"].strftime("%Y-%m-%d %H:%M") if r["expires_at"] else "never"
            used = r["last_used_at"].strftime("%Y-%m-%d %H:%M") if r["last_used_at"] else "-"
            typer.echo(f"{r['id']:>5}  {r['user'][:16]:<16} {r['name'][:20]:<20} {r['state']:<8} {exp:<17} {used}")

    @token_app.command("revoke")
    def token_revoke(token_id: int = typer.Argument(..., help="Token id (from `neurorad token list`)."),
                     data_dir: Path = data_opt, database_url: str = db_opt) -> None:
        """Revoke an API token at once (requests with it get 401)."""
        from neurorad.server.auth import revoke_token
        from neurorad.store import Database
        from neurorad.store.audit import audit

        db = Database(_settings(data_dir, database_url).database_url)
        with db.session() as s:
            if not revoke_token(s, token_id):
                raise InputError(f"no token with id {token_id}")
            audit(s, "cli", "token.revoke", "token", token_id)
        typer.echo(f"token {token_id} revoked")

    db_app = typer.Typer(help="Database administration.", no_args_is_help=True)
    app.add_typer(db_app, name="db")

    @db_app.command("upgrade")
    def db_upgrade(data_dir: Path = data_opt, database_url: str = db_opt) -> None:
        """Create or upgrade the database schema (Alembic migrations shipped with neurorad)."""
        from neurorad.store import Database

        settings = _settings(data_dir, database_url)
        Database(settings.database_url).migrate()
        typer.echo("database at head")

    @app.command("purge")
    def purge(days: float = typer.Option(183.0, "--days", help="Keep image data this many days."),
              dry_run: bool = typer.Option(False, "--dry-run"), data_dir: Path = data_opt,
              database_url: str = db_opt) -> None:
        """Delete image data older than --days (results, reports and the audit log stay)."""
        from neurorad.store import Database, Storage
        from neurorad.store.retention import purge_images

        settings = _settings(data_dir, database_url)
        rep = purge_images(Database(settings.database_url), Storage(settings.data_dir), days, actor="cli",
                           dry_run=dry_run)
        typer.echo(f"{'would purge' if dry_run else 'purged'} {rep.instances} instances of {rep.studies} studies "
                   f"({rep.bytes_freed / 1e6:.1f} MB)")

