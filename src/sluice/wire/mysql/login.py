"""The authentication exchange as two small state machines, one for each side.

Design: like scram.py, each side is fed whole payloads and returns payloads to
send; the caller frames them (each answer takes the sequence id after the
packet it answers) and does the I/O, TLS and password look-ups.

`LoginClient` is Sluice logging in to a database: it reads the greeting,
writes the SSLRequest and HandshakeResponse41, then follows whatever the
server asks: an AuthSwitchRequest to any of the three plugins, caching_sha2's
fast-auth result or its request for the full password (sent as is over TLS,
RSA-encrypted with the server's key otherwise). A cleartext password is only
ever sent over TLS. An ERR raises ServerAuthFailed with the server's message.

`LoginServer` is Sluice authenticating a client, after the HandshakeResponse41:
it switches the client to the demanded plugin when the client used another,
and tells the caller what to verify (`check`): a native or fast-path sha2
answer to the scramble, or a cleartext password (mysql_clear_password, or
caching_sha2's full path, which is only offered over TLS). After the verdict,
`accept()` gives the packets that end a successful exchange.
"""

from __future__ import annotations

from sluice.errors import AuthFailed, ProtocolError, ServerAuthFailed, TLSRequired
from sluice.wire.mysql import auth
from sluice.wire.mysql import constants as c
from sluice.wire.mysql.handshake import (
    Handshake,
    HandshakeResponse,
    build_auth_switch,
    build_handshake_response,
    build_ssl_request,
    parse_auth_switch,
    parse_handshake,
)
from sluice.wire.mysql.messages import OkPacket, build_ok, parse_err, parse_ok

_KNOWN = (c.NATIVE_PASSWORD, c.CACHING_SHA2_PASSWORD, c.CLEAR_PASSWORD)


class LoginClient:
    """Sluice logging in to a MySQL or MariaDB server."""

    def __init__(
        self,
        user: str,
        password: str,
        database: str | None = None,
        *,
        tls: bool = False,
        capabilities: int = c.SUPPORTED_CAPABILITIES,
        charset: int = c.UTF8MB4_GENERAL_CI,
        attributes: dict[str, str] | None = None,
    ) -> None:
        """`tls`: the response will be sent over TLS (after `ssl_request`)."""
        self._user = user
        self._password = password.encode()
        self._database = database
        self._tls = tls
        self._wanted = capabilities | (c.CLIENT_CONNECT_WITH_DB if database else 0)
        self._charset = charset
        self._attributes = attributes or {}
        self._plugin = c.NATIVE_PASSWORD
        self._nonce = b""
        self._awaiting_key = False
        self.handshake: Handshake | None = None
        self.capabilities = 0  # negotiated, once the greeting is read
        self.ok: OkPacket | None = None  # the server's final OK

    @property
    def finished(self) -> bool:
        return self.ok is not None

    def greet(self, payload: bytes) -> Handshake:
        """Read the server's HandshakeV10 (an ERR there raises ServerAuthFailed)."""
        if payload[:1] == b"\xff":
            self._fail(payload)
        hs = self.handshake = parse_handshake(payload)
        if self._tls and not hs.capabilities & c.CLIENT_SSL:
            raise ServerAuthFailed("the server does not offer TLS")
        self.capabilities = (self._wanted & hs.capabilities) | (c.CLIENT_SSL if self._tls else 0)
        self._nonce = hs.scramble
        self._plugin = hs.auth_plugin if hs.auth_plugin in _KNOWN else c.NATIVE_PASSWORD
        return hs

    def ssl_request(self) -> bytes:
        return build_ssl_request(self.capabilities, 1 << 24, self._charset)

    def response(self) -> bytes:
        """The HandshakeResponse41, with the answer for the server's default plugin."""
        if self._plugin == c.CLEAR_PASSWORD and not self._tls:
            self._plugin = c.NATIVE_PASSWORD  # never volunteer a cleartext password
        return build_handshake_response(
            HandshakeResponse(
                capabilities=self.capabilities,
                user=self._user,
                auth_response=self._answer(),
                database=self._database,
                auth_plugin=self._plugin,
                attributes=self._attributes,
                charset=self._charset,
            )
        )

    def feed(self, payload: bytes) -> bytes | None:
        """Take a server packet; return the payload to answer with, or None.

        None means: wait for the next packet, or, once `finished`, done.
        """
        head = payload[:1]
        if head == b"\x00":
            self.ok = parse_ok(payload)
            return None
        if head == b"\xff":
            self._fail(payload)
        if head == b"\xfe":
            plugin, data = parse_auth_switch(payload)
            if plugin not in _KNOWN:
                raise ServerAuthFailed(f"unsupported authentication plugin {plugin!r}")
            self._plugin, self._nonce = plugin, data[: auth.NONCE_LEN]
            self._awaiting_key = False
            return self._answer()
        if head == b"\x01" and self._plugin == c.CACHING_SHA2_PASSWORD:
            return self._sha2_more(payload[1:])
        raise ProtocolError(f"unexpected packet 0x{payload[:1].hex()} during login")

    def _answer(self) -> bytes:
        if self._plugin == c.CACHING_SHA2_PASSWORD:
            return auth.sha2_scramble(self._password, self._nonce)
        if self._plugin == c.CLEAR_PASSWORD:
            if not self._tls:
                raise ServerAuthFailed("the server asks for a cleartext password without TLS")
            return auth.clear_payload(self._password)
        return auth.native_scramble(self._password, self._nonce)

    def _sha2_more(self, data: bytes) -> bytes | None:
        if self._awaiting_key:
            self._awaiting_key = False
            return auth.sha2_rsa_encrypt(self._password, self._nonce, data)
        if data == auth.FAST_AUTH_SUCCESS:
            return None  # the OK follows
        if data != auth.PERFORM_FULL_AUTH:
            raise ProtocolError("unexpected caching_sha2_password data")
        if self._tls:
            return auth.clear_payload(self._password)
        self._awaiting_key = True
        return auth.REQUEST_PUBLIC_KEY

    @staticmethod
    def _fail(payload: bytes) -> None:
        err = parse_err(payload)
        raise ServerAuthFailed(f"{err.code} ({err.sqlstate}): {err.message}")


# ---- the server side ---------------------------------------------------------

SEND = 0  # send `data` to the client, then feed its answer
CHECK_NATIVE = 1  # verify `data` with auth.native_check(stored, scramble, data)
CHECK_SHA2 = 2  # verify `data` with auth.sha2_check, or call full() if no hash is at hand
CHECK_CLEAR = 3  # verify the cleartext password `data`


class LoginServer:
    """Sluice authenticating a client with the plugin it demands."""

    def __init__(self, plugin: str, scramble: bytes, *, tls: bool) -> None:
        if plugin not in _KNOWN:
            raise ValueError(f"unknown authentication plugin {plugin!r}")
        self.plugin = plugin
        self.scramble = scramble
        self._tls = tls
        self._full = False  # caching_sha2's full path was asked for
        self._fast = False  # the answer being checked is a non-empty sha2 fast-path answer

    def start(self, response: HandshakeResponse) -> tuple[int, bytes]:
        """What to do with the client's HandshakeResponse41 (or COM_CHANGE_USER)."""
        if self.plugin == c.CLEAR_PASSWORD and not self._tls:
            raise TLSRequired("mysql_clear_password requires TLS")
        if response.auth_plugin == self.plugin:
            return self._check(response.auth_response)
        data = b"" if self.plugin == c.CLEAR_PASSWORD else self.scramble + b"\x00"
        return SEND, build_auth_switch(self.plugin, data)

    def feed(self, payload: bytes) -> tuple[int, bytes]:
        """The client's answer to the last packet sent."""
        if not self._full:
            return self._check(payload)
        if payload == auth.REQUEST_PUBLIC_KEY:
            raise AuthFailed("the client asks for an RSA key; only TLS is offered")
        return CHECK_CLEAR, auth.parse_clear(payload)

    def _check(self, answer: bytes) -> tuple[int, bytes]:
        if self.plugin == c.NATIVE_PASSWORD:
            return CHECK_NATIVE, answer
        if self.plugin == c.CLEAR_PASSWORD:
            return CHECK_CLEAR, auth.parse_clear(answer)
        self._fast = bool(answer)
        return CHECK_SHA2, answer

    def full(self) -> tuple[int, bytes]:
        """caching_sha2 without a usable hash: ask for the password itself (TLS only)."""
        if self.plugin != c.CACHING_SHA2_PASSWORD or self._full:
            raise ProtocolError("the full path belongs to caching_sha2_password, once")
        if not self._tls:
            raise TLSRequired("caching_sha2_password full authentication requires TLS")
        self._full, self._fast = True, False
        return SEND, auth.AUTH_MORE_FULL

    def accept(self, status: int = c.SERVER_STATUS_AUTOCOMMIT) -> list[bytes]:
        """The payloads that end a successful exchange: fast-auth success if due, then OK."""
        ok = build_ok(OkPacket(status=status))
        return [auth.AUTH_MORE_FAST_OK, ok] if self._fast else [ok]
