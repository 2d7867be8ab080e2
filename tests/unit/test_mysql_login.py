"""The login state machines, against a recorded server, each other, and PyMySQL's answers.

LoginClient replays a real login to MariaDB 10.11; then both machines are
wired together in memory for every plugin the server side can demand and
every plugin the client side starts with, with and without TLS, the verdict
taken with the auth module's checks, as a session would. Refusals (cleartext
without TLS, the RSA key request, a server ERR) must raise the right error.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pymysql import _auth as reference

from mysql_captures import GREETING, LOGIN_OK
from sluice.errors import AuthFailed, ProtocolError, ServerAuthFailed, TLSRequired
from sluice.wire.mysql import auth
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import handshake as h
from sluice.wire.mysql import login as lg
from sluice.wire.mysql.login import LoginClient, LoginServer
from sluice.wire.mysql.messages import build_err, parse_ok

PASSWORD = "s3cret-ü"
NONCE = b"ABCDEFGHIJKLMNOPQRST"
SERVER_CAPS = c.SUPPORTED_CAPABILITIES | c.CLIENT_SSL
PLUGINS = [c.NATIVE_PASSWORD, c.CACHING_SHA2_PASSWORD, c.CLEAR_PASSWORD]


def _greeting(plugin: str, caps: int = SERVER_CAPS) -> bytes:
    return h.build_handshake(h.Handshake("8.0.0-Sluice", 7, NONCE, caps, 45, 2, plugin))


def test_real_login() -> None:
    client = LoginClient("root", "", attributes={"_client_name": "sluice"})
    hs = client.greet(GREETING[4:])
    assert hs.server_version.endswith("MariaDB-0+deb12u1")
    assert client.capabilities == c.SUPPORTED_CAPABILITIES & hs.capabilities
    resp = h.parse_handshake_response(client.response())
    assert isinstance(resp, h.HandshakeResponse)
    assert (resp.user, resp.auth_response, resp.auth_plugin) == ("root", b"", c.NATIVE_PASSWORD)
    assert resp.attributes == {"_client_name": "sluice"}
    assert not client.finished
    assert client.feed(LOGIN_OK[4:]) is None
    assert client.finished
    assert client.ok == parse_ok(LOGIN_OK[4:])


def test_database_and_ssl_request() -> None:
    client = LoginClient("app", PASSWORD, "appdb", tls=True)
    client.greet(_greeting(c.NATIVE_PASSWORD))
    assert client.capabilities & c.CLIENT_SSL and client.capabilities & c.CLIENT_CONNECT_WITH_DB
    assert h.parse_handshake_response(client.ssl_request()) == h.SSLRequest(
        client.capabilities, 1 << 24, 45
    )
    resp = h.parse_handshake_response(client.response())
    assert isinstance(resp, h.HandshakeResponse)
    assert resp.database == "appdb"
    assert resp.auth_response == reference.scramble_native_password(PASSWORD.encode(), NONCE)


def _verify(
    kind: int, data: bytes, server: LoginServer, have_hash: bool, password: bytes
) -> tuple[int, bytes]:
    """The session's part: check what LoginServer hands over against the password."""
    if kind == lg.CHECK_NATIVE:
        ok = auth.native_check(auth.native_hash(password), server.scramble, data)
    elif kind == lg.CHECK_SHA2:
        if not have_hash:
            return server.full()
        ok = auth.sha2_check(auth.sha2_hash(password), server.scramble, data)
    else:
        ok = data == password
    if not ok:
        raise AuthFailed("wrong password")
    return -1, b""


def _run(
    demanded: str, offered: str, *, tls: bool, have_hash: bool = True, password: str = PASSWORD
) -> list[bytes]:
    """Wire LoginClient to LoginServer; return the server's packets after the response."""
    client = LoginClient("app", password, tls=tls)
    client.greet(_greeting(offered))
    response = h.parse_handshake_response(client.response())
    assert isinstance(response, h.HandshakeResponse)
    server = LoginServer(demanded, NONCE, tls=tls)
    kind, data = server.start(response)
    sent: list[bytes] = []
    for _ in range(5):
        if kind == lg.SEND:
            sent.append(data)
            answer = client.feed(data)
            assert answer is not None
            kind, data = server.feed(answer)
            continue
        kind, data = _verify(kind, data, server, have_hash, PASSWORD.encode())
        if kind == -1:
            break
    final = server.accept()
    for packet in final:
        assert client.feed(packet) is None
    assert client.finished
    return sent + final


OK = b"\x00\x00\x00\x02\x00\x00\x00"


@pytest.mark.parametrize("offered", PLUGINS)
def test_native(offered: str) -> None:
    sent = _run(c.NATIVE_PASSWORD, offered, tls=False)
    if offered != c.CACHING_SHA2_PASSWORD:  # without TLS, cleartext is never tried
        assert sent == [OK]
    else:  # the client started with another plugin: switched, with the scramble
        assert sent == [b"\xfe" + c.NATIVE_PASSWORD.encode() + b"\x00" + NONCE + b"\x00", OK]


@pytest.mark.parametrize("offered", PLUGINS)
def test_sha2_fast_path(offered: str) -> None:
    sent = _run(c.CACHING_SHA2_PASSWORD, offered, tls=False)
    assert sent[-2:] == [auth.AUTH_MORE_FAST_OK, OK]
    assert len(sent) == (2 if offered == c.CACHING_SHA2_PASSWORD else 3)


def test_sha2_empty_password_has_no_fast_ok() -> None:
    server = LoginServer(c.CACHING_SHA2_PASSWORD, NONCE, tls=False)
    resp = h.HandshakeResponse(capabilities=0, user="app", auth_plugin=c.CACHING_SHA2_PASSWORD)
    kind, data = server.start(resp)
    assert (kind, data) == (lg.CHECK_SHA2, b"")
    assert auth.sha2_check(auth.sha2_hash(b""), NONCE, data)
    assert server.accept() == [OK]


def test_sha2_full_path_over_tls() -> None:
    sent = _run(c.CACHING_SHA2_PASSWORD, c.CACHING_SHA2_PASSWORD, tls=True, have_hash=False)
    assert sent == [auth.AUTH_MORE_FULL, OK]


def test_sha2_full_path_needs_tls() -> None:
    with pytest.raises(TLSRequired):
        _run(c.CACHING_SHA2_PASSWORD, c.CACHING_SHA2_PASSWORD, tls=False, have_hash=False)


@pytest.mark.parametrize("offered", PLUGINS)
def test_clear_over_tls(offered: str) -> None:
    sent = _run(c.CLEAR_PASSWORD, offered, tls=True)
    assert sent[-1] == OK
    if offered != c.CLEAR_PASSWORD:
        assert sent[0] == b"\xfemysql_clear_password\x00"


def test_clear_needs_tls_on_both_sides() -> None:
    with pytest.raises(TLSRequired):
        LoginServer(c.CLEAR_PASSWORD, NONCE, tls=False).start(
            h.HandshakeResponse(capabilities=0, user="app")
        )
    client = LoginClient("app", PASSWORD)
    client.greet(_greeting(c.CLEAR_PASSWORD))
    resp = h.parse_handshake_response(client.response())  # never volunteers the password
    assert isinstance(resp, h.HandshakeResponse)
    assert resp.auth_plugin == c.NATIVE_PASSWORD
    assert PASSWORD.encode() not in client.response()
    with pytest.raises(ServerAuthFailed, match="cleartext"):
        client.feed(h.build_auth_switch(c.CLEAR_PASSWORD, b""))


def test_wrong_password() -> None:
    with pytest.raises(AuthFailed):
        _run(c.NATIVE_PASSWORD, c.NATIVE_PASSWORD, tls=False, password="guess")


def test_server_refuses_public_key_request() -> None:
    server = LoginServer(c.CACHING_SHA2_PASSWORD, NONCE, tls=True)
    server.start(h.HandshakeResponse(capabilities=0, user="app", auth_plugin="x"))
    server.full()
    with pytest.raises(AuthFailed, match="RSA"):
        server.feed(auth.REQUEST_PUBLIC_KEY)
    with pytest.raises(ProtocolError):
        server.full()  # only once
    with pytest.raises(ProtocolError):
        LoginServer(c.NATIVE_PASSWORD, NONCE, tls=True).full()
    with pytest.raises(ValueError):
        LoginServer("auth_gssapi", NONCE, tls=True)


def test_client_full_path_with_rsa_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    client = LoginClient("app", PASSWORD)
    client.greet(_greeting(c.CACHING_SHA2_PASSWORD))
    client.response()
    assert client.feed(auth.AUTH_MORE_FULL) == auth.REQUEST_PUBLIC_KEY
    encrypted = client.feed(b"\x01" + pem)
    assert encrypted is not None
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    plain = key.decrypt(encrypted, oaep)
    mask = (NONCE * 2)[: len(plain)]
    assert bytes(a ^ b for a, b in zip(plain, mask, strict=True)) == PASSWORD.encode() + b"\x00"
    assert client.feed(OK) is None and client.finished


def test_client_fast_auth_then_ok() -> None:
    client = LoginClient("app", PASSWORD)
    client.greet(_greeting(c.CACHING_SHA2_PASSWORD))
    resp = h.parse_handshake_response(client.response())
    assert isinstance(resp, h.HandshakeResponse)
    assert resp.auth_response == reference.scramble_caching_sha2(PASSWORD.encode(), NONCE)
    assert client.feed(auth.AUTH_MORE_FAST_OK) is None and not client.finished
    with pytest.raises(ProtocolError):
        client.feed(b"\x01\x09")


def test_client_refusals() -> None:
    client = LoginClient("app", PASSWORD)
    with pytest.raises(ServerAuthFailed, match="1040"):
        client.greet(build_err(c.ER_CON_COUNT_ERROR, "Too many connections"))
    with pytest.raises(ServerAuthFailed, match="TLS"):
        LoginClient("app", PASSWORD, tls=True).greet(_greeting(c.NATIVE_PASSWORD, 0xFFFF & ~2048))
    client.greet(_greeting(c.NATIVE_PASSWORD))
    client.response()
    with pytest.raises(ServerAuthFailed, match="client_ed25519"):
        client.feed(h.build_auth_switch("client_ed25519", NONCE))
    with pytest.raises(ServerAuthFailed, match=r"1045 \(28000\): Access denied"):
        client.feed(build_err(c.ER_ACCESS_DENIED_ERROR, "Access denied for user 'app'"))
    with pytest.raises(ProtocolError):
        client.feed(b"\x07")


def test_unknown_default_plugin_answers_native() -> None:
    client = LoginClient("app", PASSWORD)
    client.greet(_greeting("client_ed25519"))
    resp = h.parse_handshake_response(client.response())
    assert isinstance(resp, h.HandshakeResponse)
    assert resp.auth_plugin == c.NATIVE_PASSWORD
