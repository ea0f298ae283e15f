"""`neurorad vault-key` and `neurorad deidentify` as a user runs them (subprocess, real exit codes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pydicom
from pydicom.data import get_testdata_file

from neurorad.dicom.vault import PseudonymVault


def _neurorad(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("NEURORAD_VAULT_KEY", "NEURORAD_VAULT")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", "from neurorad.cli import main; main()", "--quiet", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_deidentify_folder_cli(tmp_path):
    src = tmp_path / "in" / "Doe_John"  # folder names often carry identifiers
    src.mkdir(parents=True)
    shutil.copy(get_testdata_file("MR_small.dcm"), src / "mr.dcm")
    burned = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    burned.BurnedInAnnotation = "YES"
    burned.SOPInstanceUID = "1.2.826.0.1.3680043.99.77"
    burned.save_as(src / "burned.dcm")
    (src / "readme.txt").write_text("x")
    key, vault, out = tmp_path / "site.key", tmp_path / "vault.sqlite", tmp_path / "out"

    r = _neurorad("vault-key", str(key))
    assert r.returncode == 0, r.stderr
    assert _neurorad("vault-key", str(key)).returncode != 0  # never overwritten

    r = _neurorad("deidentify", str(tmp_path / "in"), "--out", str(out), "--key-file", str(key),
                  "--vault", str(vault), "--option", "retain-dates", "--option", "retain-device")
    assert r.returncode == 0, r.stderr
    assert "1 written, 1 quarantined, 1 skipped" in r.stdout
    assert "burned.dcm: BurnedInAnnotation is YES" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["options"]["retain_longitudinal_modified_dates"] is True
    assert summary["profile"]["table_sha256"].startswith("8ef29165")
    written = out / summary["written_files"][0]
    ds = pydicom.dcmread(written)
    assert ds.PatientID.startswith("NR-")
    assert {i.CodeValue for i in ds.DeidentificationMethodCodeSequence} >= {"113100", "113107", "113109"}
    v = PseudonymVault.from_env_or_file(vault, key_file=key)
    assert v.reidentify_patient(ds.PatientID)["PatientID"] == str(pydicom.dcmread(src / "mr.dcm").PatientID)
    assert b"CompressedSamples" not in written.read_bytes()  # MR_small's patient name


def _neurorad_inproc(monkeypatch, capsys, *args: str, key: str | None = None) -> tuple[int, str]:
    """Run the CLI entry point in this process (fast): exit code and stderr."""
    from neurorad.cli import main

    monkeypatch.delenv("NEURORAD_VAULT", raising=False)
    if key is None:
        monkeypatch.delenv("NEURORAD_VAULT_KEY", raising=False)
    else:
        monkeypatch.setenv("NEURORAD_VAULT_KEY", key)
    monkeypatch.setattr(sys, "argv", ["neurorad", "--quiet", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_cli_errors_exit_non_zero(tmp_path, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "in" / "mr.dcm")
    common = ["deidentify", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--vault", str(tmp_path / "v.sqlite")]
    code, err = _neurorad_inproc(monkeypatch, capsys, *common)
    assert code != 0 and "no vault key" in err
    code, err = _neurorad_inproc(monkeypatch, capsys, *common, "--option", "retain-everything", key="00" * 32)
    assert code != 0 and "unknown --option" in err
    code, err = _neurorad_inproc(monkeypatch, capsys, "deidentify", str(tmp_path / "missing"), "--out",
                                 str(tmp_path / "out"), key="00" * 32)
    assert code != 0 and "not found" in err
    assert not (tmp_path / "out" / "summary.json").exists()
    # a different key on an existing vault is refused before anything is written
    code, err = _neurorad_inproc(monkeypatch, capsys, *common, key="00" * 32)
    assert code == 0, err
    other = ["deidentify", str(tmp_path / "in"), "--out", str(tmp_path / "out2"), "--vault", str(tmp_path / "v.sqlite")]
    code, err = _neurorad_inproc(monkeypatch, capsys, *other, key="11" * 32)
    assert code != 0 and "wrong vault key" in err
    assert not (tmp_path / "out2").exists()
