"""Set the stage: a database for the demo's clients, and Sluice configured from the example.

The proxy's configuration is examples/postgres.toml itself, read with tomllib,
with only what must differ on this machine replaced: the listen and metrics
addresses (free ports), the target (the throwaway server), the state
directory, and the user's password (a fresh random one, handed over the way the
example asks: through the environment variable its `password_env` names, or
inline if the example has an inline `password`). Everything else (pool mode and
size, timeouts, auth method, admin users) comes from the example unchanged, so
the demo fails if the example stops being a working configuration.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from sluice.dbserver.launcher import LOCALHOST, free_port
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "postgres.toml"
DATABASE = "appdb"
TABLE_SQL = """
CREATE TABLE demo_events (
    id bigserial PRIMARY KEY,
    round int NOT NULL,
    client int NOT NULL,
    backend_pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
)
"""


def load_example(path: Path = EXAMPLE) -> dict[str, Any]:
    """The example configuration as a plain TOML document."""
    with path.open("rb") as fh:
        return tomllib.load(fh)


def first_proxy(example: dict[str, Any]) -> dict[str, Any]:
    proxies = example.get("proxy", [])
    if not proxies:
        raise ValueError("the example configuration declares no [[proxy]]")
    proxy: dict[str, Any] = proxies[0]
    return proxy


def example_user(example: dict[str, Any]) -> str:
    """The name of the first user of the first proxy: the role the demo creates."""
    users = first_proxy(example).get("users", [])
    if not users:
        raise ValueError("the example's proxy has no [[proxy.users]]")
    return str(users[0]["name"])


def prepare_database(pg: PgCluster, user: str, password: str) -> None:
    """A login role, a database it owns, and the table the clients write to."""
    pg.create_user(user, password)
    pg.create_database(DATABASE, owner=user)
    pg.psql(TABLE_SQL, db=DATABASE, user=user)


def sluice_process(
    example: dict[str, Any], pg: PgCluster, password: str, workdir: Path
) -> SluiceProcess:
    """A (not yet started) Sluice running the example's first proxy in front of `pg`."""
    listen_port, metrics_port = _two_free_ports()
    glob = dict(example.get("sluice", {}))
    glob["state_dir"] = str(workdir / "state")
    glob["metrics_listen"] = f"{LOCALHOST}:{metrics_port}"
    if glob.get("log_level", "info") not in ("debug", "info"):
        glob["log_level"] = "info"  # the fallback pin count reads info lines
    proxy = copy.deepcopy(first_proxy(example))
    proxy["listen"] = f"{LOCALHOST}:{listen_port}"
    proxy["target"] = {**proxy.get("target", {}), "host": pg.host, "port": pg.port}
    env: dict[str, str] = {}
    for user in proxy.get("users", []):
        _give_password(user, password, env)
    return SluiceProcess([proxy], glob=glob, workdir=workdir, env=env)


def _give_password(user: dict[str, Any], password: str, env: dict[str, str]) -> None:
    """Replace the user's secrets by `password`, keeping the way the example passes them."""
    for key in ("password", "server_password"):
        if f"{key}_env" in user:
            env[str(user[f"{key}_env"])] = password
        elif key in user:
            user[key] = password


def _two_free_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def proxy_conninfo(proc: SluiceProcess, user: str, password: str) -> str:
    """A libpq connection string reaching the demo database through the proxy."""
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    return _conninfo(host, int(port), user, password)


def direct_conninfo(pg: PgCluster, user: str, password: str) -> str:
    """A libpq connection string reaching the demo database directly."""
    return _conninfo(pg.host, pg.port, user, password)


def _conninfo(host: str, port: int, user: str, password: str) -> str:
    return make_conninfo(
        host=host,
        port=str(port),
        user=user,
        password=password,
        dbname=DATABASE,
        sslmode="disable",
        connect_timeout="10",
    )


def metrics_url(proc: SluiceProcess) -> str:
    return f"http://{proc.glob['metrics_listen']}/metrics"
