"""The PostgreSQL login state machines, on exact bytes, and wired to each other.

`LoginClient` (Sluice logging in to a server) is fed server messages as the
server writes them; `LoginServer` (a client logging in to Sluice) startup
packets and messages as libpq writes them. Malformed and truncated input must
raise the error whose SQLSTATE the client is told (08P01 for the protocol,
28P01 for a failed password, 28000 for TLS required), never anything else.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from sluice.errors import (
    AuthFailed,
    PacketTooLarge,
    ProtocolError,
    ServerAuthFailed,
    ServerError,
    SluiceError,
    TLSRequired,
)
from sluice.wire.pg import login as lg
from sluice.wire.pg import messages as m
from sluice.wire.pg.framing import MessageReader
from sluice.wire.pg.login import LoginClient, LoginServer
from sluice.wire.pg.md5 import md5_hash
from sluice.wire.pg.scram import ScramClient, ScramServer, make_verifier

USER, PASSWORD, DB = "app", "s3cret-ü", "appdb"
VERIFIER = make_verifier(PASSWORD, salt=b"0123456789abcdef", iterations=4096)
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
GSSENC_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x30"
STARTUP = b"\x00\x00\x00\x21\x00\x03\x00\x00user\x00app\x00database\x00appdb\x00\x00"
AUTH_OK = b"R\x00\x00\x00\x08\x00\x00\x00\x00"
AUTH_SASL = b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00"
READY = b"Z\x00\x00\x00\x05I"


def sqlstate_of(exc: pytest.ExceptionInfo[SluiceError]) -> str:
    return exc.value.sqlstate


# ---- LoginClient ------------------------------------------------------------------


def test_client_startup_and_tls_request_bytes() -> None:
    client = LoginClient(USER, PASSWORD, DB)
    assert client.startup() == STARTUP
    assert client.ssl_request() == SSL_REQUEST
    assert client.tls_answer(b"S", required=True) is True
    assert client.tls_answer(b"N", required=False) is False
    with pytest.raises(ServerError, match="does not accept TLS"):
        client.tls_answer(b"N", required=True)
    with pytest.raises(ProtocolError):
        client.tls_answer(b"E", required=False)


def test_client_cleartext_and_md5_answers() -> None:
    client = LoginClient(USER, "pw", DB)
    assert client.feed(b"R\x00\x00\x00\x08\x00\x00\x00\x03") == b"p\x00\x00\x00\x07pw\x00"
    salt = b"\x01\x02\x03\x04"
    inner = hashlib.md5(b"pw" + USER.encode()).hexdigest().encode()
    expected = b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\x00"
    answer = client.feed(b"R\x00\x00\x00\x0c\x00\x00\x00\x05" + salt)
    assert answer == b"p" + struct.pack("!I", 4 + len(expected)) + expected


def test_client_parameters_key_and_ready() -> None:
    client = LoginClient(USER, PASSWORD, DB)
    assert client.feed(AUTH_OK) is None
    assert client.feed(b"S\x00\x00\x00\x19server_version\x0016.4\x00") is None
    assert client.feed(m.notice_response("hello")) is None  # ignored
    assert client.feed(b"K\x00\x00\x00\x0c\x00\x00\x30\x39\x00\x00\x00\x2a") is None
    assert not client.ready
    assert client.feed(READY) is None
    assert client.ready
    assert client.params == {"server_version": "16.4"}
    assert client.key == (12345, 42)
    with pytest.raises(ProtocolError):
        client.feed(READY)


def test_client_scram_against_the_server_side() -> None:
    client = LoginClient(USER, PASSWORD, DB, nonce=b"clientnonce")
    server = ScramServer(VERIFIER, nonce=b"servernonce")
    first = client.feed(AUTH_SASL)
    assert first is not None
    assert first == b"p\x00\x00\x00\x29SCRAM-SHA-256\x00\x00\x00\x00\x13n,,n=,r=clientnonce"
    _, data = m.parse_sasl_initial(first[5:])
    final = client.feed(m.auth_request(m.AUTH_SASL_CONTINUE, server.handle_first(data)))
    assert final is not None and final[:1] == b"p"
    signature = server.handle_final(final[5:])
    assert client.feed(m.auth_request(m.AUTH_SASL_FINAL, signature)) is None
    assert client.feed(AUTH_OK) is None


def test_client_refuses_a_server_that_skips_its_scram_proof() -> None:
    client = LoginClient(USER, PASSWORD, DB)
    client.feed(AUTH_SASL)
    with pytest.raises(ServerAuthFailed):
        client.feed(AUTH_OK)


def test_client_refuses_a_wrong_server_signature() -> None:
    client = LoginClient(USER, PASSWORD, DB, nonce=b"clientnonce")
    first = client.feed(AUTH_SASL)
    assert first is not None
    server = ScramServer(make_verifier("other", salt=b"x" * 16), nonce=b"servernonce")
    _, data = m.parse_sasl_initial(first[5:])
    final = client.feed(m.auth_request(m.AUTH_SASL_CONTINUE, server.handle_first(data)))
    assert final is not None
    bogus = b"v=" + b"A" * 43 + b"="
    with pytest.raises(ServerAuthFailed):
        client.feed(m.auth_request(m.AUTH_SASL_FINAL, bogus))


@pytest.mark.parametrize(
    ("msg", "error", "sqlstate"),
    [
        (m.error_response("28P01", "password authentication failed"), ServerAuthFailed, "08004"),
        (m.error_response("28000", "no pg_hba.conf entry"), ServerAuthFailed, "08004"),
        (m.error_response("3D000", 'database "x" does not exist'), ServerError, "3D000"),
        (b"R\x00\x00\x00\x08\x00\x00\x00\x07", ServerAuthFailed, "08004"),  # GSSAPI
        (b"R\x00\x00\x00\x0f\x00\x00\x00\x0aOTHER\x00\x00", ServerAuthFailed, "08004"),
        (b"R\x00\x00\x00\x09\x00\x00\x00\x0bx", ServerAuthFailed, "08004"),  # CONTINUE first
        (b"R\x00\x00\x00\x06\x00\x00", ProtocolError, "08P01"),  # truncated code
        (b"R\x00\x00\x00\x0b\x00\x00\x00\x05abc", ProtocolError, "08P01"),  # md5, salt of 3
        (b"R\x00\x00\x00\x0d\x00\x00\x00\x05abcde", ProtocolError, "08P01"),  # md5, salt of 5
        (b"S\x00\x00\x00\x06a\x00", ProtocolError, "08P01"),  # not yet: still authenticating
        (b"R\x00\x00", ProtocolError, "08P01"),  # truncated header
    ],
)
def test_client_errors_during_authentication(
    msg: bytes, error: type[SluiceError], sqlstate: str
) -> None:
    with pytest.raises(error) as info:
        LoginClient(USER, PASSWORD, DB).feed(msg)
    assert type(info.value) is error and sqlstate_of(info) == sqlstate


@pytest.mark.parametrize(
    ("msg", "sqlstate"),
    [
        (m.error_response("57P03", "the database system is starting up", "FATAL"), "57P03"),
        (m.error_response("28P01", "late"), "28P01"),  # after AuthenticationOk: not our password
        (b"K\x00\x00\x00\x08\x00\x00\x00\x01", "08P01"),  # short BackendKeyData
        (b"S\x00\x00\x00\x08abc", "08P01"),  # unterminated ParameterStatus
    ],
)
def test_client_errors_after_authentication(msg: bytes, sqlstate: str) -> None:
    client = LoginClient(USER, PASSWORD, DB)
    client.feed(AUTH_OK)
    with pytest.raises(SluiceError) as info:
        client.feed(msg)
    assert not isinstance(info.value, ServerAuthFailed)
    assert sqlstate_of(info) == sqlstate


# ---- LoginServer: startup packets ---------------------------------------------------


def test_server_tls_negotiation() -> None:
    server = LoginServer(tls_offered=True)
    assert server.feed_startup(GSSENC_REQUEST) == lg.Reply(b"N")
    assert server.feed_startup(SSL_REQUEST) == lg.StartTLS(b"S")
    server.tls_started()
    with pytest.raises(ProtocolError, match="twice") as info:
        server.feed_startup(SSL_REQUEST)
    assert sqlstate_of(info) == "08P01"
    plain = LoginServer(tls_offered=False)
    assert plain.feed_startup(SSL_REQUEST) == lg.Reply(b"N")
    assert plain.feed_startup(SSL_REQUEST) == lg.Reply(b"N")  # not upgraded: asking again is fine
    assert not plain.tls


def test_server_refuses_plaintext_behind_an_ssl_request() -> None:
    with pytest.raises(ProtocolError, match="unencrypted data") as info:
        LoginServer(tls_offered=True).feed_startup(SSL_REQUEST, buffered=5)
    assert sqlstate_of(info) == "08P01"


def test_server_cancel_request() -> None:
    packet = b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\x00\x00\x00\x2a"
    assert LoginServer(tls_offered=True).feed_startup(packet) == lg.Cancel(12345, 42)


def test_server_startup_message() -> None:
    login = LoginServer(tls_offered=True).feed_startup(STARTUP)
    assert login == lg.Login(USER, DB, {"user": USER, "database": DB}, b"")
    no_db = b"\x00\x00\x00\x13\x00\x03\x00\x00user\x00bob\x00\x00"
    assert LoginServer(tls_offered=True).feed_startup(no_db) == lg.Login(
        "bob", "bob", {"user": "bob"}, b""
    )


def test_server_negotiates_newer_protocol_versions() -> None:
    body = b"\x00\x03\x00\x02user\x00app\x00_pq_.x\x00on\x00\x00"
    login = LoginServer(tls_offered=True).feed_startup(struct.pack("!I", 4 + len(body)) + body)
    assert isinstance(login, lg.Login)
    assert login.reply == b"v\x00\x00\x00\x13\x00\x00\x00\x00\x00\x00\x00\x01_pq_.x\x00"


@pytest.mark.parametrize(
    ("packet", "text"),
    [
        (b"\x00\x00\x00\x0d\x00\x03\x00\x00a\x00b\x00\x00", "no PostgreSQL user name"),
        (b"\x00\x00\x00\x0a\x00\x03\x00\x00\x00\x00", "malformed startup packet"),
        (b"\x00\x00\x00\x0e\x00\x03\x00\x00user\x00a", "unterminated string"),
        (b"\x00\x00\x00\x0f\x00\x03\x00\x00user\x00\xff\x00\x00", "UTF-8"),
        (b"\x00\x00\x00\x09\x00\x02\x00\x00\x00", "unsupported frontend protocol 2.0"),
        (b"\x00\x00\x00\x06\x00\x03", "too short"),
        (b"\x00\x00\x00\x0c\x04\xd2\x16\x2f\x00\x00\x00\x00", "unsupported frontend protocol"),
        (
            b"\x00\x00\x00\x22\x00\x03\x00\x00user\x00a\x00replication\x00true\x00\x00",
            "replication",
        ),
    ],
)
def test_server_malformed_startup_packets(packet: bytes, text: str) -> None:
    with pytest.raises(ProtocolError, match=text) as info:
        LoginServer(tls_offered=True).feed_startup(packet)
    assert sqlstate_of(info) == "08P01"


def test_startup_split_at_every_offset() -> None:
    """What a driver sees: the reader frames the stream, the machine decides."""
    stream = SSL_REQUEST + STARTUP
    for cut in range(len(stream) + 1):
        reader, server, steps = MessageReader(16384), LoginServer(tls_offered=False), []
        for chunk in (stream[:cut], stream[cut:]):
            reader.feed(chunk)
            while (packet := reader.next_startup()) is not None:
                steps.append(server.feed_startup(packet, reader.pending))
        assert steps == [lg.Reply(b"N"), lg.Login(USER, DB, {"user": USER, "database": DB}, b"")]


def test_an_oversized_startup_packet_is_refused_before_its_body() -> None:
    reader = MessageReader(16384)
    reader.feed(b"\x00\x01\x00\x00\x00\x03")
    with pytest.raises(ProtocolError) as info:
        reader.next_startup()
    assert sqlstate_of(info) == "08P01" and not isinstance(info.value, PacketTooLarge)


# ---- LoginServer: refusing ----------------------------------------------------------


def test_a_refused_client_is_told_after_its_startup_packet() -> None:
    server = LoginServer(tls_offered=True, refusing=True)
    assert server.feed_refused(SSL_REQUEST) == lg.Reply(b"N")  # never TLS for a refusal
    assert server.feed_refused(GSSENC_REQUEST) == lg.Reply(b"N")
    assert server.feed_refused(STARTUP) == lg.Refuse()
    with pytest.raises(RuntimeError):
        server.feed_refused(STARTUP)


@pytest.mark.parametrize(
    "packet",
    [
        STARTUP,
        b"\x00\x00\x00\x08\xff\xff\xff\xff",
        b"\x00\x00\x00\x10\x04\xd2\x16\x2e" + b"\x00" * 8,
    ],
    ids=["startup", "garbage", "cancel"],
)
def test_a_refused_client_gets_its_refusal_for_anything(packet: bytes) -> None:
    server = LoginServer(tls_offered=True, refusing=True)
    assert server.feed_refused(packet) == lg.Refuse()


def test_a_refused_client_cannot_negotiate_forever() -> None:
    server = LoginServer(tls_offered=True, refusing=True)
    steps = [server.feed_refused(SSL_REQUEST) for _ in range(3)]
    assert steps == [lg.Reply(b"N"), lg.Reply(b"N"), lg.Refuse()]
    assert LoginServer(tls_offered=False, refusing=True).refuse_now() == lg.Refuse()


# ---- LoginServer: authentication ------------------------------------------------------


def logged_in_server(tls: bool = False) -> LoginServer:
    server = LoginServer(tls_offered=True)
    if tls:
        server.feed_startup(SSL_REQUEST)
        server.tls_started()
    server.feed_startup(STARTUP)
    return server


def test_server_scram_exchange_bytes() -> None:
    server = logged_in_server()
    assert server.start_scram(VERIFIER, known=True, nonce=b"servernonce") == AUTH_SASL
    scram = ScramClient(USER, PASSWORD, nonce=b"clientnonce")
    first = m.sasl_initial_response("SCRAM-SHA-256", scram.client_first())
    cont = server.feed(first)
    assert isinstance(cont, bytes)
    assert cont == m.auth_request(
        m.AUTH_SASL_CONTINUE,
        b"r=clientnonceservernonce,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096",
    )
    proof = scram.handle_server_first(cont[9:])
    assert server.feed(m.password_message(proof)) == lg.Password(proof)
    final = server.verify()
    assert final[:9] == b"R\x00\x00\x00\x36\x00\x00\x00\x0c"
    scram.verify_server_final(final[9:])


def _scram_proof(server: LoginServer, password: str) -> None:
    server.start_scram(VERIFIER, known=True)
    scram = ScramClient(USER, password)
    cont = server.feed(m.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
    assert isinstance(cont, bytes)
    server.feed(m.password_message(scram.handle_server_first(cont[9:])))


def test_server_scram_wrong_password_and_unknown_user() -> None:
    server = logged_in_server()
    _scram_proof(server, "wrong")
    with pytest.raises(AuthFailed) as info:
        server.verify()
    assert sqlstate_of(info) == "28P01"
    decoy = logged_in_server()
    decoy.start_scram(VERIFIER, known=False)
    scram = ScramClient(USER, PASSWORD)
    cont = decoy.feed(m.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
    assert isinstance(cont, bytes)
    decoy.feed(m.password_message(scram.handle_server_first(cont[9:])))
    with pytest.raises(AuthFailed):
        decoy.verify()  # even the right proof: the user does not exist


@pytest.mark.parametrize(
    ("msg", "error", "sqlstate"),
    [
        (m.query("select 1"), ProtocolError, "08P01"),  # not a password message
        (b"p\x00\x00\x00\x04", ProtocolError, "08P01"),  # empty SASLInitialResponse
        (b"p\x00\x00\x00\x0cSCRAM-SHA", ProtocolError, "08P01"),  # unterminated mechanism
        (b"p\x00\x00\x00\x13SCRAM-SHA-256\x00\x00\x00", ProtocolError, "08P01"),  # short length
        (m.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=\x01"), ProtocolError, "08P01"),
        (m.sasl_initial_response("SCRAM-SHA-256", b"garbage"), ProtocolError, "08P01"),
        (m.sasl_initial_response("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=x"),
         AuthFailed, "28P01"),
        (m.sasl_initial_response("SCRAM-SHA-256", b"p=tls-server-end-point,,n=,r=x"),
         ProtocolError, "08P01"),
        (b"p\x00", ProtocolError, "08P01"),  # truncated header
    ],
)  # fmt: skip
def test_server_malformed_sasl_messages(
    msg: bytes, error: type[SluiceError], sqlstate: str
) -> None:
    server = logged_in_server()
    server.start_scram(VERIFIER, known=True)
    with pytest.raises(error) as info:
        server.feed(msg)
    assert sqlstate_of(info) == sqlstate


def test_server_md5_exchange_bytes() -> None:
    stored = md5_hash(USER, PASSWORD)
    salt = b"\x01\x02\x03\x04"
    server = logged_in_server()
    assert server.start_md5(stored, salt) == b"R\x00\x00\x00\x0c\x00\x00\x00\x05" + salt
    inner = hashlib.md5(PASSWORD.encode() + USER.encode()).hexdigest().encode()
    answer = b"md5" + hashlib.md5(inner + salt).hexdigest().encode()
    assert server.feed(m.password_message(answer + b"\x00")) == lg.Password(answer)
    assert server.verify() == b""
    wrong = logged_in_server()
    wrong.start_md5(stored, salt)
    wrong.feed(m.password_message(b"md5" + b"0" * 32 + b"\x00"))
    with pytest.raises(AuthFailed):
        wrong.verify()
    unknown = logged_in_server()
    unknown.start_md5(None, salt)
    unknown.feed(m.password_message(answer + b"\x00"))
    with pytest.raises(AuthFailed):
        unknown.verify()


def test_server_cleartext_needs_tls() -> None:
    with pytest.raises(TLSRequired) as info:
        logged_in_server().start_cleartext()
    assert sqlstate_of(info) == "28000"
    server = logged_in_server(tls=True)
    assert server.start_cleartext() == b"R\x00\x00\x00\x08\x00\x00\x00\x03"
    assert server.cleartext
    assert server.feed(b"p\x00\x00\x00\x07pw\x00") == lg.Password(b"pw")
    with pytest.raises(AuthFailed):
        server.verify(cleartext_ok=False)
    empty = logged_in_server(tls=True)
    empty.start_cleartext()
    assert empty.feed(b"p\x00\x00\x00\x05\x00") == lg.Password(b"")
    assert empty.verify(cleartext_ok=True) == b""


def test_server_illegal_moves_raise() -> None:
    with pytest.raises(RuntimeError):
        LoginServer(tls_offered=True).start_scram(VERIFIER, known=True)  # no startup yet
    server = logged_in_server()
    with pytest.raises(ProtocolError):
        server.feed(m.password_message(b"x\x00"))  # no exchange started
    with pytest.raises(RuntimeError):
        server.verify()
    with pytest.raises(RuntimeError):
        server.greeting({}, {}, (1, 2))
    server.start_md5(None)
    with pytest.raises(RuntimeError):
        server.start_scram(VERIFIER, known=True)
    server.feed(m.password_message(b"x\x00"))
    with pytest.raises(ProtocolError):
        server.feed(m.password_message(b"x\x00"))  # one answer only


def test_server_greeting_bytes() -> None:
    server = logged_in_server(tls=True)
    server.start_cleartext()
    server.feed(b"p\x00\x00\x00\x07pw\x00")
    server.verify(cleartext_ok=True)
    defaults = {"TimeZone": "UTC", "application_name": ""}
    shown = {"timezone": "Europe/Paris", "application_name": "", "search_path": "a"}
    greeting = server.greeting(defaults, shown, (7, 9))
    assert greeting.data == (
        AUTH_OK
        + b"S\x00\x00\x00\x1aTimeZone\x00Europe/Paris\x00"
        + b"S\x00\x00\x00\x16application_name\x00\x00"
        + b"K\x00\x00\x00\x0c\x00\x00\x00\x07\x00\x00\x00\x09"
        + READY
    )
    assert greeting.settings == (
        ("timezone", "Europe/Paris", False),
        ("application_name", "", True),
        ("search_path", "a", False),
    )


# ---- both sides, wired together -------------------------------------------------------


@pytest.mark.parametrize("method", ["scram", "md5", "cleartext"])
def test_client_and_server_log_in_together(method: str) -> None:
    client = LoginClient(USER, PASSWORD, DB)
    server = LoginServer(tls_offered=True)
    assert server.feed_startup(client.ssl_request()) == lg.StartTLS()
    assert client.tls_answer(b"S", required=True)
    server.tls_started()
    login = server.feed_startup(client.startup())
    assert isinstance(login, lg.Login) and (login.user, login.database) == (USER, DB)
    if method == "scram":
        to_client = server.start_scram(VERIFIER, known=True)
    elif method == "md5":
        to_client = server.start_md5(md5_hash(USER, PASSWORD))
    else:
        to_client = server.start_cleartext()
    while True:
        to_server = client.feed(to_client)
        assert to_server is not None
        step = server.feed(to_server)
        if isinstance(step, lg.Password):
            break
        to_client = step
    ok = server.cleartext and step.data == PASSWORD.encode()
    final = server.verify(cleartext_ok=ok)
    if final:
        assert client.feed(final) is None
    greeting = server.greeting({"server_version": "16.4"}, {}, (5, 6))
    reader = MessageReader(16384)
    reader.feed(greeting.data)
    while (msg := reader.next()) is not None:
        assert client.feed(msg) is None
    assert client.ready and client.params == {"server_version": "16.4"} and client.key == (5, 6)
