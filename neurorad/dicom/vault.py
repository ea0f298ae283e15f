"""Pseudonym vault: keyed pseudonyms, UIDs and date shifts, with the way back stored encrypted.

Everything a de-identified dataset carries in place of an identifier is *derived* from one
site secret (the vault key) with HMAC-SHA256 (RFC 2104), so the same patient always gets the
same pseudonym, the same original UID always gets the same new UID and the same patient always
gets the same date shift, on any machine holding the key, with no lookup needed:

* ``pseudonym(patient_id)``: ``"NR-"`` + 16 base32 characters (80 bits) of HMAC.
* ``uid(original_uid)``: ``"2.25."`` + the decimal form of a 128-bit UUID (RFC 9562 version 8,
  "custom") built from HMAC; at most 44 characters (DICOM PS3.5 9.1: <= 64), no leading zeros.
* ``date_shift_days(patient_id)``: a whole number of days in [-1095, -1] (never 0), from HMAC.

The way back (pseudonym -> original PatientID/Name/..., new UID -> original UID) is written by
:meth:`PseudonymVault.record` into an SQLite file (WAL journal, so several processes can write;
each write is one transaction, so atomic). Each record's value is sealed with AES-256-GCM
(NIST SP 800-38D) under a key derived from the vault key with HKDF-SHA256 (RFC 5869), a fresh
96-bit random nonce per record, and the record's kind and pseudonymous value as associated
data (a sealed value cannot be moved to another row). The file holds no plaintext identifier.
A key-check row written when the vault is created makes a wrong key fail at open with
:class:`VaultKeyError` instead of later with an opaque tag failure. The key is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from neurorad.errors import NeuroradError

__all__ = [
    "PseudonymVault",
    "VaultKeyError",
    "VaultLookupError",
    "generate_key",
    "write_key_file",
    "KEY_BYTES",
    "DATE_SHIFT_RANGE_DAYS",
]

KEY_BYTES = 32
#: inclusive range of the per-patient date shift (days); never 0 so a shifted date never equals the real one
DATE_SHIFT_RANGE_DAYS = (-1095, -1)
_CHECK_PLAINTEXT = b"neurorad-vault-key-check-v1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, nonce BLOB NOT NULL, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS mapping (
    kind TEXT NOT NULL, pseudo TEXT NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL,
    PRIMARY KEY (kind, pseudo)
);
"""


class VaultKeyError(NeuroradError):
    """The vault key is missing, malformed or not the key this vault was created with."""


class VaultLookupError(NeuroradError, KeyError):
    """No record for this pseudonymous value in the vault."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "not in vault"


def generate_key() -> bytes:
    """A fresh random 256-bit vault key (``os.urandom``)."""
    return os.urandom(KEY_BYTES)


def write_key_file(path: str | Path, key: bytes | None = None) -> Path:
    """Write a key (new if None) base64-encoded to ``path`` with mode 0600; refuses to overwrite."""
    path = Path(path)
    key = generate_key() if key is None else key
    _check_key(key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(key).decode("ascii") + "\n")
    return path


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise VaultKeyError(f"vault key must be {KEY_BYTES} bytes (got {len(key) if key else 0})")


def _decode_key_text(text: str, where: str) -> bytes:
    """Key text as base64 (44 chars) or hex (64 chars)."""
    text = text.strip()
    for decode in (lambda t: bytes.fromhex(t), lambda t: base64.b64decode(t, validate=True)):
        try:
            key = decode(text)
        except ValueError:
            continue
        if len(key) == KEY_BYTES:
            return key
    raise VaultKeyError(f"vault key in {where} is not {KEY_BYTES} bytes of base64 or hex")


class PseudonymVault:
    """Keyed pseudonyms + encrypted re-identification map in an SQLite file.

    Parameters
    ----------
    key:
        32 secret bytes (the site key). Keep it outside the data folders.
    path:
        SQLite file of the re-identification map; created (with its key check) if absent.
    """

    def __init__(self, key: bytes, path: str | Path) -> None:
        _check_key(key)
        self.path = Path(path)
        key = bytes(key)
        self._mac_key = self._derive(key, b"neurorad-vault-hmac-v1")
        self._aead = AESGCM(self._derive(key, b"neurorad-vault-aes-gcm-v1"))
        del key
        self._local = threading.local()
        self._written: set[bytes] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # owner-only from the start (SQLite gives its -wal/-shm the same mode)
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:  # another process was faster
                pass
        with closing(self._connect()) as con, con:
            con.executescript(_SCHEMA)
            row = con.execute("SELECT nonce, sealed FROM meta WHERE name='key_check'").fetchone()
            if row is None:
                nonce = os.urandom(12)
                sealed = self._aead.encrypt(nonce, _CHECK_PLAINTEXT, b"meta:key_check")
                con.execute("INSERT OR IGNORE INTO meta VALUES ('key_check', ?, ?)", (nonce, sealed))
                row = con.execute("SELECT nonce, sealed FROM meta WHERE name='key_check'").fetchone()
            try:
                self._aead.decrypt(row[0], row[1], b"meta:key_check")
            except InvalidTag:
                raise VaultKeyError(
                    f"{self.path}: wrong vault key (this vault was created with a different key)"
                ) from None

    def __repr__(self) -> str:  # never show key material
        return f"PseudonymVault(path={str(self.path)!r})"

    @classmethod
    def from_env_or_file(
        cls, path: str | Path, key_file: str | Path | None = None, env: str = "NEURORAD_VAULT_KEY"
    ) -> PseudonymVault:
        """Open the vault at ``path`` with the key from ``key_file`` if given, else from ``$env``.

        The key is base64 or hex text. Raises :class:`VaultKeyError` naming where it looked.
        """
        if key_file is not None:
            kf = Path(key_file)
            if not kf.is_file():
                raise VaultKeyError(f"{kf}: vault key file not found (create one with `neurorad vault-key {kf}`)")
            key = _decode_key_text(kf.read_text(encoding="ascii", errors="replace"), str(kf))
        else:
            text = os.environ.get(env)
            if not text:
                raise VaultKeyError(f"no vault key: set ${env} or pass a key file (--key-file)")
            key = _decode_key_text(text, f"${env}")
        return cls(key, path)

    # -- derivations (no storage) ---------------------------------------------------------
    @staticmethod
    def _derive(key: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)

    def _mac(self, domain: str, value: str) -> bytes:
        return hmac.new(self._mac_key, domain.encode() + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()

    def pseudonym(self, patient_id: str) -> str:
        """Deterministic pseudonym ``NR-`` + 16 base32 chars for a PatientID (LO, fits 64 chars)."""
        digest = self._mac("pseudonym", str(patient_id).strip())
        return "NR-" + base64.b32encode(digest[:10]).decode("ascii")

    def uid(self, original_uid: str) -> str:
        """Deterministic new UID ``2.25.<int>`` (ISO/IEC 9834-8 UUID form) for an original UID."""
        digest = bytearray(self._mac("uid", str(original_uid).strip().rstrip("\x00"))[:16])
        digest[6] = (digest[6] & 0x0F) | 0x80  # version 8 (RFC 9562 custom)
        digest[8] = (digest[8] & 0x3F) | 0x80  # RFC variant
        return "2.25." + str(uuid.UUID(bytes=bytes(digest)).int)

    def date_shift_days(self, patient_id: str) -> int:
        """Deterministic per-patient date shift in :data:`DATE_SHIFT_RANGE_DAYS` (never 0)."""
        lo, hi = DATE_SHIFT_RANGE_DAYS
        n = int.from_bytes(self._mac("dateshift", str(patient_id).strip())[:8], "big")
        return lo + n % (hi - lo + 1)

    # -- storage ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """A fresh connection (schema set-up and key check)."""
        con = sqlite3.connect(self.path, timeout=30.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA busy_timeout=30000")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def _con(self) -> sqlite3.Connection:
        """This thread's long-lived connection (re-opened after a fork): opening and closing one
        per write cost ~30 ms (close checkpoints the WAL)."""
        con = getattr(self._local, "con", None)
        if con is None or getattr(self._local, "pid", None) != os.getpid():
            con = self._connect()
            self._local.con, self._local.pid = con, os.getpid()
        return con

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        con = getattr(self._local, "con", None)
        if con is not None and getattr(self._local, "pid", None) == os.getpid():
            con.close()
        self._local.con = None

    def _seal_bytes(self, kind: str, pseudo: str, plaintext: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, self._aead.encrypt(nonce, plaintext, f"{kind}\x00{pseudo}".encode())

    def record(self, kind: str, pseudo_value: str, original_value: str | Mapping[str, Any]) -> None:
        """Store ``pseudo_value -> original_value`` under ``kind`` (e.g. "patient", "uid", "study")."""
        self.record_many([(kind, pseudo_value, original_value)])

    def record_many(self, records: Iterable[tuple[str, str, str | Mapping[str, Any]]]) -> None:
        """Store several records in one transaction (all or none). A record this process already
        wrote with the same content is skipped (pseudonymous values are derived from the originals,
        so a series' patient, study and series records are written once, not per instance)."""
        rows, digests = [], []
        for kind, pseudo, original in records:
            if isinstance(original, Mapping):
                original = dict(original)
            plaintext = json.dumps(original, sort_keys=True, ensure_ascii=False).encode("utf-8")
            digest = hmac.new(self._mac_key, f"{kind}\x00{pseudo}\x00".encode() + plaintext, hashlib.sha256).digest()
            if digest in self._written:
                continue
            rows.append((kind, str(pseudo), *self._seal_bytes(kind, str(pseudo), plaintext)))
            digests.append(digest)
        if not rows:
            return
        con = self._con()
        with con:
            con.executemany("INSERT OR REPLACE INTO mapping VALUES (?, ?, ?, ?)", rows)
        if len(self._written) > 1_000_000:
            self._written.clear()
        self._written.update(digests)

    def lookup(self, kind: str, pseudo_value: str) -> Any:
        """The original value stored for ``(kind, pseudo_value)``; :class:`VaultLookupError` if none."""
        row = self._con().execute(
            "SELECT nonce, sealed FROM mapping WHERE kind=? AND pseudo=?", (kind, str(pseudo_value))
        ).fetchone()
        if row is None:
            raise VaultLookupError(f"no {kind} record for this pseudonymous value in {self.path}")
        try:
            plaintext = self._aead.decrypt(row[0], row[1], f"{kind}\x00{pseudo_value}".encode())
        except InvalidTag:
            raise VaultKeyError(f"{self.path}: record failed authentication (wrong key or tampered vault)") from None
        return json.loads(plaintext.decode("utf-8"))

    def has(self, kind: str, pseudo_value: str) -> bool:
        """True when a record exists (no decryption)."""
        row = self._con().execute(
            "SELECT 1 FROM mapping WHERE kind=? AND pseudo=?", (kind, str(pseudo_value))
        ).fetchone()
        return row is not None

    def reidentify_patient(self, pseudo: str) -> dict[str, Any]:
        """Original patient attributes (PatientID, PatientName, PatientBirthDate, ...) for a pseudonym."""
        value = self.lookup("patient", pseudo)
        return dict(value)

    def original_uid(self, new_uid: str) -> str:
        """The original UID that :meth:`uid` replaced with ``new_uid``; :class:`VaultLookupError` if unknown."""
        return str(self.lookup("uid", new_uid))

    def study(self, new_study_uid: str) -> dict[str, Any]:
        """Original study-level attributes (StudyInstanceUID, AccessionNumber, StudyDate, ...)."""
        return dict(self.lookup("study", new_study_uid))
