"""The connection phase on exact bytes: greetings, handshake responses, auth switches.

Real packets recorded from MariaDB 10.11, PyMySQL and the mariadb client (see
mysql_captures) are parsed and rebuilt byte for byte; hand-written packets pin
the layouts Sluice sends; every truncation of a real packet must be refused
with ProtocolError (or parse, when only optional fields are cut), never crash.
"""

from __future__ import annotations

import pytest

from mysql_captures import CLI_RESPONSE, GREETING, PYMYSQL_RESPONSE
from sluice.errors import ProtocolError
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import handshake as h
from sluice.wire.mysql.packets import PacketReader


def _payload(packet: bytes) -> bytes:
    reader = PacketReader(1 << 16)
    reader.feed(packet)
    got = reader.next()
    assert got is not None
    return got[1]


GREETING_PAYLOAD = _payload(GREETING)
PYMYSQL_PAYLOAD = _payload(PYMYSQL_RESPONSE)
CLI_PAYLOAD = _payload(CLI_RESPONSE)

# ---- HandshakeV10 ----------------------------------------------------------------


def test_parse_real_greeting() -> None:
    hs = h.parse_handshake(GREETING_PAYLOAD)
    assert hs.server_version == "5.5.5-10.11.19-MariaDB-0+deb12u1"
    assert hs.connection_id == 11
    assert hs.scramble == b"v$N:vds7W/&n{?d[zu[I"
    assert hs.capabilities == 0x81FFF7FE
    assert not hs.capabilities & c.CLIENT_LONG_PASSWORD  # MariaDB clears CLIENT_MYSQL
    assert hs.capabilities & c.CLIENT_DEPRECATE_EOF and hs.capabilities & c.CLIENT_SESSION_TRACK
    assert hs.charset == c.UTF8MB4_GENERAL_CI
    assert hs.status == c.SERVER_STATUS_AUTOCOMMIT
    assert hs.auth_plugin == c.NATIVE_PASSWORD
    assert hs.mariadb_capabilities == 0x1D


def test_real_greeting_rebuilt_byte_for_byte() -> None:
    assert h.build_handshake(h.parse_handshake(GREETING_PAYLOAD)) == GREETING_PAYLOAD


SLUICE_CAPS = c.CLIENT_LONG_PASSWORD | c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION
SLUICE_CAPS |= c.CLIENT_PLUGIN_AUTH


def test_build_greeting_exact() -> None:
    hs = h.Handshake(
        server_version="8.0.0-Sluice",
        connection_id=0x01020304,
        scramble=b"ABCDEFGHIJKLMNOPQRST",
        capabilities=SLUICE_CAPS,
        charset=45,
        status=2,
        auth_plugin="mysql_native_password",
    )
    expected = (
        b"\x0a8.0.0-Sluice\x00"
        b"\x04\x03\x02\x01"
        b"ABCDEFGH\x00"
        b"\x01\x82"  # capabilities, low half
        b"\x2d\x02\x00"  # charset, status
        b"\x08\x00"  # capabilities, high half
        b"\x15" + bytes(10) + b"IJKLMNOPQRST\x00mysql_native_password\x00"
    )
    assert h.build_handshake(hs) == expected
    assert h.parse_handshake(expected) == hs


def test_greeting_without_plugin_auth() -> None:
    caps = c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION
    hs = h.Handshake("5.7", 1, b"x" * 20, caps, 33, 0, c.NATIVE_PASSWORD)
    wire = h.build_handshake(hs)
    assert wire.endswith(b"\x00" + bytes(10) + b"x" * 12 + b"\x00")  # auth length 0, no plugin
    assert h.parse_handshake(wire) == hs


def test_greeting_plugin_name_without_nul() -> None:
    """Some old servers leave out the NUL after the plugin name."""
    parsed = h.parse_handshake(GREETING_PAYLOAD[:-1])
    assert parsed.auth_plugin == c.NATIVE_PASSWORD


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x09" + GREETING_PAYLOAD[1:],  # protocol 9
        GREETING_PAYLOAD[:40],
    ],
)
def test_greeting_malformed(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        h.parse_handshake(bad)


def test_greeting_every_truncation() -> None:
    plugin_at = GREETING_PAYLOAD.index(b"mysql_native")
    for cut in range(len(GREETING_PAYLOAD)):
        try:
            h.parse_handshake(GREETING_PAYLOAD[:cut])
        except ProtocolError:
            continue
        assert cut >= plugin_at, cut  # only the plugin name may be cut short


def test_greeting_scramble_length_checked() -> None:
    hs = h.parse_handshake(GREETING_PAYLOAD)
    with pytest.raises(ValueError):
        h.build_handshake(h.Handshake("x", 1, b"short", hs.capabilities, 45, 2, "p"))


# ---- HandshakeResponse41 and SSLRequest -------------------------------------------


def test_parse_pymysql_response() -> None:
    resp = h.parse_handshake_response(PYMYSQL_PAYLOAD)
    assert isinstance(resp, h.HandshakeResponse)
    assert resp.capabilities == 0x003BA205
    assert resp.max_packet == 0xFFFFFF
    assert resp.charset == c.UTF8MB4_GENERAL_CI
    assert resp.user == "root"
    assert resp.auth_response == b""
    assert resp.database is None
    assert resp.auth_plugin == c.NATIVE_PASSWORD
    assert resp.attributes == {
        "_client_name": "pymysql",
        "_client_version": "1.2.4",
        "_pid": "31885",
    }
    assert h.build_handshake_response(resp) == PYMYSQL_PAYLOAD


def test_parse_mariadb_client_response() -> None:
    resp = h.parse_handshake_response(CLI_PAYLOAD)
    assert isinstance(resp, h.HandshakeResponse)
    assert resp.capabilities == 0x00BFA284
    assert not resp.capabilities & c.CLIENT_LONG_PASSWORD  # extended capabilities follow
    assert resp.max_packet == 1 << 20
    assert resp.charset == 33
    assert (resp.user, resp.auth_response, resp.database) == ("root", b"", None)
    assert resp.attributes["program_name"] == "mysql"
    assert resp.attributes["_client_name"] == "libmariadb"
    assert len(resp.attributes) == 7
    # rebuilt, only the extended capabilities in the filler are left out
    rebuilt = h.build_handshake_response(resp)
    assert rebuilt == CLI_PAYLOAD[:28] + bytes(4) + CLI_PAYLOAD[32:]


def test_response_with_database_and_short_auth_length() -> None:
    caps = c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_CONNECT_WITH_DB
    caps |= c.CLIENT_PLUGIN_AUTH
    resp = h.HandshakeResponse(
        capabilities=caps,
        user="app",
        auth_response=b"\x01" * 20,
        database="appdb",
        auth_plugin="caching_sha2_password",
        max_packet=0x40000000,
        charset=255,
    )
    expected = (
        b"\x08\x82\x08\x00"  # capabilities
        b"\x00\x00\x00\x40"  # max packet
        b"\xff" + bytes(23) + b"app\x00"
        b"\x14" + b"\x01" * 20 + b"appdb\x00caching_sha2_password\x00"
    )
    assert h.build_handshake_response(resp) == expected
    assert h.parse_handshake_response(expected) == resp


def test_response_optional_fields_may_be_missing() -> None:
    caps = c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION | c.CLIENT_CONNECT_WITH_DB
    caps |= c.CLIENT_PLUGIN_AUTH | c.CLIENT_CONNECT_ATTRS
    wire = caps.to_bytes(4, "little") + bytes(28) + b"bob\x00\x00"  # ends after the auth
    resp = h.parse_handshake_response(wire)
    assert isinstance(resp, h.HandshakeResponse)
    assert (resp.user, resp.database, resp.auth_plugin, resp.attributes) == ("bob", None, None, {})


def test_ssl_request() -> None:
    wire = h.build_ssl_request(SLUICE_CAPS, 1 << 24, 45)
    assert wire == b"\x01\x8a\x08\x00\x00\x00\x00\x01\x2d" + bytes(23)
    assert h.parse_handshake_response(wire) == h.SSLRequest(SLUICE_CAPS | c.CLIENT_SSL, 1 << 24, 45)
    with pytest.raises(ProtocolError, match="CLIENT_SSL"):
        h.parse_handshake_response(b"\x01\x82\x08\x00" + bytes(28))


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        bytes(31),
        b"\x00\x00\x00\x00" + bytes(40),  # no CLIENT_PROTOCOL_41
        b"\x00\x02\x00\x00" + bytes(28) + b"u\x00\x00",  # 4.1 without secure connection
        PYMYSQL_PAYLOAD.replace(b"\x36\x0c_client", b"\x37\x0c_client"),  # attributes overrun
        PYMYSQL_PAYLOAD.replace(b"\x05\x31", b"\x09\x31"),  # an attribute value overruns
    ],
)
def test_response_malformed(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        h.parse_handshake_response(bad)


@pytest.mark.parametrize("payload", [PYMYSQL_PAYLOAD, CLI_PAYLOAD])
def test_response_every_truncation(payload: bytes) -> None:
    """Cut anywhere: a ProtocolError, or a parse that only lost optional trailing fields."""
    full = h.parse_handshake_response(payload)
    assert isinstance(full, h.HandshakeResponse)
    for cut in range(len(payload)):
        try:
            got = h.parse_handshake_response(payload[:cut])
        except ProtocolError:
            continue
        if cut == 32:
            continue  # the 32-byte prefix of a TLS-capable client is an SSLRequest
        assert isinstance(got, h.HandshakeResponse), cut
        assert (got.user, got.auth_response) == (full.user, full.auth_response), cut


def test_response_repr_hides_auth() -> None:
    resp = h.HandshakeResponse(capabilities=0, user="u", auth_response=b"secret-proof")
    assert "secret" not in repr(resp)


# ---- authentication exchange packets -------------------------------------------


def test_auth_switch() -> None:
    wire = h.build_auth_switch(c.NATIVE_PASSWORD, b"ABCDEFGHIJKLMNOPQRST\x00")
    assert wire == b"\xfemysql_native_password\x00ABCDEFGHIJKLMNOPQRST\x00"
    assert h.parse_auth_switch(wire) == (c.NATIVE_PASSWORD, b"ABCDEFGHIJKLMNOPQRST\x00")
    assert h.build_auth_switch(c.CLEAR_PASSWORD, b"") == b"\xfemysql_clear_password\x00"
    assert h.parse_auth_switch(b"\xfemysql_clear_password\x00") == (c.CLEAR_PASSWORD, b"")


@pytest.mark.parametrize("bad", [b"", b"\xfe", b"\x00abc\x00", b"\xfeno-nul"])
def test_auth_switch_malformed(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        h.parse_auth_switch(bad)


def test_auth_more_data() -> None:
    assert h.build_auth_more_data(b"\x03") == b"\x01\x03"
    assert h.parse_auth_more_data(b"\x01\x04") == b"\x04"
    assert h.parse_auth_more_data(b"\x01-----BEGIN PUBLIC KEY") == b"-----BEGIN PUBLIC KEY"
    with pytest.raises(ProtocolError):
        h.parse_auth_more_data(b"\x00")
