"""config.parse(): a full document, the defaults, and every validation error.

Every error must be a ConfigError that names the offending key by its path
(`proxy[0].pool.max_connections`), so a user can find it in the file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sluice.config import Limit, PoolConfig, TargetConfig, load, parse
from sluice.errors import ConfigError

FULL: dict[str, Any] = {
    "sluice": {
        "state_dir": "state",
        "log_level": "DEBUG",
        "log_format": "json",
        "metrics_listen": "127.0.0.1:9127",
        "admin_database": "pgbouncer",
        "admin_users": ["admin", "ops"],
        "shutdown_timeout": 5,
        "max_packet_size": 1048576,
    },
    "proxy": [
        {
            "name": "main",
            "engine": "postgresql",
            "listen": "0.0.0.0:6432",
            "require_tls": True,
            "auth_method": "md5",
            "tls_cert_file": "certs/proxy.crt",
            "tls_key_file": "/etc/sluice/proxy.key",
            "debug_logging": True,
            "target": {
                "host": "db.internal",
                "port": 5433,
                "tls": "verify-full",
                "tls_ca_file": "certs/ca.pem",
                "tls_server_name": "db.example.com",
                "connect_timeout": 2.5,
            },
            "pool": {
                "mode": "session",
                "max_connections": "90%",
                "max_idle_connections": 4,
                "borrow_timeout": 10,
                "idle_client_timeout": 60.5,
                "idle_transaction_timeout": 30,
                "init_query": "SET application_name = 'sluice'",
                "server_lifetime": 100,
                "server_idle_timeout": 0,
                "server_check_delay": 1,
                "max_prepared_statements": 0,
            },
            "users": [
                {"name": "app", "password": "app-pass"},
                {
                    "name": "report",
                    "password": "report-pass",
                    "server_user": "readonly",
                    "server_password": "db-pass",
                },
            ],
        },
        {"name": "second", "listen": "[::1]:6433"},
    ],
}

BASE = Path("/etc/sluice")


def test_full_document() -> None:
    settings = parse(copy.deepcopy(FULL), source=BASE / "sluice.toml")
    assert settings.state_dir == BASE / "state"
    assert (settings.log_level, settings.log_format) == ("debug", "json")
    assert settings.metrics_listen == "127.0.0.1:9127"
    assert settings.admin_database == "pgbouncer"
    assert settings.admin_users == ("admin", "ops")
    assert settings.shutdown_timeout == 5.0
    assert settings.max_packet_size == 1048576
    assert settings.source == BASE / "sluice.toml"
    main, second = settings.proxies
    assert settings.proxy("main") is main and settings.proxy("nope") is None
    assert (main.name, main.engine, main.listen_host, main.listen_port) == (
        "main",
        "postgresql",
        "0.0.0.0",
        6432,
    )
    assert (main.require_tls, main.auth_method) == (True, "md5")
    assert main.tls_cert_file == "/etc/sluice/certs/proxy.crt"  # relative to the file
    assert main.tls_key_file == "/etc/sluice/proxy.key"
    assert main.debug_logging is True and second.debug_logging is False
    assert main.target == TargetConfig(
        host="db.internal",
        port=5433,
        tls="verify-full",
        tls_ca_file="/etc/sluice/certs/ca.pem",
        tls_server_name="db.example.com",
        connect_timeout=2.5,
    )
    assert main.pool == PoolConfig(
        mode="session",
        max_connections=Limit(90, percent=True),
        max_idle_connections=Limit(4),
        borrow_timeout=10.0,
        idle_client_timeout=60.5,
        idle_transaction_timeout=30.0,
        init_query="SET application_name = 'sluice'",
        server_lifetime=100.0,
        server_idle_timeout=0.0,
        server_check_delay=1.0,
        max_prepared_statements=0,
    )
    app, report = main.users
    assert (app.name, app.password, app.server_user, app.server_password) == (
        "app",
        "app-pass",
        "app",
        "app-pass",
    )
    assert (report.server_user, report.server_password) == ("readonly", "db-pass")
    assert main.user("report") is report and main.user("x") is None
    assert (second.listen_host, second.listen_port) == ("::1", 6433)
    assert second.pool.idle_transaction_timeout == 0.0  # off unless set


def test_passwords_not_in_repr() -> None:
    settings = parse(copy.deepcopy(FULL), source=BASE / "sluice.toml")
    text = repr(settings)
    for secret in ("app-pass", "report-pass", "db-pass"):
        assert secret not in text


def test_defaults() -> None:
    settings = parse({"proxy": [{"name": "p", "listen": ":6432"}]})
    assert settings.state_dir == Path.cwd() / ".state/sluice"
    assert (settings.log_level, settings.log_format, settings.metrics_listen) == (
        "info",
        "text",
        "",
    )
    assert (settings.admin_database, settings.admin_users) == ("sluice", ())
    assert settings.shutdown_timeout == 30.0
    assert settings.max_packet_size == 64 * 1024 * 1024
    assert settings.source is None
    (proxy,) = settings.proxies
    assert (proxy.listen_host, proxy.listen_port) == ("127.0.0.1", 6432)
    assert (proxy.engine, proxy.auth_method, proxy.require_tls) == (
        "postgresql",
        "scram-sha-256",
        False,
    )
    assert (proxy.tls_cert_file, proxy.tls_key_file, proxy.users) == ("", "", ())
    assert proxy.target == TargetConfig()
    assert proxy.target == TargetConfig("127.0.0.1", 5432, "disable", "", "", 5.0)
    assert proxy.pool == PoolConfig()
    assert proxy.pool.max_connections == Limit(20)
    assert proxy.pool.max_idle_connections == Limit(50, percent=True)
    assert (proxy.pool.mode, proxy.pool.borrow_timeout) == ("transaction", 120.0)
    assert proxy.pool.max_prepared_statements == 1000


def test_empty_document() -> None:
    settings = parse({})
    assert settings.proxies == ()


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TEST_PW", "from-env")
    monkeypatch.setenv("SLUICE_TEST_DB_PW", "db-from-env")
    raw = _users(
        {"name": "a", "password_env": "SLUICE_TEST_PW"},
        {"name": "b", "password_env": "SLUICE_TEST_PW", "server_password_env": "SLUICE_TEST_DB_PW"},
    )
    a, b = parse(raw).proxies[0].users
    assert (a.password, a.server_password) == ("from-env", "from-env")
    assert (b.password, b.server_password) == ("from-env", "db-from-env")


LIMITS: list[tuple[Any, Limit, dict[int | None, int]]] = [
    (20, Limit(20), {None: 20, 500: 20}),
    ("90%", Limit(90, percent=True), {None: 90, 500: 450, 1: 1}),
    (" 100% ", Limit(100, percent=True), {None: 100, 37: 37}),
    ("1%", Limit(1, percent=True), {None: 1, 50: 1, 1000: 10}),
]


@pytest.mark.parametrize(("value", "limit", "resolved"), LIMITS)
def test_limits(value: Any, limit: Limit, resolved: dict[int | None, int]) -> None:
    raw = {"proxy": [{"name": "p", "listen": ":1", "pool": {"max_connections": value}}]}
    got = parse(raw).proxies[0].pool.max_connections
    assert got == limit
    for target_max, size in resolved.items():
        assert got.resolve(target_max) == size


def test_limit_str() -> None:
    assert (str(Limit(5)), str(Limit(90, percent=True))) == ("5", "90%")


def test_idle_limit() -> None:
    assert PoolConfig(max_idle_connections=Limit(50, percent=True)).idle_limit(9) == 4
    assert PoolConfig(max_idle_connections=Limit(50, percent=True)).idle_limit(1) == 0
    assert PoolConfig(max_idle_connections=Limit(4)).idle_limit(10) == 4
    assert PoolConfig(max_idle_connections=Limit(40)).idle_limit(10) == 10


def _proxy(**keys: Any) -> dict[str, Any]:
    return {"proxy": [{"name": "p", "listen": "127.0.0.1:6432", **keys}]}


def _pool(**keys: Any) -> dict[str, Any]:
    return _proxy(pool=keys)


def _target(**keys: Any) -> dict[str, Any]:
    return _proxy(target=keys)


def _users(*users: dict[str, Any]) -> dict[str, Any]:
    return _proxy(users=list(users))


ERRORS: list[tuple[dict[str, Any], str]] = [
    # unknown keys, at every level
    ({"bogus": 1}, "unknown key bogus"),
    ({"sluice": {"log_levl": "info"}}, "unknown key sluice.log_levl"),
    (_proxy(listen_port=1), "unknown key proxy[0].listen_port"),
    (_target(hostname="x"), "unknown key proxy[0].target.hostname"),
    (_pool(max_conns=3), "unknown key proxy[0].pool.max_conns"),
    (_users({"name": "u", "password": "p", "role": "x"}), "unknown key proxy[0].users[0].role"),
    # wrong types
    ({"sluice": []}, "sluice: wrong type list"),
    ({"sluice": {"log_level": 1}}, "sluice.log_level: wrong type int"),
    ({"sluice": {"shutdown_timeout": "5"}}, "sluice.shutdown_timeout: wrong type str"),
    ({"sluice": {"shutdown_timeout": True}}, "sluice.shutdown_timeout: unexpected boolean"),
    ({"sluice": {"max_packet_size": 1.5}}, "sluice.max_packet_size: wrong type float"),
    ({"sluice": {"admin_users": "app"}}, "sluice.admin_users: wrong type str"),
    ({"sluice": {"admin_users": ["a", 1]}}, "sluice.admin_users: expected a list of strings"),
    ({"proxy": {"name": "p"}}, "proxy: wrong type dict"),
    ({"proxy": ["p"]}, "proxy: expected an array of tables"),
    (_proxy(name=7), "proxy[0].name: wrong type int"),
    (_proxy(require_tls="yes"), "proxy[0].require_tls: wrong type str"),
    (_proxy(target="db:5432"), "proxy[0].target: wrong type str"),
    (_target(port="5432"), "proxy[0].target.port: wrong type str"),
    (_target(port=True), "proxy[0].target.port: unexpected boolean"),
    (_pool(max_connections=1.5), "proxy[0].pool.max_connections: wrong type float"),
    (_pool(max_connections=False), "proxy[0].pool.max_connections: unexpected boolean"),
    (_proxy(users={"name": "u"}), "proxy[0].users: wrong type dict"),
    (_users({"name": "u", "password": 1}), "proxy[0].users[0].password: wrong type int"),
    # out of range and bad choices
    ({"sluice": {"log_level": "loud"}}, "sluice.log_level: 'loud' is not one of"),
    ({"sluice": {"log_format": "xml"}}, "sluice.log_format: 'xml' is not one of"),
    ({"sluice": {"max_packet_size": 1023}}, "sluice.max_packet_size: 1023 is out of range"),
    ({"sluice": {"shutdown_timeout": -1}}, "sluice.shutdown_timeout: must not be negative"),
    (_proxy(engine="oracle"), "proxy[0].engine: 'oracle' is not one of postgresql, mysql"),
    (_proxy(auth_method="trust"), "proxy[0].auth_method: 'trust' is not one of"),
    (_target(tls="maybe"), "proxy[0].target.tls: 'maybe' is not one of"),
    (_target(port=0), "proxy[0].target.port: 0 is out of range"),
    (_target(port=65536), "proxy[0].target.port: 65536 is out of range"),
    (_target(connect_timeout=-0.5), "proxy[0].target.connect_timeout: must not be negative"),
    (_pool(mode="statement"), "proxy[0].pool.mode: 'statement' is not one of"),
    (_pool(borrow_timeout=-1), "proxy[0].pool.borrow_timeout: must not be negative"),
    (_pool(max_prepared_statements=-1), "proxy[0].pool.max_prepared_statements: -1 is out"),
    # pool limits
    (_pool(max_connections=0), "proxy[0].pool.max_connections: must be at least 1"),
    (_pool(max_connections=-5), "proxy[0].pool.max_connections: must be at least 1"),
    (_pool(max_connections="0%"), "proxy[0].pool.max_connections: expected a number or a percent"),
    (_pool(max_connections="101%"), "proxy[0].pool.max_connections: expected a number"),
    (_pool(max_connections="50"), "proxy[0].pool.max_connections: expected a number"),
    (_pool(max_connections="%"), "proxy[0].pool.max_connections: expected a number"),
    (_pool(max_idle_connections="-1%"), "proxy[0].pool.max_idle_connections: expected a"),
    # required keys
    ({"proxy": [{"listen": ":1"}]}, "proxy[0].name is required"),
    ({"proxy": [{"name": "p"}]}, "proxy[0].listen is required"),
    (_users({"password": "p"}), "proxy[0].users[0].name is required"),
    (_users({"name": "u"}), "proxy[0].users[0].password is required"),
    # listen addresses
    (_proxy(listen="6432"), "proxy[0].listen: expected HOST:PORT, got '6432'"),
    (_proxy(listen="localhost"), "proxy[0].listen: expected HOST:PORT"),
    (_proxy(listen="localhost:http"), "proxy[0].listen: expected HOST:PORT"),
    (_proxy(listen="localhost:0"), "proxy[0].listen: expected HOST:PORT"),
    (_proxy(listen="localhost:65536"), "proxy[0].listen: expected HOST:PORT"),
    (_proxy(listen="localhost:-1"), "proxy[0].listen: expected HOST:PORT"),
    ({"sluice": {"metrics_listen": "9127"}}, "sluice.metrics_listen: expected HOST:PORT"),
    # duplicates
    (
        {"proxy": [{"name": "p", "listen": ":1"}, {"name": "p", "listen": ":2"}]},
        "proxy[1].name: proxy names must be unique",
    ),
    (
        {"proxy": [{"name": "a", "listen": ":1"}, {"name": "b", "listen": "127.0.0.1:1"}]},
        "proxy[1].listen: two proxies listen on the same address",
    ),
    (
        _users({"name": "u", "password": "a"}, {"name": "u", "password": "b"}),
        "proxy[0].users: user names must be unique",
    ),
    # secrets and TLS files
    (
        _users({"name": "u", "password_env": "SLUICE_TEST_UNSET_VAR"}),
        "proxy[0].users[0].password_env: environment variable SLUICE_TEST_UNSET_VAR is not set",
    ),
    (
        _users({"name": "u", "password": "p", "server_password_env": "SLUICE_TEST_UNSET_VAR"}),
        "proxy[0].users[0].server_password_env: environment variable SLUICE_TEST_UNSET_VAR",
    ),
    (
        _users({"name": "u", "password_env": 3}),
        "proxy[0].users[0].password_env: wrong type int",
    ),
    (
        _users({"name": "u", "password": "p", "password_env": "SLUICE_TEST_UNSET_VAR"}),
        "proxy[0].users[0].password: give password or password_env, not both",
    ),
    (_proxy(tls_cert_file="c.pem"), "proxy[0].tls_cert_file: give both"),
    (_proxy(tls_key_file="k.pem"), "proxy[0].tls_cert_file: give both"),
]


@pytest.mark.parametrize(("raw", "message"), ERRORS)
def test_validation_errors(
    raw: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLUICE_TEST_UNSET_VAR", raising=False)
    with pytest.raises(ConfigError) as info:
        parse(raw)
    assert message in str(info.value)


def test_secret_values_never_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TEST_PW", "very-secret-value")
    raw = _users({"name": "u", "password_env": "SLUICE_TEST_PW", "server_password": 5})
    with pytest.raises(ConfigError) as info:
        parse(raw)
    assert "very-secret-value" not in str(info.value)
    assert "proxy[0].users[0].server_password: wrong type int" in str(info.value)


def test_load_file(tmp_path: Path) -> None:
    path = tmp_path / "sluice.toml"
    path.write_text(
        '[sluice]\nstate_dir = "st"\n\n[[proxy]]\nname = "p"\nlisten = ":6432"\n'
        '[proxy.pool]\nmax_connections = "75%"\n'
    )
    settings = load(path)
    assert settings.source == path
    assert settings.state_dir == tmp_path / "st"
    assert settings.proxies[0].pool.max_connections == Limit(75, percent=True)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sluice\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load(bad)
