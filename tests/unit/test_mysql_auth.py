"""MySQL password plugins: known vectors, PyMySQL as an independent reference, checks.

The fixed vectors were computed with PyMySQL 1.2's `_auth` functions; the stored
hash of "secret" is what MariaDB's PASSWORD('secret') returns. PyMySQL and the
definitions written out with hashlib are also compared for many inputs; the
RSA path is checked by decrypting with the private key (OAEP padding is random).
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pymysql import _auth as reference

from sluice.errors import ProtocolError
from sluice.wire.mysql import auth

NONCE = b"v$N:vds7W/&n{?d[zu[I"  # the scramble of the recorded MariaDB greeting

# (password, native answer, caching_sha2 fast-path answer) to NONCE, as hex
VECTORS: list[tuple[bytes, str, str]] = [
    (
        b"secret",
        "b7c5c90692e7126a705b1f0e0d9ddf3de6823a57",
        "c4413c8ce0a776ee1d7339215948e2e3fb607b26c464a100f0734d52f8f2675e",
    ),
    (
        "pässwörd".encode(),
        "65a2529dad3bebf0b1f6d89cf9eb7119b3a6c0be",
        "6965f0c3d8ede364cd9c1008007d67f43b22e2260ae3fb6deffcc19987caeb20",
    ),
]


def _native(password: bytes, nonce: bytes) -> bytes:
    """mysql_native_password written out from its definition."""
    stage1 = hashlib.sha1(password).digest()
    mask = hashlib.sha1(nonce + hashlib.sha1(stage1).digest()).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


def _sha2(password: bytes, nonce: bytes) -> bytes:
    p1 = hashlib.sha256(password).digest()
    mask = hashlib.sha256(hashlib.sha256(p1).digest() + nonce).digest()
    return bytes(a ^ b for a, b in zip(p1, mask, strict=True))


PASSWORDS = [b"a", b"secret", b"p\xc3\xa4ssw\xc3\xb6rd", b"x" * 100, bytes(range(1, 256))]
NONCES = [NONCE, b"ABCDEFGHIJKLMNOPQRST", bytes(range(1, 21))]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("nonce", NONCES)
def test_scrambles_match_reference(password: bytes, nonce: bytes) -> None:
    native = auth.native_scramble(password, nonce)
    assert native == reference.scramble_native_password(password, nonce) == _native(password, nonce)
    sha2 = auth.sha2_scramble(password, nonce)
    assert sha2 == reference.scramble_caching_sha2(password, nonce) == _sha2(password, nonce)
    assert len(native) == 20
    assert len(sha2) == 32


@pytest.mark.parametrize(("password", "native", "sha2"), VECTORS)
def test_fixed_vectors(password: bytes, native: str, sha2: str) -> None:
    assert auth.native_scramble(password, NONCE).hex() == native
    assert auth.sha2_scramble(password, NONCE).hex() == sha2
    assert auth.native_check(auth.native_hash(password), NONCE, bytes.fromhex(native))
    assert auth.sha2_check(auth.sha2_hash(password), NONCE, bytes.fromhex(sha2))


def test_stored_forms() -> None:
    # the stored form of "secret", as MySQL shows it (PASSWORD('secret'))
    assert auth.native_hash(b"secret").hex().upper() == "14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
    stored = auth.native_hash_from_text("*14E65567ABDB5135D0CFD9A70B3032C179A49EE7")
    assert stored == auth.native_hash(b"secret")
    assert auth.sha2_hash(b"secret") == hashlib.sha256(hashlib.sha256(b"secret").digest()).digest()


def test_nonce_longer_than_twenty_bytes_is_cut() -> None:
    """The scramble of an AuthSwitchRequest arrives with its trailing NUL."""
    assert auth.native_scramble(b"pw", NONCE + b"\x00") == auth.native_scramble(b"pw", NONCE)
    assert auth.sha2_scramble(b"pw", NONCE + b"\x00") == auth.sha2_scramble(b"pw", NONCE)


def test_empty_password() -> None:
    assert auth.native_scramble(b"", NONCE) == b""
    assert auth.sha2_scramble(b"", NONCE) == b""
    assert auth.native_hash(b"") == b"" == auth.sha2_hash(b"")
    assert auth.native_check(b"", NONCE, b"")
    assert not auth.native_check(b"", NONCE, b"\x00" * 20)
    assert auth.sha2_check(b"", NONCE, b"")
    assert not auth.native_check(auth.native_hash(b"pw"), NONCE, b"")


@pytest.mark.parametrize("password", PASSWORDS)
def test_server_checks(password: bytes) -> None:
    native_stored, sha2_stored = auth.native_hash(password), auth.sha2_hash(password)
    answer = reference.scramble_native_password(password, NONCE)
    assert auth.native_check(native_stored, NONCE, answer)
    assert not auth.native_check(native_stored, NONCE[::-1], answer)
    assert not auth.native_check(auth.native_hash(password + b"!"), NONCE, answer)
    assert not auth.native_check(native_stored, NONCE, answer[:-1])
    fast = reference.scramble_caching_sha2(password, NONCE)
    assert auth.sha2_check(sha2_stored, NONCE, fast)
    assert not auth.sha2_check(sha2_stored, NONCE[::-1], fast)
    assert not auth.sha2_check(auth.sha2_hash(password + b"!"), NONCE, fast)
    assert not auth.sha2_check(sha2_stored, NONCE, fast + b"\x00")


def test_native_hash_text_refused() -> None:
    assert auth.native_hash_from_text("") == b""
    for bad in ("14E65567ABDB5135D0CFD9A70B3032C179A49EE7", "*12", "#" + "0" * 40):
        with pytest.raises(ValueError):
            auth.native_hash_from_text(bad)


def test_make_scramble() -> None:
    seen = set()
    for _ in range(200):
        nonce = auth.make_scramble()
        assert len(nonce) == 20
        assert all(0 < b < 0x80 and b != 0x24 for b in nonce)
        seen.add(nonce)
    assert len(seen) == 200


def test_clear_password() -> None:
    assert auth.clear_payload(b"tok3n") == b"tok3n\x00"
    assert auth.parse_clear(b"tok3n\x00") == b"tok3n"
    assert auth.parse_clear(b"tok3n") == b"tok3n"  # some clients leave the NUL out
    assert auth.parse_clear(b"") == b""
    with pytest.raises(ProtocolError):
        auth.parse_clear(b"a\x00b\x00")


def test_full_path_constants() -> None:
    assert auth.AUTH_MORE_FAST_OK == b"\x01\x03"
    assert auth.AUTH_MORE_FULL == b"\x01\x04"
    assert auth.REQUEST_PUBLIC_KEY == b"\x02"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _decrypt(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return key.decrypt(data, oaep)


@pytest.mark.parametrize("password", [b"pw", b"a-password-longer-than-the-twenty-byte-nonce"])
def test_rsa_encrypt_matches_reference(rsa_key: rsa.RSAPrivateKey, password: bytes) -> None:
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ours = _decrypt(rsa_key, auth.sha2_rsa_encrypt(password, NONCE + b"\x00", pem))
    theirs = _decrypt(rsa_key, reference.sha2_rsa_encrypt(password, NONCE, pem))
    assert ours == theirs
    mask = (NONCE * 3)[: len(password) + 1]
    assert bytes(a ^ b for a, b in zip(ours, mask, strict=True)) == password + b"\x00"


def test_rsa_bad_key() -> None:
    with pytest.raises(ProtocolError):
        auth.sha2_rsa_encrypt(b"pw", NONCE, b"-----BEGIN PUBLIC KEY-----\nnope\n")
