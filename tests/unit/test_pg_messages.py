"""PostgreSQL message builders and parsers on exact bytes.

Each table pairs a call with the bytes the protocol documentation prescribes,
written out by hand (type byte, int32 length counting itself, body), so a
builder that drifts by one byte fails here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import ProtocolError
from sluice.wire.pg import messages as m


def _i32(n: int) -> bytes:
    return struct.pack("!i", n)


BUILDERS: list[tuple[Callable[[], bytes], bytes]] = [
    (
        lambda: m.error_response("28P01", "bad password"),
        b"E\x00\x00\x00\x28SERROR\x00VERROR\x00C28P01\x00Mbad password\x00\x00",
    ),
    (
        lambda: m.error_response("57P01", "bye", severity="FATAL", detail="why"),
        b"E\x00\x00\x00\x24SFATAL\x00VFATAL\x00C57P01\x00Mbye\x00Dwhy\x00\x00",
    ),
    (
        lambda: m.notice_response("hi"),
        b"N\x00\x00\x00\x20SNOTICE\x00VNOTICE\x00C00000\x00Mhi\x00\x00",
    ),
    (lambda: m.auth_request(m.AUTH_OK), b"R\x00\x00\x00\x08\x00\x00\x00\x00"),
    (lambda: m.auth_request(m.AUTH_CLEARTEXT), b"R\x00\x00\x00\x08\x00\x00\x00\x03"),
    (
        lambda: m.auth_request(m.AUTH_MD5, b"\x01\x02\x03\x04"),
        b"R\x00\x00\x00\x0c\x00\x00\x00\x05\x01\x02\x03\x04",
    ),
    (
        lambda: m.auth_sasl(("SCRAM-SHA-256",)),
        b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00",
    ),
    (
        lambda: m.auth_sasl(("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")),
        b"R\x00\x00\x00\x2a\x00\x00\x00\x0aSCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00",
    ),
    (
        lambda: m.auth_request(m.AUTH_SASL_CONTINUE, b"r=abc"),
        b"R\x00\x00\x00\x0d\x00\x00\x00\x0br=abc",
    ),
    (
        lambda: m.auth_request(m.AUTH_SASL_FINAL, b"v=xyz"),
        b"R\x00\x00\x00\x0d\x00\x00\x00\x0cv=xyz",
    ),
    (
        lambda: m.parameter_status("TimeZone", "UTC"),
        b"S\x00\x00\x00\x11TimeZone\x00UTC\x00",
    ),
    (lambda: m.parameter_status("x", ""), b"S\x00\x00\x00\x07x\x00\x00"),
    (
        lambda: m.backend_key_data(1234, 0xDEADBEEF),
        b"K\x00\x00\x00\x0c\x00\x00\x04\xd2\xde\xad\xbe\xef",
    ),
    (lambda: m.ready_for_query(b"I"), b"Z\x00\x00\x00\x05I"),
    (lambda: m.ready_for_query(b"T"), b"Z\x00\x00\x00\x05T"),
    (lambda: m.ready_for_query(b"E"), b"Z\x00\x00\x00\x05E"),
    (lambda: m.command_complete("SELECT 1"), b"C\x00\x00\x00\x0dSELECT 1\x00"),
    (
        lambda: m.startup_message({"user": "bob", "database": "db"}),
        b"\x00\x00\x00\x1e\x00\x03\x00\x00user\x00bob\x00database\x00db\x00\x00",
    ),
    (lambda: m.startup_message({}), b"\x00\x00\x00\x09\x00\x03\x00\x00\x00"),
    (lambda: m.ssl_request(), b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
    (
        lambda: m.cancel_request(1234, 0xDEADBEEF),
        b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x04\xd2\xde\xad\xbe\xef",
    ),
    (lambda: m.password_message(b"secret\x00"), b"p\x00\x00\x00\x0bsecret\x00"),
    (
        lambda: m.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=x"),
        b"p\x00\x00\x00\x1fSCRAM-SHA-256\x00\x00\x00\x00\x09n,,n=,r=x",
    ),
    (lambda: m.query("SELECT 1"), b"Q\x00\x00\x00\x0dSELECT 1\x00"),
    (lambda: m.query(""), b"Q\x00\x00\x00\x05\x00"),
    (
        lambda: m.parse(b"s1", b"SELECT $1\x00\x00\x01\x00\x00\x00\x17"),
        b"P\x00\x00\x00\x17s1\x00SELECT $1\x00\x00\x01\x00\x00\x00\x17",
    ),
    (lambda: m.close_statement(b"s1"), b"C\x00\x00\x00\x08Ss1\x00"),
    (lambda: m.message(b"H"), b"H\x00\x00\x00\x04"),
    (
        lambda: m.row_description(["a"]),
        b"T\x00\x00\x00\x1a\x00\x01a\x00"
        b"\x00\x00\x00\x00"  # table oid
        b"\x00\x00"  # column number
        b"\x00\x00\x00\x19"  # type oid 25 (text)
        b"\xff\xff"  # type size -1
        b"\xff\xff\xff\xff"  # type modifier -1
        b"\x00\x00",  # text format
    ),
    (
        lambda: m.row_description(["ab", "c"]),
        b"T\x00\x00\x00\x2f\x00\x02"
        + b"ab\x00"
        + b"\x00" * 6
        + b"\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00"
        + b"c\x00"
        + b"\x00" * 6
        + b"\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00",
    ),
    (lambda: m.row_description([]), b"T\x00\x00\x00\x06\x00\x00"),
    (
        lambda: m.data_row(["1", None, "", "\u00e9"]),
        b"D\x00\x00\x00\x19\x00\x04"
        b"\x00\x00\x00\x011"
        b"\xff\xff\xff\xff"
        b"\x00\x00\x00\x00"
        b"\x00\x00\x00\x02\xc3\xa9",
    ),
    (lambda: m.data_row([]), b"D\x00\x00\x00\x06\x00\x00"),
]


@pytest.mark.parametrize(("build", "expected"), BUILDERS)
def test_builder_exact_bytes(build: Callable[[], bytes], expected: bytes) -> None:
    assert build() == expected


def test_builder_lengths_are_consistent() -> None:
    for build, _ in BUILDERS:
        data = build()
        if data[0] == 0:  # startup packet: no type byte
            assert struct.unpack_from("!I", data)[0] == len(data)
        else:
            assert struct.unpack_from("!I", data, 1)[0] == len(data) - 1


def test_constants_match_builders() -> None:
    assert m.ready_for_query(b"I") == m.READY_IDLE
    assert m.ready_for_query(b"T") == m.READY_IN_TXN
    assert m.ready_for_query(b"E") == m.READY_FAILED
    assert m.message(b"1") == m.PARSE_COMPLETE
    assert m.message(b"3") == m.CLOSE_COMPLETE
    assert m.message(b"S") == m.SYNC
    assert m.message(b"X") == m.TERMINATE


# ---- startup packets ----------------------------------------------------------------------


def _packet(body: bytes) -> bytes:
    return _i32(len(body) + 4) + body


STARTUPS: list[tuple[bytes, m.StartupPacket]] = [
    (
        b"\x00\x00\x00\x1e\x00\x03\x00\x00user\x00bob\x00database\x00db\x00\x00",
        m.Startup({"user": "bob", "database": "db"}),
    ),
    (b"\x00\x00\x00\x09\x00\x03\x00\x00\x00", m.Startup({})),
    (
        _packet(b"\x00\x03\x00\x00user\x00\xc3\xa9\x00options\x00\x00\x00"),
        m.Startup({"user": "\u00e9", "options": ""}),
    ),
    # a 3.x minor version is accepted and kept (the proxy negotiates it down)
    (_packet(b"\x00\x03\x00\x02user\x00u\x00\x00"), m.Startup({"user": "u"}, minor=2)),
    (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", m.SSLRequest()),
    (b"\x00\x00\x00\x08\x04\xd2\x16\x30", m.GSSENCRequest()),
    (
        b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x04\xd2\xde\xad\xbe\xef",
        m.CancelRequest(1234, 0xDEADBEEF),
    ),
]


@pytest.mark.parametrize(("packet", "expected"), STARTUPS)
def test_parse_startup(packet: bytes, expected: m.StartupPacket) -> None:
    assert m.parse_startup(packet) == expected


def test_startup_round_trip() -> None:
    params = {"user": "app", "database": "appdb", "application_name": "x y", "options": "-c a=b"}
    assert m.parse_startup(m.startup_message(params)) == m.Startup(params)
    assert m.parse_startup(m.ssl_request()) == m.SSLRequest()
    assert m.parse_startup(m.cancel_request(7, 9)) == m.CancelRequest(7, 9)


BAD_STARTUPS: list[tuple[bytes, str]] = [
    (b"", "too short"),
    (b"\x00\x00\x00\x07\x00\x03\x00", "too short"),
    # protocol 2.0 and a made-up 4.0
    (_packet(b"\x00\x02\x00\x00user\x00u\x00\x00"), "unsupported frontend protocol 2.0"),
    (_packet(b"\x00\x04\x00\x00user\x00u\x00\x00"), "unsupported frontend protocol 4.0"),
    # an SSLRequest / CancelRequest code with the wrong length is not one
    (_packet(b"\x04\xd2\x16\x2f\x00"), "unsupported frontend protocol 1234.5679"),
    (_packet(b"\x04\xd2\x16\x2e\x00\x00\x00\x01"), "unsupported frontend protocol"),
    # parameters: no final NUL, key without value, unterminated value, trailing bytes
    (_packet(b"\x00\x03\x00\x00"), "malformed startup packet"),
    (_packet(b"\x00\x03\x00\x00user\x00bob\x00"), "malformed startup packet"),
    (_packet(b"\x00\x03\x00\x00user\x00"), "unterminated string"),
    (_packet(b"\x00\x03\x00\x00user"), "unterminated string"),
    (_packet(b"\x00\x03\x00\x00user\x00bob"), "unterminated string"),
    (_packet(b"\x00\x03\x00\x00user\x00bob\x00\x00junk"), "malformed startup packet"),
    (_packet(b"\x00\x03\x00\x00user\x00\xff\xfe\x00\x00"), "must be UTF-8"),
]


@pytest.mark.parametrize(("packet", "message"), BAD_STARTUPS)
def test_parse_startup_rejects(packet: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        m.parse_startup(packet)


# ---- other parsers ----------------------------------------------------------------------------

ERROR_FIELDS: list[tuple[bytes, dict[str, str]]] = [
    (
        b'SERROR\x00VERROR\x00C42P01\x00Mrelation "t" does not exist\x00P15\x00\x00',
        {"S": "ERROR", "V": "ERROR", "C": "42P01", "M": 'relation "t" does not exist', "P": "15"},
    ),
    (b"\x00", {}),
    (b"", {}),
    (b"Mno final nul\x00", {"M": "no final nul"}),
    (b"M\xff\x00\x00", {"M": "\ufffd"}),
]


@pytest.mark.parametrize(("body", "expected"), ERROR_FIELDS)
def test_parse_error_fields(body: bytes, expected: dict[str, str]) -> None:
    assert m.parse_error_fields(body) == expected


def test_parse_error_fields_of_built_error() -> None:
    built = m.error_response("53300", "too many", detail="d")
    assert m.parse_error_fields(built[5:]) == {
        "S": "ERROR",
        "V": "ERROR",
        "C": "53300",
        "M": "too many",
        "D": "d",
    }


def test_parse_error_fields_unterminated() -> None:
    with pytest.raises(ProtocolError, match="unterminated"):
        m.parse_error_fields(b"SERROR\x00Mhalf")


SASL_INITIAL: list[tuple[bytes, tuple[str, bytes]]] = [
    (b"SCRAM-SHA-256\x00\x00\x00\x00\x09n,,n=,r=x", ("SCRAM-SHA-256", b"n,,n=,r=x")),
    (b"SCRAM-SHA-256\x00\x00\x00\x00\x00", ("SCRAM-SHA-256", b"")),
    # -1: "no Initial Client Response" (the protocol allows it)
    (b"SCRAM-SHA-256\x00\xff\xff\xff\xff", ("SCRAM-SHA-256", b"")),
]


@pytest.mark.parametrize(("body", "expected"), SASL_INITIAL)
def test_parse_sasl_initial(body: bytes, expected: tuple[str, bytes]) -> None:
    assert m.parse_sasl_initial(body) == expected


def test_sasl_initial_round_trip() -> None:
    built = m.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc")
    assert m.parse_sasl_initial(built[5:]) == ("SCRAM-SHA-256", b"n,,n=,r=abc")


BAD_SASL_INITIAL: list[tuple[bytes, str]] = [
    (b"SCRAM-SHA-256", "unterminated"),
    (b"SCRAM-SHA-256\x00\x00\x00", "short SASLInitialResponse"),
    (b"SCRAM-SHA-256\x00\x00\x00\x00\x05abc", "bad SASLInitialResponse length"),
    (b"SCRAM-SHA-256\x00\x00\x00\x00\x01abc", "bad SASLInitialResponse length"),
    (b"SCRAM-SHA-256\x00\xff\xff\xff\xffabc", "bad SASLInitialResponse length"),
    (b"SCRAM-SHA-256\x00\xff\xff\xff\xfe", "bad SASLInitialResponse length"),
]


@pytest.mark.parametrize(("body", "message"), BAD_SASL_INITIAL)
def test_parse_sasl_initial_rejects(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        m.parse_sasl_initial(body)


def test_parse_auth() -> None:
    assert m.parse_auth(b"\x00\x00\x00\x00") == (m.AUTH_OK, b"")
    assert m.parse_auth(b"\x00\x00\x00\x05salt") == (m.AUTH_MD5, b"salt")
    with pytest.raises(ProtocolError, match="short authentication"):
        m.parse_auth(b"\x00\x00\x00")


def test_parse_sasl_mechanisms() -> None:
    payload = b"SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"
    assert m.parse_sasl_mechanisms(payload) == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
    assert m.parse_sasl_mechanisms(m.auth_sasl(("SCRAM-SHA-256",))[9:]) == ["SCRAM-SHA-256"]


def test_parse_parameter_status() -> None:
    assert m.parse_parameter_status(b"TimeZone\x00UTC\x00") == ("TimeZone", "UTC")
    assert m.parse_parameter_status(m.parameter_status("a", "")[5:]) == ("a", "")
    with pytest.raises(ProtocolError):
        m.parse_parameter_status(b"TimeZone\x00UTC")


def test_parse_backend_key() -> None:
    assert m.parse_backend_key(b"\x00\x00\x04\xd2\xde\xad\xbe\xef") == (1234, 0xDEADBEEF)
    for bad in (b"", b"\x00" * 7, b"\x00" * 9):
        with pytest.raises(ProtocolError, match="BackendKeyData"):
            m.parse_backend_key(bad)


def test_read_cstr() -> None:
    assert m.read_cstr(b"ab\x00cd\x00", 0) == (b"ab", 3)
    assert m.read_cstr(b"ab\x00cd\x00", 3) == (b"cd", 6)
    assert m.read_cstr(b"\x00", 0) == (b"", 1)
    with pytest.raises(ProtocolError, match="unterminated"):
        m.read_cstr(b"ab\x00cd", 3)


def test_negotiate_protocol_version() -> None:
    assert m.negotiate_protocol_version(0, []) == b"v\x00\x00\x00\x0c" + bytes(8)
    assert m.negotiate_protocol_version(0, ["_pq_.a", "_pq_.bc"]) == (
        b"v\x00\x00\x00\x1b\x00\x00\x00\x00\x00\x00\x00\x02_pq_.a\x00_pq_.bc\x00"
    )


@settings(max_examples=500, deadline=None, database=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=310))
def test_nul_at_is_find(data: bytes, start: int) -> None:
    """`nul_at` (C in the compiled build) answers as `bytes.find(b"\\x00", start)`."""
    assert m.nul_at(data, start) == data.find(b"\x00", start)
    if m._NUL_AT is not None:
        with pytest.raises(TypeError):
            m._NUL_AT("text", 0)  # type: ignore[arg-type]
