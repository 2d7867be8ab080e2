"""Configuration: a TOML file turned into one frozen snapshot.

Every running object reads its settings from a `Settings` snapshot. A reload
builds a new snapshot, compares it with the old one proxy by proxy, and swaps:
nothing mutates a snapshot in place. The control plane (a later producer) makes
the same snapshot objects that a file makes.

Every key, its type and its default is documented in docs/configuration.md;
keep the two in step.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.errors import ConfigError

ENGINES = ("postgresql", "mysql")
AUTH_METHODS = {
    "postgresql": ("scram-sha-256", "md5", "cleartext"),
    "mysql": ("caching_sha2_password", "mysql_native_password", "mysql_clear_password"),
}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
POOL_MODES = ("transaction", "session")
TLS_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
MAX_WORKERS = 256


@dataclass(frozen=True, slots=True)
class Limit:
    """A pool size given as a number or as a percent of the target's max_connections."""

    value: int
    percent: bool = False

    def resolve(self, target_max: int | None) -> int:
        if not self.percent:
            return self.value
        base = target_max if target_max is not None else 100
        return max(1, base * self.value // 100)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


@dataclass(frozen=True, slots=True)
class UserConfig:
    name: str
    password: str = field(repr=False)
    server_user: str
    server_password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class TargetConfig:
    host: str = "127.0.0.1"
    port: int = 5432
    tls: str = "disable"
    tls_ca_file: str = ""
    tls_server_name: str = ""
    connect_timeout: float = 5.0
    source_address: str = ""  # the local address database connections leave from ("": any)

    @property
    def local_addr(self) -> tuple[str, int] | None:
        """`source_address` as asyncio's `local_addr` (any port), None when not set."""
        return (self.source_address, 0) if self.source_address else None


@dataclass(frozen=True, slots=True)
class PoolConfig:
    mode: str = "transaction"
    max_connections: Limit = Limit(20)
    max_idle_connections: Limit = Limit(50, percent=True)
    borrow_timeout: float = 120.0
    idle_client_timeout: float = 1800.0
    idle_transaction_timeout: float = 0.0  # off: a transaction may wait for its client
    init_query: str = ""
    server_lifetime: float = 3600.0
    server_idle_timeout: float = 600.0
    server_check_delay: float = 30.0
    max_prepared_statements: int = 1000
    exclude_variable_sets: bool = False

    def idle_limit(self, max_conns: int) -> int:
        if self.max_idle_connections.percent:
            return max(0, max_conns * self.max_idle_connections.value // 100)
        return min(max_conns, self.max_idle_connections.value)

    def sizes(self, target_max: int | None) -> tuple[int, int]:
        """(max connections, max idle) against the target's max_connections (None: unknown)."""
        size = self.max_connections.resolve(target_max)
        return size, self.idle_limit(size)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    name: str
    engine: str
    listen_host: str
    listen_port: int
    target: TargetConfig
    pool: PoolConfig
    users: tuple[UserConfig, ...]
    require_tls: bool = False
    auth_method: str = "scram-sha-256"
    tls_cert_file: str = ""
    tls_key_file: str = ""
    debug_logging: bool = False
    # what a client may cost before it has logged in (sluice.session.admission)
    login_timeout: float = 15.0
    max_client_connections: int = 10000
    max_logins: int = 5000
    max_logins_per_address: int = 1000
    # failed logins (sluice.session.throttle)
    auth_failure_limit: int = 10
    auth_block_time: float = 60.0

    def user(self, name: str) -> UserConfig | None:
        for user in self.users:
            if user.name == name:
                return user
        return None


@dataclass(frozen=True, slots=True)
class Settings:
    proxies: tuple[ProxyConfig, ...]
    state_dir: Path
    log_level: str = "info"
    log_format: str = "text"
    metrics_listen: str = ""
    admin_database: str = "sluice"
    admin_users: tuple[str, ...] = ()
    shutdown_timeout: float = 30.0
    max_packet_size: int = 64 * 1024 * 1024
    # processes sharing the listeners (sluice.workers); a file's default is the machine's
    # cores, a snapshot made in code (the control plane's) runs in one
    workers: int = 1
    source: Path | None = None

    def proxy(self, name: str) -> ProxyConfig | None:
        for proxy in self.proxies:
            if proxy.name == name:
                return proxy
        return None


def default_workers() -> int:
    """The default of `workers`: the cores this process may run on."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


def load(path: str | Path) -> Settings:
    """Read and validate a TOML configuration file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse(raw, source=path)


def parse(raw: dict[str, Any], source: Path | None = None) -> Settings:
    """Build a `Settings` snapshot from a decoded TOML document."""
    reader = _Table(raw, "")
    glob = reader.table("sluice")
    base = source.parent if source else Path.cwd()
    state_dir = Path(glob.text("state_dir", ".state/sluice"))
    if not state_dir.is_absolute():
        state_dir = base / state_dir
    proxies = tuple(_proxy(t, base) for t in reader.tables("proxy"))
    _unique([p.name for p in proxies], "name", "proxy names must be unique")
    listens = [(p.listen_host, p.listen_port) for p in proxies]
    _unique(listens, "listen", "two proxies listen on the same address")
    metrics_listen = glob.text("metrics_listen", "")
    if metrics_listen:
        _address(metrics_listen, glob.where("metrics_listen"))
    settings = Settings(
        proxies=proxies,
        state_dir=state_dir,
        log_level=glob.choice("log_level", "info", ("debug", "info", "warning", "error")),
        log_format=glob.choice("log_format", "text", ("text", "json")),
        metrics_listen=metrics_listen,
        admin_database=glob.text("admin_database", "sluice"),
        admin_users=tuple(glob.str_list("admin_users")),
        shutdown_timeout=glob.seconds("shutdown_timeout", 30.0),
        max_packet_size=glob.integer("max_packet_size", 64 * 1024 * 1024, low=1024),
        workers=glob.integer("workers", default_workers(), low=1, high=MAX_WORKERS),
        source=source,
    )
    glob.done()
    reader.done()
    return settings


def _unique(values: list[Any], key: str, message: str) -> None:
    for i, value in enumerate(values):
        if value in values[:i]:
            raise ConfigError(f"proxy[{i}].{key}: {message}")


def _proxy(t: _Table, base: Path) -> ProxyConfig:
    name = t.text("name")
    engine = t.choice("engine", "postgresql", ENGINES)
    host, port = _address(t.text("listen"), t.where("listen"))
    target_t = t.table("target")
    target = TargetConfig(
        host=target_t.text("host", "127.0.0.1"),
        port=target_t.integer("port", DEFAULT_PORTS[engine], low=1, high=65535),
        tls=target_t.choice("tls", "disable", TLS_MODES),
        tls_ca_file=_path(target_t.text("tls_ca_file", ""), base),
        tls_server_name=target_t.text("tls_server_name", ""),
        connect_timeout=target_t.seconds("connect_timeout", 5.0),
        source_address=_ip(target_t.text("source_address", ""), target_t.where("source_address")),
    )
    target_t.done()
    pool_t = t.table("pool")
    pool = PoolConfig(
        mode=pool_t.choice("mode", "transaction", POOL_MODES),
        max_connections=pool_t.limit("max_connections", Limit(20)),
        max_idle_connections=pool_t.limit("max_idle_connections", Limit(50, percent=True)),
        borrow_timeout=pool_t.seconds("borrow_timeout", 120.0),
        idle_client_timeout=pool_t.seconds("idle_client_timeout", 1800.0),
        idle_transaction_timeout=pool_t.seconds("idle_transaction_timeout", 0.0),
        init_query=pool_t.text("init_query", ""),
        server_lifetime=pool_t.seconds("server_lifetime", 3600.0),
        server_idle_timeout=pool_t.seconds("server_idle_timeout", 600.0),
        server_check_delay=pool_t.seconds("server_check_delay", 30.0),
        max_prepared_statements=pool_t.integer("max_prepared_statements", 1000, low=0),
        exclude_variable_sets=pool_t.flag("exclude_variable_sets", False),
    )
    pool_t.done()
    users = tuple(_user(u) for u in t.tables("users"))
    if len({u.name for u in users}) != len(users):
        raise ConfigError(f"{t.where('users')}: user names must be unique")
    proxy = ProxyConfig(
        name=name,
        engine=engine,
        listen_host=host,
        listen_port=port,
        target=target,
        pool=pool,
        users=users,
        require_tls=t.flag("require_tls", False),
        auth_method=t.choice("auth_method", AUTH_METHODS[engine][0], AUTH_METHODS[engine]),
        tls_cert_file=_path(t.text("tls_cert_file", ""), base),
        tls_key_file=_path(t.text("tls_key_file", ""), base),
        debug_logging=t.flag("debug_logging", False),
        login_timeout=t.seconds("login_timeout", 15.0),
        max_client_connections=t.integer("max_client_connections", 10000, low=1),
        max_logins=t.integer("max_logins", 5000, low=1),
        max_logins_per_address=t.integer("max_logins_per_address", 1000, low=1),
        auth_failure_limit=t.integer("auth_failure_limit", 10, low=0),
        auth_block_time=t.seconds("auth_block_time", 60.0),
    )
    if proxy.login_timeout <= 0:
        raise ConfigError(f"{t.where('login_timeout')}: must be more than 0")
    if bool(proxy.tls_cert_file) != bool(proxy.tls_key_file):
        raise ConfigError(f"{t.where('tls_cert_file')}: give both tls_cert_file and tls_key_file")
    t.done()
    return proxy


def _user(t: _Table) -> UserConfig:
    name = t.text("name")
    password = _secret(t, "password")
    server_user = t.text("server_user", name)
    server_password = _secret(t, "server_password", default=password)
    t.done()
    return UserConfig(name, password, server_user, server_password)


def _secret(t: _Table, key: str, default: str | None = None) -> str:
    """A secret given inline or, better, through `<key>_env` naming an environment variable."""
    env_key = f"{key}_env"
    if env_key in t.raw and key in t.raw:
        raise ConfigError(f"{t.where(key)}: give {key} or {env_key}, not both")
    if env_key in t.raw:
        var = t.text(env_key)
        value = os.environ.get(var)
        if value is None:
            raise ConfigError(f"{t.where(env_key)}: environment variable {var} is not set")
        return value
    if default is not None and key not in t.raw:
        return default
    return t.text(key)


def _path(value: str, base: Path) -> str:
    if not value:
        return ""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _ip(value: str, where: str) -> str:
    """An IP address literal ("" stays "": not set)."""
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an IP address, got {value!r}") from None
    return value


def _address(value: str, where: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Table:
    """A TOML table read key by key, so unknown keys are reported, not ignored."""

    def __init__(self, raw: dict[str, Any], path: str) -> None:
        self.raw = raw
        self.path = path
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, default: Any, kind: type | tuple[type, ...]) -> Any:
        self.seen.add(key)
        if key not in self.raw:
            if default is None:
                raise ConfigError(f"{self.where(key)} is required")
            return default
        value = self.raw[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self.where(key)}: unexpected boolean")
        if not isinstance(value, kind):
            raise ConfigError(f"{self.where(key)}: wrong type {type(value).__name__}")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        return str(self._get(key, default, str))

    def flag(self, key: str, default: bool) -> bool:
        return bool(self._get(key, default, bool))

    def integer(
        self, key: str, default: int, low: int | None = None, high: int | None = None
    ) -> int:
        value = int(self._get(key, default, int))
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{self.where(key)}: {value} is out of range")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = float(self._get(key, default, (int, float)))
        if value < 0:
            raise ConfigError(f"{self.where(key)}: must not be negative")
        return value

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(key, default).lower()
        if value not in allowed:
            raise ConfigError(f"{self.where(key)}: {value!r} is not one of {', '.join(allowed)}")
        return value

    def limit(self, key: str, default: Limit) -> Limit:
        value = self._get(key, default, (int, str, Limit))
        if isinstance(value, Limit):
            return value
        if isinstance(value, int):
            if value < 1:
                raise ConfigError(f"{self.where(key)}: must be at least 1")
            return Limit(value)
        text = value.strip()
        if text.endswith("%") and text[:-1].isdigit() and 0 < int(text[:-1]) <= 100:
            return Limit(int(text[:-1]), percent=True)
        raise ConfigError(f"{self.where(key)}: expected a number or a percent like '90%'")

    def str_list(self, key: str) -> list[str]:
        value = self._get(key, [], list)
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.where(key)}: expected a list of strings")
        return list(value)

    def table(self, key: str) -> _Table:
        return _Table(self._get(key, {}, dict), self.where(key))

    def tables(self, key: str) -> list[_Table]:
        items = self._get(key, [], list)
        if not all(isinstance(v, dict) for v in items):
            raise ConfigError(f"{self.where(key)}: expected an array of tables")
        return [_Table(v, f"{self.where(key)}[{i}]") for i, v in enumerate(items)]

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise ConfigError(f"unknown key {self.where(unknown[0])}")
