"""PostgreSQL md5 authentication on exact bytes."""

from __future__ import annotations

import hashlib

import pytest

from sluice.wire.pg.md5 import md5_check, md5_hash, md5_response

SALT = b"\x01\x02\x03\x04"


def test_md5_hash_known_value() -> None:
    # The well-known stored hash of role "postgres" with password "postgres".
    assert md5_hash("postgres", "postgres") == "md53175bce1d3201d16594cebf9d7eb3f9d"


def test_md5_hash_non_ascii_matches_libpq() -> None:
    # Produced once by libpq's PQencryptPasswordConn(conn, "été", "alice", "md5").
    assert md5_hash("alice", "\u00e9t\u00e9") == "md52b5075a994ad84722964235920dae8a7"


def test_md5_hash_is_password_then_user() -> None:
    expected = "md5" + hashlib.md5(b"secretbob").hexdigest()
    assert md5_hash("bob", "secret") == expected
    assert md5_hash("secret", "bob") != expected


def test_md5_response_known_value() -> None:
    # md5hex("3175bce1d3201d16594cebf9d7eb3f9d" + b"\x01\x02\x03\x04"), fixed once.
    expected = b"md568be9ed08db75f318087ab337aaea044"
    assert md5_response("postgres", "postgres", SALT) == expected
    inner = hashlib.md5(b"postgrespostgres").hexdigest().encode()
    assert expected == b"md5" + hashlib.md5(inner + SALT).hexdigest().encode()


def test_md5_response_has_no_nul() -> None:
    response = md5_response("u", "p", SALT)
    assert len(response) == 35 and b"\x00" not in response


def test_md5_check() -> None:
    stored = md5_hash("postgres", "postgres")
    assert md5_check(stored, SALT, b"md568be9ed08db75f318087ab337aaea044")
    assert md5_check(stored, SALT, md5_response("postgres", "postgres", SALT))


@pytest.mark.parametrize(
    "response",
    [
        b"md568be9ed08db75f318087ab337aaea045",  # one digit off
        b"md568be9ed08db75f318087ab337aaea044\x00",  # trailing NUL left on
        b"md568BE9ED08DB75F318087AB337AAEA044",  # upper case
        b"68be9ed08db75f318087ab337aaea044",  # no prefix
        b"",
        md5_response("postgres", "wrong", SALT),
        md5_response("postgres", "postgres", b"\x01\x02\x03\x05"),
    ],
)
def test_md5_check_rejects(response: bytes) -> None:
    assert not md5_check(md5_hash("postgres", "postgres"), SALT, response)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "postgres",
        "md5",
        "md53175bce1d3201d16594cebf9d7eb3f9",
        "md5" + "g" * 32,
        "SCRAM-SHA-256$x",
    ],
)
def test_md5_check_rejects_malformed_stored_hash(stored: str) -> None:
    with pytest.raises(ValueError):
        md5_check(stored, SALT, b"md568be9ed08db75f318087ab337aaea044")


@pytest.mark.parametrize("salt", [b"", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"])
def test_salt_must_be_four_bytes(salt: bytes) -> None:
    with pytest.raises(ValueError):
        md5_response("postgres", "postgres", salt)
    with pytest.raises(ValueError):
        md5_check(md5_hash("postgres", "postgres"), salt, b"md5")
