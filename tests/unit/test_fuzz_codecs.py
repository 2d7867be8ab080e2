"""Property-based fuzzing of the sans-IO codecs: any bytes parse, or raise ProtocolError.

Every reader of bytes a peer controls (framing, startup and handshake packets,
the login exchanges, command decoding, the reply trackers, the SQL classifiers)
is fed random and mutated input. A parser must return, or raise the project's
`ProtocolError`; a state machine of the login may also refuse with its typed
errors (`SluiceError`: a wrong password, TLS required), never with anything
else (IndexError, struct.error, UnicodeError...). Hypothesis' deadline catches
a parser that hangs or goes quadratic. The number of examples is bounded so
`make test` stays quick; SLUICE_FUZZ_EXAMPLES multiplies it for a longer hunt.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fuzzing import chunks, examples, noise, sequences
from sluice.errors import ProtocolError, SluiceError
from sluice.wire.mysql import auth as my_auth
from sluice.wire.mysql import commands as my_cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import handshake as my_hs
from sluice.wire.mysql import messages as my_msg
from sluice.wire.mysql import packets as my_packets
from sluice.wire.mysql import replies as my_replies
from sluice.wire.mysql import sql as my_sql
from sluice.wire.mysql.login import LoginClient, LoginServer
from sluice.wire.pg import login as pg_login
from sluice.wire.pg import messages as m
from sluice.wire.pg import responses as r
from sluice.wire.pg import scram
from sluice.wire.pg import sql as pg_sql
from sluice.wire.pg.framing import MessageReader

FUZZ = settings(
    max_examples=examples(150),
    deadline=timedelta(milliseconds=500),
    database=None,  # nothing written to the work tree
    suppress_health_check=[HealthCheck.too_slow],
)
MAX = 64 * 1024


def parses_or_refuses(fn: Callable[[], Any], allowed: type[Exception] = ProtocolError) -> None:
    """Run `fn`; only `allowed` may escape it (anything else fails the property)."""
    with contextlib.suppress(allowed):
        fn()


# ---------------------------------------------------------------- PostgreSQL

PG_STARTUP = [
    m.startup_message({"user": "app", "database": "appdb", "application_name": "x"}),
    m.ssl_request(),
    m.cancel_request(1234, 5678),
    struct.pack("!II", 8, 80877104),  # GSSENCRequest
]
PG_CLIENT = [
    m.query("select 1"),
    m.parse(b"s1", b"select $1\x00\x00\x01\x00\x00\x00\x17"),
    m.message(b"B", b"\x00s1\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00"),
    m.message(b"E", b"\x00\x00\x00\x00\x00"),
    m.message(b"S"),
    m.password_message(b"secret\x00"),
    m.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abcdef"),
]
PG_SERVER = [
    m.row_description(["a", "b"]),
    m.data_row(["1", None]),
    m.command_complete("SELECT 1"),
    m.error_response("42601", "syntax error"),
    m.error_response("57P01", "terminating connection", severity="FATAL"),
    m.READY_IDLE,
    m.READY_IN_TXN,
    m.parameter_status("TimeZone", "UTC"),
    m.PARSE_COMPLETE,
    m.CLOSE_COMPLETE,
    m.message(b"2"),
    m.message(b"n"),
    m.message(b"t", b"\x00\x01\x00\x00\x00\x17"),
    m.message(b"t", b"\x00\x01\x00\x00\x00\x17"),
]
PG_REQUESTS = [
    r.PARSE, r.BIND, r.DESCRIBE_STMT, r.EXECUTE, r.CLOSE, r.SYNC, r.QUERY, r.FUNCTION,
    r.PARSE_SKIP, r.PARSE_FAKE, r.CLOSE_SKIP, r.CLOSE_FAKE, r.QUERY_SKIP, r.REPLAY,
    r.QUERY_CHECK, r.STALE,
]  # fmt: skip


@FUZZ
@given(stream=noise([b"".join(PG_CLIENT), *PG_CLIENT]), cuts=st.lists(st.integers(0, 400)))
def test_pg_message_reader(stream: bytes, cuts: list[int]) -> None:
    reader = MessageReader(MAX)

    def read_all() -> None:
        for piece in chunks(stream, cuts):
            reader.feed(piece)
            while (msg := reader.next()) is not None:
                assert len(msg) >= 5
        assert reader.pending < 5 or len(stream) > 0

    parses_or_refuses(read_all)


@FUZZ
@given(packet=noise(PG_STARTUP))
def test_pg_startup_packet(packet: bytes) -> None:
    reader = MessageReader(MAX)
    reader.feed(packet)

    def parse() -> None:
        whole = reader.next_startup()
        if whole is not None:
            m.parse_startup(whole)
        m.parse_startup(packet)  # as it came, whatever its length field says

    parses_or_refuses(parse)


@FUZZ
@given(body=noise([b[5:] for b in PG_CLIENT + PG_SERVER]))
@example(body=b"\x80")  # a mechanism name not UTF-8 (UnicodeDecodeError)
def test_pg_message_bodies(body: bytes) -> None:
    for parse in (
        m.parse_error_fields,
        m.parse_auth,
        m.parse_sasl_initial,
        m.parse_data_row,
        m.parse_parameter_status,
        m.parse_backend_key,
        m.parse_sasl_mechanisms,
    ):
        parses_or_refuses(lambda p=parse: p(body))  # type: ignore[misc]


VERIFIER = scram.make_verifier("secret", salt=b"0123456789abcdef", iterations=4096)


@FUZZ
@given(
    first=noise([b"n,,n=,r=rOprNGfwEbeRWgbNEkqO", b"y,,n=app,r=abc", b"p=x,,n=,r=1"]),
    final=noise([b"c=biws,r=rOprNGfwEbeRWgbNEkqOserver,p=" + b"A" * 44]),
)
def test_pg_scram_server(first: bytes, final: bytes) -> None:
    server = scram.ScramServer(VERIFIER, nonce=b"server")

    def exchange() -> None:
        server.handle_first(first)
        server.handle_final(final)

    parses_or_refuses(exchange, SluiceError)  # a wrong proof is AuthFailed


PG_LOGIN_STARTUP = m.ssl_request() + m.startup_message({"user": "app", "database": "appdb"})
PG_LOGIN_CLIENT = m.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc") + m.password_message(
    b"c=biws,r=abcserver,p=" + b"A" * 44
)


@FUZZ
@given(
    startup=noise([PG_LOGIN_STARTUP]),
    stream=noise([PG_LOGIN_CLIENT]),
    method=st.sampled_from(["scram", "md5", "cleartext"]),
    refusing=st.booleans(),
)
def test_pg_login_server(startup: bytes, stream: bytes, method: str, refusing: bool) -> None:
    """A client's login, as Sluice reads it: startup packets, then its password messages."""
    login = pg_login.LoginServer(tls_offered=False, refusing=refusing)
    reader = MessageReader(MAX)

    def run() -> None:
        reader.feed(startup)
        while (packet := reader.next_startup()) is not None:
            if refusing:
                if isinstance(login.feed_refused(packet), pg_login.Refuse):
                    return
            elif isinstance(login.feed_startup(packet, reader.pending), pg_login.Login):
                break
        else:
            return
        if method == "scram":
            login.start_scram(VERIFIER, known=True, nonce=b"server")
        elif method == "md5":
            login.start_md5("md5" + "0" * 32)
        else:
            login.start_cleartext()  # (TLSRequired: no TLS here)
        reader.feed(stream)
        while (msg := reader.next()) is not None:
            if isinstance(login.feed(msg), pg_login.Password):
                login.verify()

    parses_or_refuses(run, SluiceError)


PG_LOGIN_SERVER = [
    m.auth_request(m.AUTH_CLEARTEXT),
    m.auth_request(m.AUTH_MD5, b"salt"),
    m.auth_sasl(("SCRAM-SHA-256",)),
    m.auth_request(m.AUTH_SASL_CONTINUE, b"r=clientnonceserver,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1"),
    m.auth_request(m.AUTH_SASL_FINAL, b"v=" + b"A" * 44),
    m.auth_request(m.AUTH_OK),
    m.parameter_status("TimeZone", "UTC"),
    m.backend_key_data(1, 2),
    m.error_response("28P01", "password authentication failed", "FATAL"),
    m.READY_IDLE,
]


@FUZZ
@given(stream=sequences(PG_LOGIN_SERVER), cuts=st.lists(st.integers(0, 400)))
def test_pg_login_client(stream: bytes, cuts: list[int]) -> None:
    """Sluice logging in to a server that answers anything."""
    login = pg_login.LoginClient("app", "secret", "appdb", nonce=b"clientnonce")
    reader = MessageReader(MAX)

    def run() -> None:
        for piece in chunks(stream, cuts):
            reader.feed(piece)
            while not login.ready and (msg := reader.next()) is not None:
                login.feed(msg)

    parses_or_refuses(run, SluiceError)


@FUZZ
@given(
    first=noise([b"r=clientnonceserver,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096"]),
    final=noise([b"v=" + b"A" * 44, b"e=invalid-proof"]),
)
def test_pg_scram_client(first: bytes, final: bytes) -> None:
    client = scram.ScramClient("app", "secret", nonce=b"clientnonce")
    client.client_first()

    def exchange() -> None:
        client.handle_server_first(first)
        client.verify_server_final(final)

    parses_or_refuses(exchange, SluiceError)


@FUZZ
@given(
    queue=st.lists(st.sampled_from(PG_REQUESTS), max_size=6),
    stream=noise([b"".join(PG_SERVER), *PG_SERVER]),
    cuts=st.lists(st.integers(0, 400)),
)
def test_pg_response_tracker(queue: list[int], stream: bytes, cuts: list[int]) -> None:
    tracker = r.ResponseTracker(MAX)
    for kind in queue:
        if kind == r.PARSE:
            tracker.push_parse(kind, b"s1")
        elif kind == r.PARSE_SKIP:  # as the proxy sends it: with its DESCRIBE_CHECK
            tracker.push_prepare(kind, b"s1", 0)
        elif kind == r.STALE:
            tracker.push_stale(r.STALE_ERROR)
        elif kind == r.CLOSE_SKIP:  # as the proxy injects it: of a statement it has
            tracker.prepared[b"s1"] = r.Prepared(0)
            tracker.push_close(b"s1")
        else:
            tracker.push(kind)

    def feed() -> None:
        for piece in chunks(stream, cuts):
            tracker.feed(piece)

    parses_or_refuses(feed)


@FUZZ
@given(sql=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_pg_sql_classifier(sql: bytes) -> None:
    pg_sql.classify_bytes(sql)  # any text has an effect (perhaps "opaque"), never an error
    pg_sql.savepoint_changes(sql)


# ---------------------------------------------------------------- MySQL

CAPS = c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_PLUGIN_AUTH
MY_RESPONSE = my_hs.build_handshake_response(
    my_hs.HandshakeResponse(
        capabilities=CAPS | c.CLIENT_CONNECT_WITH_DB | c.CLIENT_CONNECT_ATTRS,
        user="app",
        auth_response=b"\x01" * 20,
        database="appdb",
        auth_plugin=c.NATIVE_PASSWORD,
        attributes={"_client_name": "fuzz"},
        charset=c.UTF8MB4_GENERAL_CI,
    )
)
MY_GREETING = my_hs.build_handshake(
    my_hs.Handshake(
        server_version="10.11.0-MariaDB",
        connection_id=7,
        scramble=b"s" * 20,
        capabilities=c.SUPPORTED_CAPABILITIES,
        charset=c.UTF8MB4_GENERAL_CI,
        status=c.SERVER_STATUS_AUTOCOMMIT,
        auth_plugin=c.NATIVE_PASSWORD,
    )
)
MY_COMMANDS = [
    my_cmd.query("select 1"),
    my_cmd.stmt_prepare("select ?"),
    bytes((c.COM_STMT_EXECUTE,)) + b"\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x08\x00" + b"1",
    my_cmd.stmt_close(1),
    my_cmd.init_db("appdb"),
    bytes((c.COM_CHANGE_USER,)) + b"app\x00\x14" + b"\x01" * 20 + b"appdb\x00\x2d\x00",
]
MY_REPLIES = [
    my_msg.build_ok(my_msg.OkPacket(affected_rows=1, last_insert_id=5, status=3)),
    my_msg.build_err(c.ER_UNKNOWN_ERROR, "boom"),
    my_msg.build_eof(c.SERVER_STATUS_IN_TRANS),
    b"\x01",  # column count
    b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x01\x00\x00\x00\x08\x00\x00\x00\x00\x00",
    b"\x011",  # a text row
    my_cmd.build_prepare_ok(my_cmd.PrepareOk(1, 1, 1)),
    my_msg.build_local_infile(b"/tmp/x"),
    b"\xfe" + b"mysql_native_password\x00" + b"n" * 20,
]


@FUZZ
@given(
    stream=noise([b"".join(my_packets.frame(p, i) for i, p in enumerate(MY_COMMANDS))]),
    cuts=st.lists(st.integers(0, 400)),
)
def test_mysql_packet_reader(stream: bytes, cuts: list[int]) -> None:
    reader = my_packets.PacketReader(MAX)

    def read_all() -> None:
        for piece in chunks(stream, cuts):
            reader.feed(piece)
            while reader.next() is not None:
                pass

    parses_or_refuses(read_all)


@FUZZ
@given(payload=noise([MY_RESPONSE, my_hs.build_ssl_request(CAPS | c.CLIENT_SSL, 1 << 24, 45)]))
def test_mysql_handshake_response(payload: bytes) -> None:
    parses_or_refuses(lambda: my_hs.parse_handshake_response(payload))


@FUZZ
@given(payload=noise([MY_GREETING]))
def test_mysql_greeting(payload: bytes) -> None:
    parses_or_refuses(lambda: my_hs.parse_handshake(payload))


@FUZZ
@given(payload=noise(MY_COMMANDS), params=st.integers(0, 70), caps=st.sampled_from([0, CAPS]))
def test_mysql_command_fields(payload: bytes, params: int, caps: int) -> None:
    parses_or_refuses(lambda: my_cmd.parse_execute(payload, params))
    parses_or_refuses(lambda: my_cmd.parse_change_user(payload, caps))
    parses_or_refuses(lambda: my_cmd.stmt_id(payload))
    parses_or_refuses(lambda: my_cmd.with_stmt_id(payload, 9))
    parses_or_refuses(lambda: my_cmd.parse_prepare_ok(payload))


@FUZZ
@given(payload=noise(MY_REPLIES))
@example(payload=b"")  # ok_insert_id read past a short packet (IndexError)
@example(payload=b"\x00\x01")
def test_mysql_reply_packets(payload: bytes) -> None:
    for parse in (
        my_msg.parse_ok,
        my_msg.parse_err,
        my_msg.parse_eof,
        my_msg.ok_status,
        my_msg.ok_insert_id,
        my_msg.parse_local_infile,
        my_msg.session_changes,
        my_hs.parse_auth_switch,
        my_hs.parse_auth_more_data,
        my_auth.parse_clear,
    ):
        parses_or_refuses(lambda p=parse: p(payload))  # type: ignore[misc]
    parses_or_refuses(lambda: my_packets.read_lenenc_str(payload, 0))
    parses_or_refuses(lambda: my_packets.read_nul_str(payload, 0))


@FUZZ
@given(
    commands=st.lists(st.integers(0, 0x20), min_size=1, max_size=4),
    packets=st.lists(noise(MY_REPLIES), max_size=12),
    deprecate_eof=st.booleans(),
)
def test_mysql_reply_tracker(
    commands: list[int], packets: list[bytes], deprecate_eof: bool
) -> None:
    tracker = my_replies.ReplyTracker(c.CLIENT_DEPRECATE_EOF if deprecate_eof else 0)
    for command in commands:
        if command not in my_replies.NOT_RELAYED:
            tracker.expect(command, own=command % 2 == 0)

    def feed() -> None:
        for payload in packets:
            tracker.feed(payload)

    parses_or_refuses(feed)


@FUZZ
@given(
    plugin=st.sampled_from([c.NATIVE_PASSWORD, c.CACHING_SHA2_PASSWORD, c.CLEAR_PASSWORD]),
    response=noise([MY_RESPONSE]),
    answers=st.lists(noise([b"\x01" * 32, my_auth.REQUEST_PUBLIC_KEY, b"pw\x00"]), max_size=3),
    tls=st.booleans(),
)
def test_mysql_login_server(plugin: str, response: bytes, answers: list[bytes], tls: bool) -> None:
    login = LoginServer(plugin, b"s" * 20, tls=tls)

    def exchange() -> None:
        parsed = my_hs.parse_handshake_response(response)
        if isinstance(parsed, my_hs.HandshakeResponse):
            login.start(parsed)
        for answer in answers:
            login.feed(answer)
        login.full()

    parses_or_refuses(exchange, SluiceError)


@FUZZ
@given(greeting=noise([MY_GREETING]), answers=st.lists(noise(MY_REPLIES), max_size=3))
def test_mysql_login_client(greeting: bytes, answers: list[bytes]) -> None:
    login = LoginClient("app", "secret", tls=True)

    def exchange() -> None:
        login.greet(greeting)
        login.response()
        for answer in answers:
            login.feed(answer)

    parses_or_refuses(exchange, SluiceError)


@FUZZ
@given(sql=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_mysql_sql_classifier(sql: bytes) -> None:
    my_sql.classify_bytes(sql)
