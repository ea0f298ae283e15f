"""Pseudonym vault: determinism, wrong key, round trip, no plaintext at rest, several processes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import multiprocessing as mp
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydicom.valuerep import validate_value

from neurorad.dicom.vault import (
    DATE_SHIFT_RANGE_DAYS,
    PseudonymVault,
    VaultKeyError,
    VaultLookupError,
    generate_key,
    write_key_file,
)

PATIENT = {"PatientID": "HOSP-0042-XYZ", "PatientName": "Plaintextia^Secretina", "PatientBirthDate": "19610412"}


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())


def test_round_trip_and_no_plaintext_at_rest(tmp_path):
    key = generate_key()
    v = PseudonymVault(key, tmp_path / "v.sqlite")
    pseudo = v.pseudonym(PATIENT["PatientID"])
    v.record("patient", pseudo, PATIENT)
    new_uid = v.uid("1.2.826.0.1.3680043.99.12345")
    v.record("uid", new_uid, "1.2.826.0.1.3680043.99.12345")
    # a second object (another process would do the same) reads it back with the key
    v2 = PseudonymVault(key, tmp_path / "v.sqlite")
    assert v2.reidentify_patient(pseudo) == PATIENT
    assert v2.original_uid(new_uid) == "1.2.826.0.1.3680043.99.12345"
    assert (tmp_path / "v.sqlite").stat().st_mode & 0o777 == 0o600
    raw = _all_bytes(tmp_path)
    for secret in ("HOSP-0042", "Plaintextia", "Secretina", "19610412", "3680043.99.12345"):
        assert secret.encode() not in raw and secret.encode("utf-16-le") not in raw
    assert base64.b64encode(key) not in raw and key not in raw


def test_wrong_or_missing_key_fails_clearly(tmp_path, monkeypatch):
    path = tmp_path / "v.sqlite"
    PseudonymVault(generate_key(), path).record("patient", "NR-X", PATIENT)
    with pytest.raises(VaultKeyError, match="wrong vault key"):
        PseudonymVault(generate_key(), path)
    monkeypatch.delenv("NEURORAD_VAULT_KEY", raising=False)
    with pytest.raises(VaultKeyError, match="NEURORAD_VAULT_KEY"):
        PseudonymVault.from_env_or_file(path)
    with pytest.raises(VaultKeyError, match="not found"):
        PseudonymVault.from_env_or_file(path, key_file=tmp_path / "nokey")
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(VaultKeyError, match="32 bytes"):
        PseudonymVault.from_env_or_file(path, key_file=tmp_path / "bad.key")
    with pytest.raises(VaultKeyError):
        PseudonymVault(b"short", tmp_path / "other.sqlite")


def test_key_from_file_or_env_and_key_never_in_repr(tmp_path, monkeypatch):
    kf = write_key_file(tmp_path / "site.key")
    assert (kf.stat().st_mode & 0o777) == 0o600
    with pytest.raises(FileExistsError):
        write_key_file(kf)
    key = base64.b64decode(kf.read_text())
    v_file = PseudonymVault.from_env_or_file(tmp_path / "v.sqlite", key_file=kf)
    monkeypatch.setenv("NEURORAD_VAULT_KEY", key.hex())
    v_env = PseudonymVault.from_env_or_file(tmp_path / "v.sqlite")
    assert v_file.pseudonym("A") == v_env.pseudonym("A")
    assert key.hex() not in repr(v_env) and kf.read_text().strip() not in repr(v_env)


def test_derivations_match_an_independent_hmac(tmp_path):
    """Oracle: recompute the documented construction with hmac/HKDF directly."""
    key = bytes(range(32))
    v = PseudonymVault(key, tmp_path / "v.sqlite")
    mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"neurorad-vault-hmac-v1").derive(key)
    digest = hmac.new(mac_key, b"pseudonym\x00PID1", hashlib.sha256).digest()
    assert v.pseudonym("PID1") == "NR-" + base64.b32encode(digest[:10]).decode()
    assert v.pseudonym("PID1") != v.pseudonym("PID2")
    # another site key gives other pseudonyms
    assert PseudonymVault(generate_key(), tmp_path / "w.sqlite").pseudonym("PID1") != v.pseudonym("PID1")
    uids = {v.uid(f"1.2.3.{i}") for i in range(500)}
    assert len(uids) == 500
    for u in uids:
        assert u.startswith("2.25.") and len(u) <= 64 and not u[5:].startswith("0")
        assert validate_value("UI", u, validation_mode=2) is None
    shifts = [v.date_shift_days(f"P{i}") for i in range(500)]
    lo, hi = DATE_SHIFT_RANGE_DAYS
    assert all(lo <= s <= hi for s in shifts) and 0 not in shifts
    assert len(set(shifts)) > 200  # spread over the range
    assert v.date_shift_days("P1") == v.date_shift_days("P1")


def test_unknown_lookup_is_a_clear_key_error(vault):
    with pytest.raises(VaultLookupError) as exc:
        vault.original_uid("2.25.1")
    assert isinstance(exc.value, KeyError) and "no uid record" in str(exc.value)


def _writer(args: tuple[bytes, str, int]) -> None:
    key, path, worker = args
    v = PseudonymVault(key, path)
    for i in range(40):
        v.record("uid", f"2.25.{worker}{i:03d}", f"1.2.3.{worker}.{i}")


def test_several_processes_write_one_vault(tmp_path):
    key, path = generate_key(), str(tmp_path / "v.sqlite")
    PseudonymVault(key, path)
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        pool.map(_writer, [(key, path, w) for w in (1, 2, 3)])
    v = PseudonymVault(key, path)
    for w in (1, 2, 3):
        for i in range(40):
            assert v.original_uid(f"2.25.{w}{i:03d}") == f"1.2.3.{w}.{i}"
