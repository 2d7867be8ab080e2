"""Users declared in the configuration file, with passwords checked in constant time.

SCRAM verifiers are derived once per (user, password) and cached: PBKDF2 is
deliberately slow. The decoy verifier for unknown users has a salt derived from
the user name and a per-process secret, so repeated attempts see a stable salt,
as they would for a real user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets

from sluice.auth.base import Authenticator, BackendLogin
from sluice.config import ProxyConfig, UserConfig
from sluice.wire.mysql.auth import native_hash, sha2_hash
from sluice.wire.pg.md5 import md5_hash
from sluice.wire.pg.scram import ScramVerifier, make_verifier


class StaticUsers:
    """An `Authenticator` over the `[[proxy.users]]` of one proxy."""

    def __init__(self, users: tuple[UserConfig, ...], method: str) -> None:
        self._users = {u.name: u for u in users}
        self._method = method
        self._verifiers: dict[tuple[str, str], ScramVerifier] = {}
        self._decoy_secret = secrets.token_bytes(16)
        self._decoy: ScramVerifier | None = None

    def method(self, user: str) -> str:
        return self._method

    def known(self, user: str) -> bool:
        return user in self._users

    def scram_verifier(self, user: str) -> ScramVerifier:
        config = self._users.get(user)
        if config is None:
            return self._decoy_for(user)
        key = (user, config.password)
        found = self._verifiers.get(key)
        if found is None:
            found = self._verifiers[key] = make_verifier(config.password)
        return found

    def _decoy_for(self, user: str) -> ScramVerifier:
        if self._decoy is None:
            self._decoy = make_verifier(secrets.token_hex(16))
        salt = hashlib.sha256(self._decoy_secret + user.encode()).digest()[:16]
        return dataclasses.replace(self._decoy, salt=salt)

    def md5_secret(self, user: str) -> str | None:
        config = self._users.get(user)
        return md5_hash(user, config.password) if config else None

    def mysql_native_hash(self, user: str) -> bytes | None:
        config = self._users.get(user)
        return native_hash(config.password.encode()) if config else None

    def mysql_sha2_hash(self, user: str) -> bytes | None:
        config = self._users.get(user)
        return sha2_hash(config.password.encode()) if config else None

    async def check_cleartext(self, user: str, password: bytes) -> bool:
        config = self._users.get(user)
        expected = config.password.encode() if config else secrets.token_bytes(16)
        return hmac.compare_digest(password, expected) and config is not None

    def backend_login(self, user: str) -> BackendLogin | None:
        config = self._users.get(user)
        if config is None:
            return None
        return BackendLogin(config.server_user, config.server_password)


class FileAuthority:
    """The `Authority` of proxies declared in a configuration file: its users, any address."""

    def authenticator(self, config: ProxyConfig) -> Authenticator:
        return StaticUsers(config.users, config.auth_method)

    def admit(self, config: ProxyConfig, client_ip: str) -> str | None:
        return None
