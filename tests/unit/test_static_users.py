"""StaticUsers: the configured users as an Authenticator."""

from __future__ import annotations

import asyncio

from sluice.auth.static import StaticUsers
from sluice.config import UserConfig
from sluice.wire.pg.md5 import md5_hash
from sluice.wire.pg.scram import ScramClient, ScramServer

USERS = (UserConfig("app", "s3cret", "app_role", "db-pass"),)


def test_known_users_and_backend_login() -> None:
    auth = StaticUsers(USERS, "scram-sha-256")
    assert auth.known("app") and not auth.known("mallory")
    login = auth.backend_login("app")
    assert login is not None and (login.user, login.password) == ("app_role", "db-pass")
    assert "db-pass" not in repr(login)
    assert auth.backend_login("mallory") is None


def test_scram_verifier_accepts_the_password_and_is_cached() -> None:
    auth = StaticUsers(USERS, "scram-sha-256")
    verifier = auth.scram_verifier("app")
    assert auth.scram_verifier("app") is verifier
    client, server = ScramClient("app", "s3cret"), ScramServer(verifier)
    final = server.handle_final(
        client.handle_server_first(server.handle_first(client.client_first()))
    )
    client.verify_server_final(final)
    assert client.verified


def test_decoy_verifier_is_stable_per_unknown_user() -> None:
    auth = StaticUsers(USERS, "scram-sha-256")
    first, again, other = (auth.scram_verifier(u) for u in ("eve", "eve", "mallory"))
    assert first.salt == again.salt and first.salt != other.salt
    assert first.iterations == auth.scram_verifier("app").iterations


def test_md5_and_cleartext() -> None:
    auth = StaticUsers(USERS, "md5")
    assert auth.md5_secret("app") == md5_hash("app", "s3cret")
    assert auth.md5_secret("eve") is None
    assert asyncio.run(auth.check_cleartext("app", b"s3cret"))
    assert not asyncio.run(auth.check_cleartext("app", b"s3cre"))
    assert not asyncio.run(auth.check_cleartext("eve", b"s3cret"))
