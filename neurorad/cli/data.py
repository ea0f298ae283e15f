"""CLI commands of the data area: ``neurorad deidentify`` and ``neurorad vault-key``."""

from __future__ import annotations

from pathlib import Path

import typer

OPTION_NAMES = {
    "retain-dates": "retain_longitudinal_modified_dates",
    "retain-patient-chars": "retain_patient_characteristics",
    "retain-device": "retain_device_identity",
    "clean-descriptors": "clean_descriptors",
    "retain-safe-private": "retain_safe_private",
}


def _default_vault() -> Path:
    return Path.home() / ".neurorad" / "vault.sqlite"


def deidentify(
    in_dir: Path = typer.Argument(..., help="Folder of DICOM files (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: <study>/<series>/<sop>.dcm + summary.json."),
    option: list[str] = typer.Option(
        [], "--option",
        help="PS3.15 option (repeatable): retain-dates (shift dates per patient, 113107), retain-patient-chars "
             "(113108), retain-device (113109), clean-descriptors (113105), retain-safe-private (keep the "
             "Siemens CSA headers with their free text blanked, 113111; default: every private element removed).",
    ),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="Vault key file (base64/hex, 32 bytes). Default: $NEURORAD_VAULT_KEY."),
    vault: Path | None = typer.Option(
        None, "--vault", envvar="NEURORAD_VAULT",
        help="Pseudonym vault (SQLite, encrypted map back). Default: $NEURORAD_VAULT or ~/.neurorad/vault.sqlite. "
             "Keep it away from the output folder."),
) -> None:
    """De-identify a folder of DICOM files by the DICOM PS3.15 Annex E Basic Profile.

    Patients get keyed pseudonyms (NR-...), UIDs are replaced consistently, private tags are removed
    (except the Siemens CSA headers dcm2niix needs), and instances that may show identifiers in their
    pixels (burned-in annotation, screenshots) are quarantined, not written. The way back is stored
    encrypted in the vault.
    """
    from neurorad.cli._progress import bar
    from neurorad.dicom.deid import DeidOptions, deidentify_folder
    from neurorad.dicom.vault import PseudonymVault
    from neurorad.errors import InputError

    unknown = [o for o in option if o not in OPTION_NAMES]
    if unknown:
        raise InputError(f"unknown --option {', '.join(unknown)}; choose from {', '.join(OPTION_NAMES)}")
    if not in_dir.is_dir():
        raise InputError("input folder not found", in_dir)
    opts = DeidOptions(**{OPTION_NAMES[o]: True for o in option})
    v = PseudonymVault.from_env_or_file(vault or _default_vault(), key_file=key_file)
    n_files = sum(1 for p in in_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    if n_files == 0:
        raise InputError("input folder has no files", in_dir)
    with bar("de-identifying", n_files) as advance:
        summary = deidentify_folder(in_dir, out, v, opts, progress=advance)
    typer.echo(
        f"{summary['written']} written, {summary['quarantined_count']} quarantined, {summary['skipped_count']} skipped "
        f"({summary['patients']} patient(s), {summary['studies']} study(ies)) -> {out}"
    )
    for q in summary["quarantined"]:
        typer.echo(f"quarantined: {q['input']}: {q['reason']}")
    for s in summary["skipped"]:
        typer.echo(f"skipped: {s['input']}: {s['reason']}")
    typer.echo(f"summary: {out / 'summary.json'}")


def vault_key(
    key_file: Path = typer.Argument(..., help="Where to write the new key (mode 0600; never overwritten)."),
) -> None:
    """Create a new random 256-bit vault key file. Keep it secret and backed up: without it the
    pseudonyms cannot be reproduced and the vault cannot be read."""
    from neurorad.dicom.vault import write_key_file
    from neurorad.errors import InputError

    if key_file.exists():
        raise InputError("key file exists; refusing to overwrite", key_file)
    write_key_file(key_file)
    typer.echo(f"new vault key written to {key_file}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("deidentify")(deidentify)
    app.command("vault-key")(vault_key)
