"""examples/postgres.toml loads as shipped, and so do the alternatives its comments show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice.config import Limit, load
from sluice.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "postgres.toml"
COMMENTED_KEY = re.compile(r"^# ([a-z_]+ = .*)$", re.MULTILINE)


def _variant(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "variant.toml"
    path.write_text(text)
    return path


def test_example_loads_as_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_DB_PASSWORD", "from-the-environment")
    settings = load(EXAMPLE)
    assert settings.metrics_listen == "127.0.0.1:9127"
    assert settings.admin_users == ("app",)
    (proxy,) = settings.proxies
    assert (proxy.engine, proxy.listen_host, proxy.listen_port) == ("postgresql", "127.0.0.1", 6432)
    assert (proxy.target.host, proxy.target.port) == ("127.0.0.1", 5432)
    assert proxy.pool.mode == "transaction"
    assert proxy.pool.max_connections == Limit(10)
    assert (proxy.tls_cert_file, proxy.tls_key_file, proxy.require_tls) == ("", "", False)
    (user,) = proxy.users
    assert (user.name, user.server_user) == ("app", "app")
    assert user.password == user.server_password == "from-the-environment"


def test_example_needs_its_password_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APP_DB_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="APP_DB_PASSWORD is not set"):
        load(EXAMPLE)


def test_inline_password_alternative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APP_DB_PASSWORD", raising=False)
    text = EXAMPLE.read_text()
    text = text.replace('\npassword_env = "APP_DB_PASSWORD"', "")
    text = text.replace('# password = "change-me"', 'password = "change-me"')
    (user,) = load(_variant(tmp_path, text)).proxies[0].users
    assert user.password == user.server_password == "change-me"


def test_every_commented_key_is_a_real_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncommenting the optional keys (inline password aside) gives a valid file."""
    monkeypatch.setenv("APP_DB_PASSWORD", "pw-1")
    monkeypatch.setenv("APP_OWNER_PASSWORD", "pw-2")
    text = EXAMPLE.read_text()
    keys = [line.split(" = ")[0] for line in COMMENTED_KEY.findall(text)]
    assert {"tls_cert_file", "tls_key_file", "password", "state_dir"} <= set(keys)
    uncommented = COMMENTED_KEY.sub(
        lambda mt: mt.group(0) if mt.group(1).startswith("password ") else mt.group(1), text
    )
    settings = load(_variant(tmp_path, uncommented))
    proxy = settings.proxies[0]
    assert settings.state_dir == tmp_path / ".state/sluice"
    assert proxy.require_tls
    assert proxy.tls_cert_file == "/etc/sluice/server.crt"
    assert proxy.target.tls_server_name == "db.internal.example"
    (user,) = proxy.users
    assert (user.server_user, user.password, user.server_password) == ("app_owner", "pw-1", "pw-2")


MYSQL_EXAMPLE = EXAMPLE.with_name("mysql.toml")


def test_mysql_example_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APP_DB_PASSWORD", "pw")
    (proxy,) = load(MYSQL_EXAMPLE).proxies
    assert (proxy.engine, proxy.auth_method, proxy.target.port) == (
        "mysql",
        "caching_sha2_password",
        3306,
    )
    text = MYSQL_EXAMPLE.read_text()
    uncommented = COMMENTED_KEY.sub(r"\1", text).replace(
        'tls_ca_file = "/etc/ssl/certs/db-ca.pem"', 'tls_ca_file = ""'
    )
    (proxy,) = load(_variant(tmp_path, uncommented)).proxies
    assert proxy.require_tls and proxy.target.tls == "verify-full"
