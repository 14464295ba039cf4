"""A real PostgreSQL server for tests: Debian's ``postgresql`` package (installed with apt-get when it is
missing and this process may), a fresh data folder, 127.0.0.1 on a free port, trust authentication,
stopped and deleted afterwards. As root, the server runs as the package's ``postgres`` user, since
PostgreSQL refuses to run as root."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from local_servers import free_port

INSTALL_S = 900


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not here and cannot be installed: the reason is the message."""


def server_binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (Debian keeps them out of PATH, per version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def install() -> Path:
    """Debian's ``postgresql`` package, installed when it is missing; raises PostgresUnavailable
    saying why when that cannot be done."""
    binaries = server_binaries()
    if binaries is not None:
        return binaries
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable("PostgreSQL is not installed and this process cannot apt-get install it "
                                  "(not root, or no apt-get): install Debian's postgresql package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=INSTALL_S)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=INSTALL_S)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=INSTALL_S)
    binaries = server_binaries()
    if done.returncode != 0 or binaries is None:
        raise PostgresUnavailable(f"apt-get install postgresql failed: {(done.stdout + done.stderr)[-1500:]}")
    return binaries


@dataclass
class PostgresServer:
    host: str
    port: int
    folder: Path
    binaries: Path
    as_user: list[str]

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://postgres@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, database: str, sql: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database)) as connection:
            return list(connection.execute(sql).fetchall())

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.binaries / "pg_ctl"), "stop", "-D", str(self.folder / "data"),
                        "-m", "immediate", "-w"], capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


def start() -> PostgresServer:
    binaries = install()
    folder = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PostgresUnavailable("running as root without runuser: PostgreSQL cannot be started as root")
        as_user = [runuser, "-u", "postgres", "--"]
        shutil.chown(folder, user="postgres")
    port = free_port()
    data = folder / "data"
    steps = [[str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
             [str(binaries / "pg_ctl"), "start", "-D", str(data), "-w", "-t", "120", "-l", str(folder / "server.log"),
              "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"]]
    for step in steps:
        done = subprocess.run([*as_user, *step], capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            log = (folder / "server.log").read_text(errors="replace") if (folder / "server.log").exists() else ""
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"{' '.join(step[:2])} failed: {done.stdout}{done.stderr}{log[-2000:]}")
    server = PostgresServer("127.0.0.1", port, folder, binaries, as_user)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.query("postgres", "SELECT 1")
            return server
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.5)
