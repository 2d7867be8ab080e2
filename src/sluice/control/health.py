"""One health check of a DB proxy target, as RDS Proxy reports it.

In order, the first failure decides: the target's DB instance must exist and
not be on its way down or up (`UNAVAILABLE`/`UNREACHABLE`: rebooting, stopped,
...), its security groups must admit the proxy's address on its port
(`CONNECTION_FAILED`: on AWS the packets would be dropped), the database must
accept a connection (`UNREACHABLE`), and the proxy must log in with at least
one secret of its `Auth` that its role may read (`AUTH_FAILURE`). The check
logs in and out again, from the proxy's own address as its pools do; it
borrows nothing.

For an instance Sluice runs, its security groups are enforced at its address
(`control.guard`): the check does not decide from the rules but connects, and
a login refused there while the rules do not admit the proxy is reported as
`CONNECTION_FAILED`. For an adopted server, which nothing guards, the rules
alone decide that reason, before any connection.
"""

from __future__ import annotations

from sluice.control import network, registry
from sluice.control.authority import AccountState, readable_logins
from sluice.control.store import Doc, Store
from sluice.errors import ServerAuthFailed, SluiceError

CONNECT_TIMEOUT = 5.0
# DB instance statuses in which its server is not (or not yet, or no longer) serving
DOWN_STATUSES = frozenset(
    {"creating", "rebooting", "stopping", "stopped", "starting", "deleting", "failed"}
)
Health = dict[str, str]


def _unavailable(reason: str, description: str) -> Health:
    return {"State": "UNAVAILABLE", "Reason": reason, "Description": description}


async def check_target(plane: AccountState, proxy: Doc, target: Doc | None) -> Health:
    """The health of one of the proxy's targets (a "db_proxy_target" document)."""
    instance = plane.store.get("db_instance", target["RdsResourceId"]) if target else None
    if instance is None:
        return _unavailable("UNREACHABLE", "The DB instance no longer exists.")
    down = instance_down(instance)
    if down is not None:
        return down
    where = registry.instance_target(instance)
    host, port = where.address, where.port
    own = registry.held_by(plane.store, registry.resource_id(proxy["DBProxyArn"]))
    admitted = own is not None and network.admits(plane.store, where.groups, own.address, port)
    refused = _unavailable(
        "CONNECTION_FAILED",
        f"The security groups of {where.instance} do not allow "
        f"inbound traffic on port {port} from the proxy.",
    )
    if not admitted and not where.guarded:
        return refused
    source = own.address if own is not None and where.guarded else ""
    logins = readable_logins(plane, proxy)
    if not logins:
        return _unavailable(
            "AUTH_FAILURE",
            "The proxy's IAM role cannot read any secret of the proxy "
            "(secretsmanager:GetSecretValue), or no secret holds a username and password.",
        )
    problem: Health | None = None
    family = proxy["EngineFamily"]
    for login in logins:
        problem = await _try_login(
            family, (host, port, source), login.user, login.password, login.database
        )
        if problem is None:
            return {"State": "AVAILABLE"}
        if not admitted:
            return refused  # the instance's address turned the proxy away
        if problem["Reason"] == "UNREACHABLE":
            return problem
    assert problem is not None
    return problem


def instance_down(instance: Doc) -> Health | None:
    """UNAVAILABLE while the instance's server is down on purpose (rebooting, stopped, ...)."""
    status = instance.get("DBInstanceStatus", "available")
    if status in DOWN_STATUSES:
        return _unavailable("UNREACHABLE", f"The DB instance is {status}.")
    return None


def settled(store: Store, target: Doc, health: Health) -> Health:
    """A check's result as it stands once every check is done: an instance that went
    down meanwhile (a reboot during the login) makes it UNAVAILABLE."""
    instance = store.get("db_instance", target["RdsResourceId"])
    down = instance_down(instance) if instance is not None else None
    return down if down is not None and health.get("State") == "AVAILABLE" else health


Where = tuple[str, int, str]  # host, port, and the address to connect from ("": any)


async def _try_login(family: str, where: Where, user: str, password: str, db: str) -> Health | None:
    host, port, _ = where
    try:
        if family == "MYSQL":
            await _mysql_login(where, user, password)
        else:
            await _pg_login(where, user, password, db or "postgres")
    except ServerAuthFailed:
        return _unavailable("AUTH_FAILURE", f"The database refused the login of user {user}.")
    except (OSError, TimeoutError):
        return _unavailable("UNREACHABLE", f"Cannot connect to the database at {host}:{port}.")
    except SluiceError as exc:
        return _unavailable("CONNECTION_FAILED", f"The database connection failed: {exc}")
    return None


async def _pg_login(where: Where, user: str, password: str, database: str) -> None:
    from sluice.pg.server import open_server

    host, port, source = where
    conn = await open_server(
        "health-check", host, port, user=user, password=password, database=database,
        init_query="", tls=None, tls_mode="disable", tls_server_name="",
        connect_timeout=CONNECT_TIMEOUT, max_size=1 << 20, source_address=source,
    )  # fmt: skip
    conn.close("health check done")


async def _mysql_login(where: Where, user: str, password: str) -> None:
    from sluice.mysql.server import open_server
    from sluice.wire.mysql.login import LoginClient

    host, port, source = where
    conn = await open_server(
        "health-check", host, port, lambda tls: LoginClient(user, password, tls=tls),
        tls=None, tls_required=False, tls_server_name="", init_query="",
        connect_timeout=CONNECT_TIMEOUT, max_size=1 << 20, source_address=source,
    )  # fmt: skip
    conn.close("health check done")
