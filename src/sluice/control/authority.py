"""How proxies made by the control plane admit clients and log in to their databases.

This is where each step of the recipe takes effect on the data plane:
- security groups: a client is admitted when an ingress rule of the proxy's
  groups matches its address (CIDR) or its membership (source group), on the
  listener's port, checked for every new connection against the live rules;
- `IAMAuth: REQUIRED`: the password is an `rds-db` auth token for this proxy's
  endpoint, signed by a known key (or STS session), unexpired, and the signer's
  policies must allow `rds-db:connect` on `arn:aws:rds-db:REGION:ACCOUNT:dbuser:
  PRX_ID/USER`; otherwise clients prove the password of the user's secret;
- `AuthScheme: SECRETS`: the proxy logs in with the secret whose `username` is
  the client's user, only if the proxy's role may `secretsmanager:GetSecretValue`
  it, and reads it afresh for every new database connection;
- the target's security groups must admit the proxy's address on the target's
  port, else database connections fail as `CONNECTION_FAILED`: an instance
  Sluice runs enforces them itself at its address (`control.guard`), where the
  proxy's connections arrive from the proxy's address; for an adopted server
  the proxy checks them here before connecting.
"""

from __future__ import annotations

import hmac
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from sluice.auth.base import CLEARTEXT, MYSQL_CLEAR, Authenticator, BackendLogin
from sluice.auth.static import StaticUsers
from sluice.config import ProxyConfig, UserConfig
from sluice.control import network, registry, sigv4
from sluice.control.context import Principal
from sluice.control.principals import Principals
from sluice.control.registry import Listeners
from sluice.control.services.secretsmanager import read_secret
from sluice.control.store import Store
from sluice.control.vault import Vault
from sluice.errors import ServerAuthFailed, ServerError
from sluice.wire.pg.scram import ScramVerifier

log = logging.getLogger("sluice.auth")


class AccountState(Protocol):
    """What the proxies' authority reads: the account's documents, secrets and principals."""

    store: Store
    vault: Vault
    principals: Principals
    account: str
    region: str


class TokenCache:
    """Tokens whose signature was verified, so a token reused by many connections (a warm
    function's) costs its SHA-256 work once. Only the signature is remembered: expiry,
    the key's status and the policies are checked on every use. Bounded, oldest first out.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._verified: OrderedDict[bytes, sigv4.DbAuthToken] = OrderedDict()
        self._decisions: dict[tuple[str, str], bool] = {}
        self._version = -1

    def get(self, raw: bytes) -> sigv4.DbAuthToken | None:
        token = self._verified.get(raw)
        if token is not None:
            self._verified.move_to_end(raw)
        return token

    def put(self, raw: bytes, token: sigv4.DbAuthToken) -> None:
        self._verified[raw] = token
        if len(self._verified) > self.size:
            self._verified.popitem(last=False)

    def decision(self, version: int, key: tuple[str, str]) -> bool | None:
        """A policy decision made at this store version (any change forgets them all)."""
        if version != self._version:
            self._decisions.clear()
            self._version = version
        return self._decisions.get(key)

    def decide(self, key: tuple[str, str], allowed: bool) -> None:
        if len(self._decisions) >= self.size:
            self._decisions.clear()
        self._decisions[key] = allowed


class PlaneAuthority:
    """The `Authority` of every proxy the control plane runs."""

    def __init__(self, plane: AccountState, listeners: Listeners) -> None:
        self.plane = plane
        self.listeners = listeners  # the runtime keeps them
        self.keys = sigv4.SigningKeys()
        self.tokens = TokenCache()

    def authenticator(self, config: ProxyConfig) -> Authenticator:
        return ProxyAuthenticator(self, config)

    def admit(self, config: ProxyConfig, client_ip: str) -> str | None:
        listener = self.listeners.get(config.name)
        if listener is None:
            return f'proxy "{config.name}" is being removed'
        if client_ip == network.OUTSIDE_ADDRESS:
            return (f"proxy {listener.proxy} is reachable only from inside its VPC, and "
                    f"{client_ip} is outside it (a function without a VpcConfig)")
        if network.reachable(self.plane.store, listener.groups, client_ip, listener.port):
            return None
        return (
            f"no security group rule of proxy {listener.proxy} admits connections "
            f"from {client_ip} on port {listener.port}"
        )

    def proxy_doc(self, config: ProxyConfig) -> dict[str, object] | None:
        listener = self.listeners.get(config.name)
        return self.plane.store.get("db_proxy", listener.proxy) if listener else None


class ProxyAuthenticator:
    """IAM tokens or secret passwords for clients; secrets for the database login."""

    def __init__(self, authority: PlaneAuthority, config: ProxyConfig) -> None:
        self.authority = authority
        self.plane = authority.plane
        self.config = config
        self.iam = config.auth_method in (CLEARTEXT, MYSQL_CLEAR)
        self._users = StaticUsers((), config.auth_method)
        self._users_key: tuple[int, tuple[UserConfig, ...]] = (-1, ())

    # ---- client side ----

    def method(self, user: str) -> str:
        return self.config.auth_method

    def known(self, user: str) -> bool:
        return True if self.iam else self._secret_users().known(user)

    def scram_verifier(self, user: str) -> ScramVerifier:
        return self._secret_users().scram_verifier(user)

    def md5_secret(self, user: str) -> str | None:
        return self._secret_users().md5_secret(user)

    def mysql_native_hash(self, user: str) -> bytes | None:
        return self._secret_users().mysql_native_hash(user)

    def mysql_sha2_hash(self, user: str) -> bytes | None:
        return self._secret_users().mysql_sha2_hash(user)

    async def check_cleartext(self, user: str, password: bytes) -> bool:
        if not self.iam:
            return await self._secret_users().check_cleartext(user, password)
        reason = self._check_token(user, password)
        if reason is not None:
            log.warning(
                "IAM authentication of user %s on proxy %s refused: %s",
                user, self.config.name, reason,
            )  # fmt: skip
        return reason is None

    def _check_token(self, user: str, password: bytes) -> str | None:
        """None when `password` is a valid token for `user` on this endpoint, else why not."""
        listener = self.authority.listeners.get(self.config.name)
        if listener is None:
            return "the proxy is being removed"
        cache = self.authority.tokens
        token = cache.get(password)
        verified = token is not None
        if token is None:
            try:
                token = sigv4.parse_db_auth_token(password.decode("utf-8", "replace"))
            except sigv4.TokenError as exc:
                return f"not an IAM authentication token ({exc})"
        if token.user != user:
            return f"the token was made for user {token.user!r}"
        if (token.host, token.port) != (listener.address, listener.port):
            return f"the token was made for {token.host}:{token.port}, not this proxy's endpoint"
        info = self.plane.principals.lookup(token.credential.access_key)
        if info is None:
            return "the token's access key is not known"
        if info.session_token is not None and not hmac.compare_digest(
            (token.credential.session_token or "").encode(), info.session_token.encode()
        ):
            return "the token's session token does not match its access key"
        now = datetime.now(UTC)
        if info.expires is not None and info.expires < now.timestamp():
            return "the token's session credentials have expired"
        try:
            if verified:
                sigv4.check_token_time(token, now)
            else:
                sigv4.verify_db_auth_token(token, info.secret, now, self.authority.keys)
                cache.put(password, token)
        except sigv4.TokenError as exc:
            return str(exc)
        resource = (
            f"arn:aws:rds-db:{self.plane.region}:{self.plane.account}:dbuser:"
            f"{listener.resource_id}/{user}"
        )
        if not self._allowed(info.principal, resource):
            return f"{info.principal.arn} is not allowed rds-db:connect on {resource}"
        return None

    def _allowed(self, principal: Principal, resource: str) -> bool:
        """rds-db:connect for this principal, decided once per state of the policies."""
        cache, key = self.authority.tokens, (principal.access_key, resource)
        decided = cache.decision(self.plane.store.version, key)
        if decided is None:
            decided = self.plane.principals.allowed(principal, "rds-db:connect", resource)
            cache.decide(key, decided)
        return decided

    # ---- database side ----

    def backend_login(self, user: str) -> BackendLogin | None:
        doc = self.authority.proxy_doc(self.config)
        if doc is None:
            raise ServerError(f"proxy {self.config.name} is being removed")
        self._check_target_admits_proxy()
        secrets = self._secrets_for(doc, user)
        if not secrets:
            return None
        for arn, password in secrets:
            if self._role_may_read(doc, arn):
                return BackendLogin(user, password)
        raise ServerAuthFailed(
            f"the proxy's IAM role may not read the secret of database user {user!r} "
            "(secretsmanager:GetSecretValue)"
        )

    def _check_target_admits_proxy(self) -> None:
        listener = self.authority.listeners.get(self.config.name)
        if listener is None:
            return
        store = self.plane.store
        instance_id = registry.target_of(store, listener.proxy)
        if instance_id is None:
            raise ServerError(f"proxy {listener.proxy} has no registered target")
        target = registry.target(store, listener.proxy)
        if target is None:
            raise ServerError(
                f"the target {instance_id} of proxy {listener.proxy} no longer exists"
            )
        if target.guarded:
            return  # its own address admits or refuses the proxy's connections
        if not network.admits(store, target.groups, listener.address, target.port):
            raise ServerError(
                f"the security groups of {target.instance} do not admit proxy "
                f"{listener.proxy} on port {target.port} (CONNECTION_FAILED)"
            )

    def _secrets_for(self, doc: dict[str, object], user: str) -> list[tuple[str, str]]:
        """(ARN, password) of every secret of the proxy naming `user`, in `Auth` order."""
        out = []
        for arn in _secret_arns(doc):
            found = read_secret(self.plane.store, self.plane.vault, arn)
            if found is None or found[1] is None:
                continue
            value = found[1]
            if value.get("username") == user and isinstance(value.get("password"), str):
                out.append((found[0], str(value["password"])))
        return out

    def _role_may_read(self, doc: dict[str, object], secret_arn: str) -> bool:
        role = role_principal(self.plane, str(doc.get("RoleArn", "")))
        if role is None:
            return False
        return self.plane.principals.allowed(role, "secretsmanager:GetSecretValue", secret_arn)

    def _secret_users(self) -> StaticUsers:
        """Users and passwords from the readable secrets, rebuilt only when they change."""
        version = self.plane.store.version
        if self._users_key[0] == version:
            return self._users
        doc = self.authority.proxy_doc(self.config)
        users = [
            UserConfig(login.user, login.password, login.user, login.password)
            for login in readable_logins(self.plane, doc or {})
        ]
        frozen = tuple(users)
        if frozen != self._users_key[1]:
            self._users = StaticUsers(frozen, self.config.auth_method)
        self._users_key = (version, frozen)
        return self._users


@dataclass(frozen=True, slots=True)
class SecretLogin:
    """A database login held by a secret the proxy's role may read."""

    arn: str
    user: str
    password: str = field(repr=False)
    database: str = ""


def readable_logins(plane: AccountState, doc: dict[str, object]) -> list[SecretLogin]:
    """The logins of the proxy's secrets (in `Auth` order) that hold a username and a
    password and that the proxy's role may `secretsmanager:GetSecretValue`."""
    role = role_principal(plane, str(doc.get("RoleArn", "")))
    if role is None:
        return []
    out = []
    for arn in _secret_arns(doc):
        found = read_secret(plane.store, plane.vault, arn)
        if found is None or found[1] is None:
            continue
        value = found[1]
        user, password = value.get("username"), value.get("password")
        if not (isinstance(user, str) and isinstance(password, str)):
            continue
        if plane.principals.allowed(role, "secretsmanager:GetSecretValue", found[0]):
            out.append(SecretLogin(found[0], user, password, str(value.get("dbname") or "")))
    return out


def _secret_arns(doc: dict[str, object]) -> list[str]:
    auth = doc.get("Auth", [])
    if not isinstance(auth, list):
        return []
    return [str(a["SecretArn"]) for a in auth if isinstance(a, dict) and a.get("SecretArn")]


def role_principal(plane: AccountState, role_arn: str) -> Principal | None:
    """The proxy's role as a principal whose policies can be evaluated."""
    name = role_arn.rpartition("/")[2]
    role = plane.store.get("iam_role", name) if name else None
    if role is None or role.get("Arn") != role_arn:
        return None
    return Principal(
        account=plane.account,
        arn=f"arn:aws:sts::{plane.account}:assumed-role/{name}/rds-proxy",
        user_id=f"{role['RoleId']}:rds-proxy",
        kind="assumed-role",
        name=name,
        access_key="",
        session_name="rds-proxy",
    )
