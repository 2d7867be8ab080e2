"""SCRAM-SHA-256 on exact bytes: the RFC 7677 vector, verifiers made by libpq, misuse."""

from __future__ import annotations

import base64

import pytest

from sluice.errors import AuthFailed, ProtocolError, ServerAuthFailed
from sluice.wire.pg.scram import (
    MAX_ITERATIONS,
    ScramClient,
    ScramServer,
    ScramVerifier,
    make_verifier,
    parse_verifier,
    saslprep,
)

# RFC 7677 section 3.
RFC_CLIENT_NONCE = b"rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
FULL_NONCE = RFC_CLIENT_NONCE + RFC_SERVER_NONCE

# Secrets produced once by libpq 18 (PQencryptPasswordConn, "scram-sha-256"), whose
# SASLprep is PostgreSQL's own: (password, SASLprep result, stored verifier).
LIBPQ_VERIFIERS = [
    (
        "pencil",
        "pencil",
        "SCRAM-SHA-256$4096:ss4EJzl3nLmhdRT8LMW68Q==$PGtu4AYPVPS4XqCzWvkW43afrfqhAQd8oc5RO8Jzk14="
        ":UBVoE/RzbREjTvfJ0YFKvqTWZMl/MlvH+Rth/m19uZM=",
    ),
    (  # soft hyphen is mapped to nothing
        "I\u00adX",
        "IX",
        "SCRAM-SHA-256$4096:EoTUDH7QEC+E8tLnKY9GOg==$TUUXbx5V5rhYV7waHQF8mc5q/C1tpBzK7WB6Vxe5vlU="
        ":kq5w0yETnvCsBtnmYwtVCCPV+/3U2DegSByjVeiluzA=",
    ),
    (  # ROMAN NUMERAL NINE, NFKC
        "\u2168",
        "IX",
        "SCRAM-SHA-256$4096:xz5fHvg+XChoZi0cLSR+vw==$giNh5pz47XdJ0Rh+R4dLByAw7hwuetSZxP0bpShCFOs="
        ":fDgUBYbXrDp7e8BYdwP4yCwI9kHP19tN9mEf0FP8zvA=",
    ),
    (  # non-ASCII spaces become U+0020
        "\u00a0\u2168\u3000",
        " IX ",
        "SCRAM-SHA-256$4096:VaZ/W4+DWWnCpW1MoQ97dw==$u61KDE7WnsZBCWGNL1rwvivoj+qbHHTt29M3Qk7Y3nQ="
        ":sEeRCOpoMz082zIqal/4EWOhmqJpHUVHbwW2Y1zRtm4=",
    ),
    (  # combining sequence composed
        "e\u0301",
        "\u00e9",
        "SCRAM-SHA-256$4096:UOTTmJAEfhTVBXuJH65MyA==$JNoulr/mf6nyv8sw5dg/vyB/EEflNT0qHrY7ut+vjqc="
        ":7KfXcUSL8kTVv2mrL+UeAKzDGfgFbiF6jcZraXfoOJU=",
    ),
    (  # valid right-to-left string
        "\u0627\u0031\u0628",
        "\u0627\u0031\u0628",
        "SCRAM-SHA-256$4096:cCnP73WzTFABpbHoIxIlDw==$1Bp72EAEBkmojkz5Tqg9wsQCWpUFE3r47ChJhscRPgI="
        ":a/2QAEKqezd+Xmlq+CsPqiiSDtbpCO+m/7ut7+nvmk4=",
    ),
    (  # fallback: LCat next to RandALCat breaks the bidi rule
        "\u2168\u0627",
        "\u2168\u0627",
        "SCRAM-SHA-256$4096:dzAmD+ibq+o9NS3D6MmX8w==$VZTm9voQyCbljs5BnLuyToEysULD9xKWEOgOCWpBsLs="
        ":uiPdWzh7nyijwvzvP3qqUpownffCEfI5snp7Rp62sL8=",
    ),
    (  # fallback: prohibited ASCII control character
        "\u2168\x07",
        "\u2168\x07",
        "SCRAM-SHA-256$4096:sSng3WOW6MQUOu5n5VgHsQ==$YydCOhoxDmMnt23MYb4obS2qKff7FlCvINesNaCLxAE="
        ":gE/fAoMdPzZwkNcZbEhqj8URZRfJFVw0rZQDuUoqA58=",
    ),
    (  # fallback: private use character
        "\ue000x",
        "\ue000x",
        "SCRAM-SHA-256$4096:75FsmxtHT3TqlOSnkjGhJw==$SPVZt8oehM4amoNzw/0RD4hT1RWlhZgYM+1AcllnuYM="
        ":+mifjUOkvStO5OUqTEpxWPxdkl+3t7VB36AgT2+Vbu8=",
    ),
    (  # fallback: unassigned in Unicode 3.2
        "\u0221x",
        "\u0221x",
        "SCRAM-SHA-256$4096:biC95Sn6p4ouXXbEh5xWoA==$YFfwrxOdf0AtmcEGq23hN4qzhYltIzuTJnYQUIwOe9E="
        ":a7MchkH7vOHGvvTGX7v+PQRBahsgnzkupsL1QjR7rxM=",
    ),
    (  # fallback: empty after mapping
        "\u00ad",
        "\u00ad",
        "SCRAM-SHA-256$4096:TCWvL6JQBXlAo26vAZGSAQ==$YV7kIQAGeoDdEuguWeKK07Mk5SjLF94LCRdINqZuTlA="
        ":o1xSx3dTk0dDfRzhgqGYlmi5NozEI1AvxpVarE4N64k=",
    ),
    (  # U+200B is both a space and mapped-to-nothing; BOM is mapped to nothing
        "a\u200bb\ufeffc",
        "a bc",
        "SCRAM-SHA-256$4096:UMyk6UDKZQTgP1bCzLG6cg==$iZLul+DmZwBmO1v0Nrm35PY86gs35CyC6REfLNgywG4="
        ":0czJosJZ0J+ZzlYBBxRRtROh7+EqqpulDzfrEXzon2A=",
    ),
    (  # fallback: the bytes b"\xff\xfe", not UTF-8
        b"\xff\xfe".decode("utf-8", "surrogateescape"),
        "\udcff\udcfe",
        "SCRAM-SHA-256$4096:rwL5Of88kD4BiOtmVKxJPw==$hBftoIvsB2+M6B3ANwKHqp0QtFX7VaInFKBruTdsQuk="
        ":UZiGrfcJGAYDkSSTG4ckXAtH1g7ZIzEVXOvobyGO814=",
    ),
]


def rfc_server() -> ScramServer:
    return ScramServer(make_verifier("pencil", RFC_SALT, 4096), RFC_SERVER_NONCE)


def rfc_client() -> ScramClient:
    return ScramClient("user", "pencil", RFC_CLIENT_NONCE, send_username=True)


def server_after_first(client_first: bytes = RFC_CLIENT_FIRST) -> ScramServer:
    server = rfc_server()
    server.handle_first(client_first)
    return server


def client_after_first() -> ScramClient:
    client = rfc_client()
    client.client_first()
    client.handle_server_first(RFC_SERVER_FIRST)
    return client


# ---------------------------------------------------------------- RFC 7677 vector


def test_rfc7677_client() -> None:
    client = rfc_client()
    assert client.client_first() == RFC_CLIENT_FIRST
    assert client.handle_server_first(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    assert not client.verified
    client.verify_server_final(RFC_SERVER_FINAL)
    assert client.verified


def test_rfc7677_server() -> None:
    server = rfc_server()
    assert server.handle_first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.handle_final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_rfc7677_verifier() -> None:
    verifier = make_verifier("pencil", RFC_SALT)
    assert verifier.to_string() == (
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
    )


def test_client_sends_empty_username_by_default() -> None:
    client = ScramClient("alice", "pencil", RFC_CLIENT_NONCE)
    assert client.client_first() == b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"


def test_client_escapes_username() -> None:
    client = ScramClient("a=b,c", "pencil", RFC_CLIENT_NONCE, send_username=True)
    assert client.client_first() == b"n,,n=a=3Db=2Cc,r=rOprNGfwEbeRWgbNEkqO"


def test_server_ignores_username() -> None:
    server = rfc_server()
    first = server.handle_first(b"n,,n=someone-else,r=rOprNGfwEbeRWgbNEkqO")
    assert first == RFC_SERVER_FIRST


def test_server_accepts_y_gs2_header() -> None:
    client_first = b"y,,n=,r=abc"
    server = ScramServer(make_verifier("pencil", RFC_SALT), b"XYZ")
    assert server.handle_first(client_first) == b"r=abcXYZ,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    # c= must echo "y,," (eSws); the proof is checked after it.
    with pytest.raises(AuthFailed):
        server.handle_final(b"c=eSws,r=abcXYZ,p=" + base64.b64encode(bytes(32)))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("send_username", [False, True])
def test_client_against_server(send_username: bool) -> None:
    client = ScramClient("bob", "s3cret \u00e9", send_username=send_username)
    server = ScramServer(make_verifier("s3cret \u00e9"))
    client_final = client.handle_server_first(server.handle_first(client.client_first()))
    client.verify_server_final(server.handle_final(client_final))
    assert client.verified


def test_saslprep_applies_on_both_sides() -> None:
    client = ScramClient("bob", "\u2168")
    server = ScramServer(make_verifier("I\u00adX"))
    client_final = client.handle_server_first(server.handle_first(client.client_first()))
    client.verify_server_final(server.handle_final(client_final))


def test_random_nonces_are_printable_and_distinct() -> None:
    first_a = ScramClient("u", "p").client_first()
    first_b = ScramClient("u", "p").client_first()
    assert first_a != first_b
    assert first_a.startswith(b"n,,n=,r=") and len(first_a) == len(b"n,,n=,r=") + 24


def test_wrong_password_is_auth_failed() -> None:
    client = ScramClient("bob", "wrong")
    server = ScramServer(make_verifier("right"))
    client_final = client.handle_server_first(server.handle_first(client.client_first()))
    with pytest.raises(AuthFailed) as info:
        server.handle_final(client_final)
    assert "wrong" not in str(info.value) and "right" not in str(info.value)


def test_tampered_proof_is_auth_failed() -> None:
    proof = bytearray(base64.b64decode(RFC_CLIENT_FINAL.rpartition(b"p=")[2]))
    proof[0] ^= 1
    tampered = RFC_CLIENT_FINAL.rpartition(b"p=")[0] + b"p=" + base64.b64encode(bytes(proof))
    with pytest.raises(AuthFailed):
        server_after_first().handle_final(tampered)


def test_server_refuses_a_second_attempt_after_failure() -> None:
    server = server_after_first()
    with pytest.raises(AuthFailed):
        server.handle_final(RFC_CLIENT_FINAL.replace(b"p=d", b"p=e"))
    with pytest.raises(ProtocolError):
        server.handle_final(RFC_CLIENT_FINAL)


# ---------------------------------------------------------------- server: bad input


@pytest.mark.parametrize(
    "client_first",
    [
        b"p=tls-server-end-point,,n=,r=abc",  # channel binding: never advertised
        b"n,a=admin,n=,r=abc",  # authzid
        b"x,,n=,r=abc",  # unknown gs2 flag
        b"n,,",  # nothing after the header
        b"n,,r=abc",  # missing n=
        b"n,,n=",  # missing r=
        b"n,,n=,r=",  # empty nonce
        b"n,,n=,r=a,b",  # not an attribute
        b"n,,n=,s=abc",  # wrong attribute
        b"n,,m=ext,n=,r=abc",  # mandatory extension
        b"n,,n=,r=a\x7fb",  # nonce not printable
        b"n,,n=\xff,r=abc",  # not UTF-8
        b"",
    ],
)
def test_server_rejects_bad_client_first(client_first: bytes) -> None:
    with pytest.raises(ProtocolError):
        rfc_server().handle_first(client_first)


def test_server_accepts_extensions_after_nonce() -> None:
    assert rfc_server().handle_first(RFC_CLIENT_FIRST + b",x=1") == RFC_SERVER_FIRST


@pytest.mark.parametrize(
    "client_final",
    [
        # tampered nonce
        RFC_CLIENT_FINAL.replace(b"k0,", b"k1,"),
        # the client nonce alone
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        # channel-binding echo of "y,," though the client sent "n,,"
        RFC_CLIENT_FINAL.replace(b"c=biws", b"c=eSws"),
        RFC_CLIENT_FINAL.replace(b"c=biws", b"c=bad!"),
        RFC_CLIENT_FINAL.replace(b"c=biws,", b""),  # missing c=
        RFC_CLIENT_FINAL.replace(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,", b""),
        RFC_CLIENT_FINAL.rpartition(b",p=")[0],  # missing proof
        RFC_CLIENT_FINAL + b",x=1",  # proof not last
        RFC_CLIENT_FINAL.rpartition(b",p=")[0] + b",p=" + base64.b64encode(bytes(31)),
        RFC_CLIENT_FINAL.rpartition(b",p=")[0] + b",p=@@@@",
        b"garbage",
    ],
)
def test_server_rejects_bad_client_final(client_final: bytes) -> None:
    with pytest.raises(ProtocolError):
        server_after_first().handle_final(client_final)


def test_server_final_before_first() -> None:
    with pytest.raises(ProtocolError):
        rfc_server().handle_final(RFC_CLIENT_FINAL)


def test_server_first_twice() -> None:
    with pytest.raises(ProtocolError):
        server_after_first().handle_first(RFC_CLIENT_FIRST)


def test_server_final_twice() -> None:
    server = server_after_first()
    server.handle_final(RFC_CLIENT_FINAL)
    with pytest.raises(ProtocolError):
        server.handle_final(RFC_CLIENT_FINAL)


def test_server_rejects_bad_nonce_argument() -> None:
    verifier = make_verifier("p", RFC_SALT)
    for nonce in (b"", b"a,b", b"a b", b"\xc3\xa9"):
        with pytest.raises(ValueError):
            ScramServer(verifier, nonce)


# ---------------------------------------------------------------- client: bad input


@pytest.mark.parametrize(
    "server_first",
    [
        # nonce that does not extend ours
        b"r=XXXXNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        # our nonce with nothing appended
        b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqO\x01,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOabc,s=,i=4096",  # empty salt
        b"r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7s!!,i=4096",  # bad base64
        b"r=rOprNGfwEbeRWgbNEkqOabc,i=4096",  # missing s=
        b"r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==",  # missing i=
        b"s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOabc,i=4096",  # order
        b"m=x,r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4k",
        b"r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
        b"e=other-error",
    ],
)
def test_client_rejects_bad_server_first(server_first: bytes) -> None:
    client = rfc_client()
    client.client_first()
    with pytest.raises(ProtocolError):
        client.handle_server_first(server_first)


@pytest.mark.parametrize("iterations", [0, MAX_ITERATIONS + 1, 2**31, 10**30])
def test_client_refuses_iteration_counts_out_of_range(iterations: int) -> None:
    client = rfc_client()
    client.client_first()
    message = b"r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=%d" % iterations
    with pytest.raises(ProtocolError):
        client.handle_server_first(message)


def test_client_accepts_the_iteration_bounds() -> None:
    client = rfc_client()
    client.client_first()
    client.handle_server_first(b"r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1")
    assert MAX_ITERATIONS == 1_000_000


def test_server_error_is_server_auth_failed() -> None:
    with pytest.raises(ServerAuthFailed, match="invalid-proof"):
        client_after_first().verify_server_final(b"e=invalid-proof")


def test_wrong_server_signature_is_server_auth_failed() -> None:
    with pytest.raises(ServerAuthFailed):
        client_after_first().verify_server_final(b"v=" + base64.b64encode(bytes(32)))


@pytest.mark.parametrize("server_final", [b"", b"x=1", b"v=@@", b"v", b"\xff"])
def test_malformed_server_final(server_final: bytes) -> None:
    with pytest.raises(ProtocolError):
        client_after_first().verify_server_final(server_final)


def test_client_out_of_order() -> None:
    with pytest.raises(ProtocolError):
        rfc_client().handle_server_first(RFC_SERVER_FIRST)
    with pytest.raises(ProtocolError):
        rfc_client().verify_server_final(RFC_SERVER_FINAL)
    client = rfc_client()
    client.client_first()
    with pytest.raises(ProtocolError):
        client.client_first()
    client = client_after_first()
    with pytest.raises(ProtocolError):
        client.handle_server_first(RFC_SERVER_FIRST)
    client.verify_server_final(RFC_SERVER_FINAL)
    with pytest.raises(ProtocolError):
        client.verify_server_final(RFC_SERVER_FINAL)


def test_client_not_verified_after_failure() -> None:
    client = client_after_first()
    with pytest.raises(ServerAuthFailed):
        client.verify_server_final(b"e=invalid-proof")
    assert not client.verified
    with pytest.raises(ProtocolError):
        client.verify_server_final(RFC_SERVER_FINAL)


# ---------------------------------------------------------------- verifiers


@pytest.mark.parametrize(("password", "prepared", "stored"), LIBPQ_VERIFIERS)
def test_matches_libpq_verifiers(password: str, prepared: str, stored: str) -> None:
    verifier = parse_verifier(stored)
    assert verifier.iterations == 4096 and len(verifier.salt) == 16
    assert verifier.to_string() == stored
    assert make_verifier(password, verifier.salt, verifier.iterations) == verifier
    assert saslprep(password) == prepared


def test_libpq_verifier_authenticates_client() -> None:
    server = ScramServer(parse_verifier(LIBPQ_VERIFIERS[2][2]))  # password "\u2168"
    client = ScramClient("u", "IX")
    client_final = client.handle_server_first(server.handle_first(client.client_first()))
    client.verify_server_final(server.handle_final(client_final))


def test_verifier_round_trip() -> None:
    verifier = make_verifier("pencil")
    text = verifier.to_string()
    assert text.startswith("SCRAM-SHA-256$4096:")
    assert parse_verifier(text) == verifier
    assert len(verifier.salt) == 16
    assert make_verifier("pencil").salt != verifier.salt


def test_verifier_custom_iterations() -> None:
    verifier = make_verifier("pencil", b"salt", 1)
    assert verifier.to_string().startswith("SCRAM-SHA-256$1:c2FsdA==$")
    assert parse_verifier(verifier.to_string()) == verifier


@pytest.mark.parametrize(
    "text",
    [
        "",
        "md53175bce1d3201d16594cebf9d7eb3f9d",
        "SCRAM-SHA-1$4096:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$4096:c2FsdA==$" + "A" * 43 + "=",  # no server key
        "SCRAM-SHA-256$4096c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$x:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$0:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$4096:$" + "A" * 43 + "=:" + "A" * 43 + "=",  # empty salt
        "SCRAM-SHA-256$4096:c2Fs!A==$" + "A" * 43 + "=:" + "A" * 43 + "=",
        "SCRAM-SHA-256$4096:c2FsdA==$" + "A" * 40 + "=:" + "A" * 43 + "=",  # bad length
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:" + "A" * 43 + "=",  # 3-byte key
        "SCRAM-SHA-256$4096:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=$x",
    ],
)
def test_parse_verifier_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_verifier(text)


def test_verifier_checks_fields() -> None:
    with pytest.raises(ValueError):
        ScramVerifier(b"salt", 4096, b"short", bytes(32))
    with pytest.raises(ValueError):
        make_verifier("pencil", b"salt", 0)


# ---------------------------------------------------------------- SASLprep


@pytest.mark.parametrize(
    ("password", "prepared"),
    [
        ("pencil", "pencil"),
        ("", ""),
        ("a\x07b", "a\x07b"),  # ASCII is left alone, as PostgreSQL does
        ("I\u00adX", "IX"),  # RFC 4013 section 3, example 1
        ("user", "user"),  # example 2
        ("USER", "USER"),  # example 3
        ("\u00aa", "a"),  # example 4
        ("\u2168", "IX"),  # example 5
        ("\u0007\u00e9", "\u0007\u00e9"),  # example 6 (prohibited): unchanged
        ("\u0627\u0031", "\u0627\u0031"),  # example 7 (bidi): unchanged
        ("a\u00a0b\u2000c\u3000d", "a b c d"),  # non-ASCII spaces
        ("a\ufeffb\u00adc", "abc"),  # BOM and soft hyphen mapped to nothing
        ("a\u200bb", "a b"),  # U+200B is in C.1.2 and B.1: space wins, as in PostgreSQL
        ("\ufb01", "fi"),  # ligature, NFKC
        ("caf\u00e9", "caf\u00e9"),
        ("\u00e9\ud800", "\u00e9\ud800"),  # surrogate: prohibited, unchanged
        ("\u00e9\U000e0001", "\u00e9\U000e0001"),  # tagging character
        ("\u00e9\u200e", "\u00e9\u200e"),  # bidi control character
    ],
)
def test_saslprep(password: str, prepared: str) -> None:
    assert saslprep(password) == prepared
