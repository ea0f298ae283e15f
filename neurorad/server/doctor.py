"""``neurorad doctor``: check an installation and say what to fix.

Each check returns :class:`Check` rows (``ok``, ``warn`` or ``fail``, a detail and, when not
ok, the fix). The command exits non-zero when any check fails. Checks only read: the database
is not created or migrated, key files are not created, peers get a TCP connect (DICOMweb) or a
C-ECHO (DIMSE, PS3.7 9.1.5 Verification) and nothing else.

What is checked: external binaries (dcm2niix from its PyPI wheel, DCMTK's ``storescu``,
dicom3tools' ``dciodvfy``, ``pg_dump``/``pg_restore`` for PostgreSQL backups), the enabled
workflows load (contract check of ``neurorad.workflows.registry``), every registered model's
files match the sha256 in its card (``neurorad.segment.registry.verify``), the database answers
and its Alembic revision is the shipped head, the destinations answer, free disk space of the
data folder, and permissions of the vault key, the database file and the config file (owner
only, docs/security.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from neurorad.server.settings import Settings

OK, WARN, FAIL = "ok", "warn", "fail"
#: below this much free space in the data folder: fail (ingest would stop mid-study)
MIN_FREE_FAIL_GB = 1.0
#: below this: warn
MIN_FREE_WARN_GB = 10.0


@dataclass(frozen=True)
class Check:
    """One finding: ``name`` (what), ``status`` (ok/warn/fail), ``detail`` and ``fix`` (what to do)."""

    name: str
    status: str
    detail: str
    fix: str = ""


def check_binaries(settings: Settings, which: Callable[[str], str | None] = shutil.which) -> list[Check]:
    """The external programs neurorad calls."""
    out = []
    try:
        import dcm2niix

        path = str(dcm2niix.bin)
        out.append(Check("binary dcm2niix", OK if Path(path).is_file() else FAIL, path,
                         "" if Path(path).is_file() else "pip install dcm2niix -c constraints.txt"))
    except Exception as exc:  # noqa: BLE001 - any import problem is the finding
        out.append(Check("binary dcm2niix", FAIL, f"not importable: {exc}", "pip install dcm2niix -c constraints.txt"))
    wanted = [("storescu", WARN, "apt-get install dcmtk (sending test studies, bench/)"),
              ("dciodvfy", WARN, "apt-get install dicom3tools (validating result objects)")]
    if not str(settings.database_url).startswith("sqlite"):
        wanted += [("pg_dump", FAIL, "apt-get install postgresql-client (neurorad backup)"),
                   ("pg_restore", FAIL, "apt-get install postgresql-client (neurorad restore)")]
    for name, missing_status, fix in wanted:
        path = which(name)
        out.append(Check(f"binary {name}", OK if path else missing_status, path or "not on PATH", "" if path else fix))
    return out


def check_workflows(settings: Settings) -> list[Check]:
    """Every enabled workflow imports and meets the contract."""
    from neurorad.workflows import registry

    try:
        loaded = registry.load_enabled(settings.workflows)
    except Exception as exc:  # noqa: BLE001 - WorkflowLoadError names each one
        return [Check("workflows", FAIL, str(exc), "install the workflow's package or remove it from `workflows`")]
    return [Check("workflows", OK, ", ".join(f"{w.name} {w.version}" for w in loaded) or "none enabled")]


def check_models() -> list[Check]:
    """Every registered model's files match the sha256 recorded in its card."""
    from neurorad.segment import registry

    out = []
    for info in registry.list_models():
        problems = registry.verify(info.path)
        label = f"model {info.name} {info.version}"
        if problems:
            out.append(Check(label, FAIL, f"{info.path}: {'; '.join(problems)}",
                             "re-import the model (`neurorad model import`) or retrain it with its card's command"))
        else:
            out.append(Check(label, OK, f"{info.path} (files match their sha256)"))
    if not out:
        out.append(Check("models", OK, "no registered models (workflows use classical methods)"))
    return out


def check_database(settings: Settings) -> list[Check]:
    """The database answers and its schema is at the shipped head (read only: nothing created)."""
    from neurorad.store.db import schema_revisions, sqlite_path

    url = str(settings.database_url)
    safe = url.split("@")[-1] if "@" in url else url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return [Check("database", FAIL, f"no database at {path}",
                      "start `neurorad serve` or run `neurorad db upgrade`")]
    try:
        current, head = schema_revisions(url)
    except Exception as exc:  # noqa: BLE001 - unreachable server, bad credentials, ...
        return [Check("database", FAIL, f"{safe}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                      "check database_url, that the server runs and accepts this user")]
    if current == head:
        return [Check("database schema", OK, f"{safe} at head {head}")]
    return [Check("database schema", FAIL, f"{safe} at revision {current or 'none'}, shipped head is {head}",
                  "run `neurorad db upgrade` (after `neurorad backup`)")]


def _tcp(host: str, port: int, timeout_s: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def check_peers(settings: Settings, timeout_s: float = 3.0) -> list[Check]:
    """Every destination answers: DICOMweb by a TCP connect to its host, DIMSE by C-ECHO."""
    out = []
    for d in settings.destinations:
        label = f"destination {d.name}"
        if d.kind == "stow":
            parts = urlsplit(str(d.dicomweb_url))
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            err = _tcp(host, port, timeout_s)
            where = f"{parts.scheme}://{host}:{port}"
            out.append(Check(label, OK if err is None else FAIL,
                             where + (f": {err}" if err else " accepts connections"),
                             "" if err is None else "check the URL, the PACS and the firewall (docs/operations.md)"))
            if err is None and parts.scheme != "https":
                out.append(Check(f"{label} TLS", WARN, f"{where} is plain HTTP: credentials and results travel "
                                 "unencrypted", "use an https:// DICOMweb URL"))
        else:
            from neurorad.dicom.transport import echo

            where = f"{d.ae_title}@{d.host}:{d.port}"
            try:
                ok = echo(str(d.host), int(d.port or 104), str(d.ae_title), calling_aet=settings.ae_title,
                          timeout_s=timeout_s)
                err = None if ok else "no successful C-ECHO"
            except Exception as exc:  # noqa: BLE001
                err = f"{type(exc).__name__}: {exc}"
            out.append(Check(label, OK if err is None else FAIL, where + (f": {err}" if err else " answers C-ECHO"),
                             "" if err is None else "check host, port and that the PACS knows our AE title "
                             f"{settings.ae_title}"))
    if not settings.destinations:
        out.append(Check("destinations", WARN, "none configured: results are not sent back",
                         "add `destinations` to the config (docs/data-plane.md)"))
    return out


def check_disk(settings: Settings, usage: Callable[[str], tuple] = shutil.disk_usage) -> list[Check]:
    """Free space where studies and results are written."""
    folder = Path(settings.data_dir)
    probe = folder if folder.exists() else next((p for p in folder.parents if p.exists()), Path("/"))
    free_gb = usage(str(probe))[2] / 1e9
    if free_gb < MIN_FREE_FAIL_GB:
        status = FAIL
    elif free_gb < MIN_FREE_WARN_GB:
        status = WARN
    else:
        status = OK
    return [Check("disk space", status, f"{free_gb:.1f} GB free at {probe}",
                  "" if status == OK else f"free space or move the data folder (at least {MIN_FREE_WARN_GB:.0f} GB; "
                  "`neurorad purge` deletes old images)")]


def _private(label: str, path: Path, fix_what: str) -> Check:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(label, FAIL, f"{path} is mode {mode:04o}: readable by others", f"chmod 600 {path} ({fix_what})")
    return Check(label, OK, f"{path} mode {mode:04o}")


def check_permissions(settings: Settings, config_file: Path | None = None) -> list[Check]:
    """Vault key, database file and config file readable by their owner only; the key outside the data folder."""
    from neurorad.server.settings import default_vault_key_file
    from neurorad.store.db import sqlite_path

    out = []
    data_dir = Path(settings.data_dir)
    if os.environ.get("NEURORAD_VAULT_KEY"):
        out.append(Check("vault key", OK, "from $NEURORAD_VAULT_KEY"))
    else:
        key = Path(settings.vault_key_file) if settings.vault_key_file else default_vault_key_file(data_dir)
        legacy = data_dir / "vault.key"
        if legacy.exists():
            key = legacy
            out.append(Check("vault key location", FAIL, f"{legacy} is inside the data folder: a backup carries both "
                             "the vault and its key", "move it out and set vault_key_file (docs/security.md)"))
        if key.exists():
            out.append(_private("vault key", key, "the pseudonym vault's key"))
        elif (data_dir / "vault").exists():
            out.append(Check("vault key", FAIL, f"{key} missing but a vault exists: pseudonyms cannot be reversed",
                             "restore the key from its backup (it is kept apart from the data backup)"))
        else:
            out.append(Check("vault key", OK, f"{key} not created yet (made 0600 on first start)"))
    db_file = sqlite_path(str(settings.database_url))
    if db_file is not None and db_file.exists():
        out.append(_private("database file", db_file, "password hashes and session tokens"))
    if config_file is not None and Path(config_file).exists():
        out.append(_private("config file", Path(config_file), "it may hold PACS passwords"))
    return out


def run_checks(settings: Settings, config_file: Path | None = None, peers: bool = True) -> list[Check]:
    """Every check, in the order they are printed."""
    checks: list[Check] = []
    steps: Iterable[Callable[[], list[Check]]] = (
        lambda: check_binaries(settings), lambda: check_workflows(settings), check_models,
        lambda: check_database(settings), lambda: check_disk(settings),
        lambda: check_permissions(settings, config_file))
    for step in steps:
        checks += step()
    if peers:
        checks += check_peers(settings)
    return checks


def format_checks(checks: list[Check]) -> str:
    """One line per check, the fix indented under it; a summary line at the end."""
    lines = []
    for c in checks:
        lines.append(f"[{c.status.upper():>4}] {c.name}: {c.detail}")
        if c.fix:
            lines.append(f"       fix: {c.fix}")
    n_fail = sum(c.status == FAIL for c in checks)
    n_warn = sum(c.status == WARN for c in checks)
    lines.append(f"{len(checks)} checks: {n_fail} failed, {n_warn} warnings")
    return "\n".join(lines)
