"""The PostgreSQL login as two small state machines, one for each side.

Design: like the MySQL ones (`sluice.wire.mysql.login`), each side is fed
whole packets or messages (header included, as `MessageReader` returns them)
and returns what to send, or an event that says what was learned; the caller
does the I/O, TLS, password look-ups and waiting, and applies what was
learned. An illegal move raises.

`LoginClient` is Sluice logging in to a server: the SSLRequest and its answer,
the StartupMessage, then whatever authentication the server asks for
(AuthenticationOk, cleartext, MD5, SASL SCRAM-SHA-256: the server's signature
must be verified before AuthenticationOk), ParameterStatus and BackendKeyData
up to the first ReadyForQuery. An ErrorResponse raises `ServerAuthFailed` for
a refused role or password, else `ServerError` with the server's SQLSTATE.

`LoginServer` is Sluice accepting a client's login:

    STARTUP --Login--> AUTH --verify()--> ACCEPTED --greeting()--> DONE
    (REFUSING --Refuse--> DONE: the client is refused, see below)

In STARTUP it reads startup packets: an SSLRequest is answered 'S' (then the
TLS handshake, `tls_started`) or 'N' when no TLS is offered, twice is an
error, and so is plaintext sent behind it; a GSSENCRequest is answered 'N'; a
CancelRequest ends the login; the StartupMessage gives a `Login` (with a
NegotiateProtocolVersion to send first when the client asks for 3.x, x > 0, or
for `_pq_.` options). In AUTH it runs the exchange the caller picks
(`start_scram`, `start_md5`, `start_cleartext`) and hands the client's
password or proof over as `Password`, so that the caller can wait its turn
before `verify` checks it. A machine made `refusing` answers TLS and GSSAPI
requests 'N' and gives `Refuse` for the next packet, whatever it is: the
caller then sends the refusal, which libpq shows only after its startup packet
(`sluice.session.admission`).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from sluice.errors import AuthFailed, ProtocolError, ServerAuthFailed, ServerError, TLSRequired
from sluice.wire.pg import messages as m
from sluice.wire.pg.md5 import md5_check, md5_hash, md5_response
from sluice.wire.pg.scram import MECHANISM, ScramClient, ScramServer, ScramVerifier

_AUTH_FAILURES = frozenset({"28P01", "28000"})
_NEGOTIATION_PACKETS = 3  # a refused client: an SSLRequest, a GSSENCRequest, then anything
_MD5_SALT_LEN = 4  # AuthenticationMD5Password carries a 4-byte salt


def _kind_body(msg: bytes) -> tuple[bytes, bytes]:
    if len(msg) < 5:
        raise ProtocolError("truncated message")
    return msg[0:1], msg[5:]


# ---- the client side: Sluice logging in to a server ----------------------------


class _Client(enum.Enum):
    AUTH = "auth"
    PARAMS = "params"  # authenticated: ParameterStatus and BackendKeyData until ReadyForQuery
    READY = "ready"


class LoginClient:
    """Sluice logging in to a PostgreSQL server as `user` with `password`."""

    def __init__(
        self, user: str, password: str, database: str, *, nonce: bytes | None = None
    ) -> None:
        """`nonce`: SCRAM's client nonce (random by default)."""
        self.user = user
        self.database = database
        self._password = password
        self._state = _Client.AUTH
        self._scram: ScramClient | None = None
        self._nonce = nonce
        self.params: dict[str, str] = {}  # ParameterStatus, as the server reported them
        self.key = (0, 0)  # BackendKeyData: the server's pid and secret

    @property
    def ready(self) -> bool:
        """The first ReadyForQuery has come: the login is over."""
        return self._state is _Client.READY

    @staticmethod
    def ssl_request() -> bytes:
        return m.ssl_request()

    @staticmethod
    def tls_answer(answer: bytes, required: bool) -> bool:
        """The server's answer to the SSLRequest: True to start TLS, False to go on
        without it (ServerError when TLS is `required`)."""
        if answer == m.SSL_NO:
            if required:
                raise ServerError("the database server does not accept TLS connections")
            return False
        if answer != m.SSL_YES:
            raise ProtocolError("unexpected answer to SSLRequest from server")
        return True

    def startup(self) -> bytes:
        return m.startup_message({"user": self.user, "database": self.database})

    def feed(self, msg: bytes) -> bytes | None:
        """Take one whole server message; return what to answer, or None."""
        kind, body = _kind_body(msg)
        if kind == b"E":
            raise self._error(body)
        if self._state is _Client.AUTH:
            return self._auth(kind, body)
        if self._state is _Client.READY:
            raise ProtocolError("a message after ReadyForQuery fed to the login")
        if kind == b"S":
            name, value = m.parse_parameter_status(body)
            self.params[name] = value
        elif kind == b"K":
            self.key = m.parse_backend_key(body)
        elif kind == b"Z":
            self._state = _Client.READY
        return None  # (a NoticeResponse, say: nothing to do)

    def _auth(self, kind: bytes, body: bytes) -> bytes | None:
        if kind != b"R":
            raise ProtocolError(f"unexpected message {kind!r} during authentication")
        code, payload = m.parse_auth(body)
        scram = self._scram
        if code == m.AUTH_OK:
            if scram is not None and not scram.verified:
                raise ServerAuthFailed(
                    "the server ended SCRAM authentication before proving itself"
                )
            self._state = _Client.PARAMS
            return None
        if code == m.AUTH_CLEARTEXT:
            return m.password_message(self._password.encode() + b"\x00")
        if code == m.AUTH_MD5:
            if len(payload) != _MD5_SALT_LEN:
                raise ProtocolError("malformed AuthenticationMD5Password from server")
            return m.password_message(md5_response(self.user, self._password, payload) + b"\x00")
        if code == m.AUTH_SASL and scram is None:
            if MECHANISM not in m.parse_sasl_mechanisms(payload):
                raise ServerAuthFailed("server offers no SASL mechanism Sluice supports")
            self._scram = scram = ScramClient(self.user, self._password, self._nonce)
            return m.sasl_initial_response(MECHANISM, scram.client_first())
        if code == m.AUTH_SASL_CONTINUE and scram is not None:
            return m.password_message(scram.handle_server_first(payload))
        if code == m.AUTH_SASL_FINAL and scram is not None:
            scram.verify_server_final(payload)
            return None
        raise ServerAuthFailed(f"unsupported authentication request {code}")

    def _error(self, body: bytes) -> ServerError:
        fields = m.parse_error_fields(body)
        code, text = fields.get("C", ""), fields.get("M", "")
        if self._state is _Client.AUTH and code in _AUTH_FAILURES:
            return ServerAuthFailed(f"database refused the proxy's credentials ({code})")
        err = ServerError(f"database error {code}: {text}")
        if code:
            err.sqlstate = code
        return err


# ---- the server side: Sluice accepting a client's login ------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """Send `data`, then read the next startup packet."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Send `data` ('S'), run the TLS handshake, then call `tls_started`."""

    data: bytes = m.SSL_YES


@dataclass(frozen=True, slots=True)
class Cancel:
    """A CancelRequest: the login ends here."""

    pid: int
    secret: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """A refused client has sent its startup packet (or something else): refuse it now."""


@dataclass(frozen=True, slots=True)
class Login:
    """The StartupMessage: send `reply` (if any), then check and authenticate."""

    user: str
    database: str  # the user's name when none is given, as the server does
    params: dict[str, str]
    reply: bytes  # NegotiateProtocolVersion, or b""


@dataclass(frozen=True, slots=True)
class Password:
    """The client's password, md5 answer or SCRAM proof is in: wait its turn, then verify."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Greeting:
    """What ends a successful login: `data` to send, and the client's startup settings as
    (name, value, whether the pool's default already is that value)."""

    data: bytes
    settings: tuple[tuple[str, str, bool], ...]


StartupEvent = Reply | StartTLS | Cancel | Login


class _Server(enum.Enum):
    STARTUP = "startup"
    REFUSING = "refusing"
    AUTH = "auth"
    ACCEPTED = "accepted"  # the password is verified
    DONE = "done"


class _Method(enum.Enum):
    NONE = "none"
    SCRAM = "scram"
    MD5 = "md5"
    CLEARTEXT = "cleartext"


_FALSE = frozenset({"false", "0", "no", "off"})


class LoginServer:
    """A client's login to Sluice, from its first packet to the greeting."""

    def __init__(self, *, tls_offered: bool, refusing: bool = False) -> None:
        self._tls_offered = tls_offered
        self._state = _Server.REFUSING if refusing else _Server.STARTUP
        self._packets = 0  # startup packets read while refusing
        self.tls = False
        self.user = ""
        self._method = _Method.NONE
        self._scram: ScramServer | None = None
        self._sasl_started = False  # the SASLInitialResponse is read
        self._md5 = ("", b"")  # the stored hash (or a decoy) and the salt
        self._known = False
        self._password: bytes | None = None  # what the client sent to be checked

    def _expect(self, state: _Server) -> None:
        if self._state is not state:
            raise RuntimeError(f"login {self._state.value}: not expected now ({state.value})")

    # ---- startup packets ----

    def feed_startup(self, packet: bytes, buffered: int = 0) -> StartupEvent:
        """One whole startup packet; `buffered`: bytes the client sent after it."""
        self._expect(_Server.STARTUP)
        parsed = m.parse_startup(packet)
        if isinstance(parsed, m.SSLRequest):
            return self._ssl(buffered)
        if isinstance(parsed, m.GSSENCRequest):
            return Reply(m.SSL_NO)
        if isinstance(parsed, m.CancelRequest):
            self._state = _Server.DONE
            return Cancel(parsed.pid, parsed.secret)
        return self._login(parsed)

    def feed_refused(self, packet: bytes) -> Reply | Refuse:
        """One whole startup packet of a refused client."""
        self._expect(_Server.REFUSING)
        self._packets += 1
        try:
            parsed = m.parse_startup(packet)
        except ProtocolError:
            parsed = None
        negotiation = isinstance(parsed, m.SSLRequest | m.GSSENCRequest)
        if negotiation and self._packets < _NEGOTIATION_PACKETS:
            return Reply(m.SSL_NO)
        self._state = _Server.DONE
        return Refuse()

    def refuse_now(self) -> Refuse:
        """A refused client sent nothing usable in time: refuse it all the same."""
        self._expect(_Server.REFUSING)
        self._state = _Server.DONE
        return Refuse()

    def _ssl(self, buffered: int) -> Reply | StartTLS:
        if self.tls:
            raise ProtocolError("SSLRequest received twice")
        if not self._tls_offered:
            return Reply(m.SSL_NO)
        if buffered:
            raise ProtocolError("unencrypted data after SSL request")
        return StartTLS()

    def tls_started(self) -> None:
        self._expect(_Server.STARTUP)
        self.tls = True

    def _login(self, startup: m.Startup) -> Login:
        params = startup.params
        options = [name for name in params if name.startswith("_pq_.")]
        reply = m.negotiate_protocol_version(0, options) if startup.minor or options else b""
        user = params.get("user", "")
        if not user:
            raise ProtocolError("no PostgreSQL user name specified in startup packet")
        if params.get("replication", "false").lower() not in _FALSE:
            raise ProtocolError("replication connections are not supported by the proxy")
        self.user = user
        self._state = _Server.AUTH
        return Login(user, params.get("database", "") or user, params, reply)

    # ---- authentication ----

    def start_scram(
        self, verifier: ScramVerifier, known: bool, nonce: bytes | None = None
    ) -> bytes:
        """AuthenticationSASL. `verifier`: the user's, or a decoy when not `known`."""
        self._start(_Method.SCRAM, known)
        self._scram = ScramServer(verifier, nonce)
        return m.auth_sasl((MECHANISM,))

    def start_md5(self, stored: str | None, salt: bytes | None = None) -> bytes:
        """AuthenticationMD5Password. `stored`: the user's md5 hash, None when unknown."""
        self._start(_Method.MD5, stored is not None)
        salt = os.urandom(4) if salt is None else salt
        self._md5 = (stored or md5_hash(self.user, os.urandom(8).hex()), salt)
        return m.auth_request(m.AUTH_MD5, salt)

    def start_cleartext(self) -> bytes:
        """AuthenticationCleartextPassword: only over TLS (the password crosses the network)."""
        if not self.tls:
            raise TLSRequired("cleartext password authentication requires TLS")
        self._start(_Method.CLEARTEXT, True)
        return m.auth_request(m.AUTH_CLEARTEXT)

    @property
    def cleartext(self) -> bool:
        """The password comes in the clear: the caller checks it (`verify(cleartext_ok)`)."""
        return self._method is _Method.CLEARTEXT

    def _start(self, method: _Method, known: bool) -> None:
        self._expect(_Server.AUTH)
        if self._method is not _Method.NONE:
            raise RuntimeError("the authentication exchange has started already")
        self._method, self._known = method, known

    def feed(self, msg: bytes) -> bytes | Password:
        """One whole client message during authentication: what to answer, or the
        password to check (then `verify`)."""
        self._expect(_Server.AUTH)
        kind, body = _kind_body(msg)
        if kind != b"p":
            raise ProtocolError("expected a password message")
        if self._password is not None or self._method is _Method.NONE:
            raise ProtocolError("unexpected password message")
        scram = self._scram
        if scram is not None and not self._sasl_started:
            self._sasl_started = True
            mech, data = m.parse_sasl_initial(body)
            if mech != MECHANISM:
                raise AuthFailed(f"unsupported SASL mechanism {mech}")
            return m.auth_request(m.AUTH_SASL_CONTINUE, scram.handle_first(data))
        answer = body if scram is not None else body.rstrip(b"\x00")
        self._password = answer
        return Password(answer)

    def verify(self, cleartext_ok: bool = False) -> bytes:
        """Check what the client sent (a cleartext password is checked by the caller, who
        says `cleartext_ok`); AuthFailed unless it proves the user. Returns what to send
        at once: SCRAM's server-final-message, or nothing."""
        self._expect(_Server.AUTH)
        answer = self._password
        if answer is None:
            raise RuntimeError("nothing to verify yet")
        final = b""
        if self._method is _Method.SCRAM:
            assert self._scram is not None
            final = self._scram.handle_final(answer)
            if not self._known:
                raise AuthFailed("unknown user")
            final = m.auth_request(m.AUTH_SASL_FINAL, final)
        elif self._method is _Method.MD5:
            stored, salt = self._md5
            if not md5_check(stored, salt, answer) or not self._known:
                raise AuthFailed("wrong password")
        elif not cleartext_ok:
            raise AuthFailed("wrong password")
        self._state = _Server.ACCEPTED
        return final

    # ---- the greeting ----

    def greeting(
        self, defaults: dict[str, str], shown: dict[str, str], key: tuple[int, int]
    ) -> Greeting:
        """AuthenticationOk, the pool's server parameters with the client's own startup
        settings (`shown`, as the server shows them, by lower-case name) over them,
        BackendKeyData `key`, ReadyForQuery."""
        self._expect(_Server.ACCEPTED)
        reported = dict(defaults)
        names = {name.lower(): name for name in defaults}
        settings: list[tuple[str, str, bool]] = []
        for name, value in shown.items():
            known = names.get(name)
            if known is not None:
                reported[known] = value
            settings.append((name, value, known is not None and defaults[known] == value))
        out = [m.auth_request(m.AUTH_OK)]
        out += [m.parameter_status(k, v) for k, v in reported.items()]
        out += [m.backend_key_data(*key), m.READY_IDLE]
        self._state = _Server.DONE
        return Greeting(b"".join(out), tuple(settings))
