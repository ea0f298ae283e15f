"""A throwaway PostgreSQL 15 cluster for tests (Debian binaries; initdb runs as ``postgres``).

Listens on 127.0.0.1 and a private unix socket directory; removed on stop.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class PostgresCluster:
    """``extra_listen``: one more local address to listen on (e.g. a bridge to network namespaces,
    ``bench/throughput.py``), with trust for its /24."""

    def __init__(self, extra_listen: str | None = None) -> None:
        self.extra_listen = extra_listen
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 binaries not found in {PG_BIN} (install postgresql-15)")
        self.root = Path(tempfile.mkdtemp(prefix="neurorad-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        self.port = _free_port()
        self._dbs = 0

    def start(self) -> PostgresCluster:
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True)
        listen = "127.0.0.1"
        if self.extra_listen:
            listen += "," + self.extra_listen
            net = ".".join(self.extra_listen.split(".")[:3]) + ".0/24"
            with open(self.data / "pg_hba.conf", "a") as fh:
                fh.write(f"host all all {net} trust\n")
        opts = f"-c listen_addresses={listen} -c port={self.port} -c unix_socket_directories={self.sock} " \
               "-c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=200"
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-w", "-t", "60",
                                     "-l", str(self.root / "log"), "start"]), check=True, capture_output=True)
        return self

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        self._dbs += 1
        name = name or f"t{self._dbs}"
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
