"""MySQL password authentication: the three plugins Sluice speaks, free of I/O.

Design: pure functions over bytes, for both sides of each exchange.

- mysql_native_password: the client answers a 20-byte nonce with
  SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))). The server stores SHA1(SHA1(pw))
  (MySQL shows it as "*" + 40 hex digits) and checks an answer by recovering
  SHA1(pw) from it and hashing it once more.
- caching_sha2_password: the "fast path" answer is
  SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce); a server that holds
  SHA256(SHA256(pw)) checks it the same way and replies AuthMoreData 0x03
  (then OK). Otherwise it replies AuthMoreData 0x04 ("perform full
  authentication"); over TLS the client then sends the password and a NUL,
  in plaintext it may ask for the server's RSA key (0x02) and send the
  password XOR the nonce, RSA-OAEP encrypted. Sluice as a server refuses the
  key request (it has no RSA key pair to offer and wants TLS instead); as a
  client it can encrypt with the key a database sends.
- mysql_clear_password: the password and a NUL, to be sent only over TLS.

An empty password is answered with an empty response in both hash plugins.
Comparisons of secrets use hmac.compare_digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sluice.errors import ProtocolError

NONCE_LEN = 20

# caching_sha2_password's AuthMoreData payloads (after the 0x01 header) and requests.
FAST_AUTH_SUCCESS = b"\x03"
PERFORM_FULL_AUTH = b"\x04"
REQUEST_PUBLIC_KEY = b"\x02"  # what the client sends to ask for the RSA key
# The same, as whole server payloads.
AUTH_MORE_FAST_OK = b"\x01" + FAST_AUTH_SUCCESS
AUTH_MORE_FULL = b"\x01" + PERFORM_FULL_AUTH


def make_scramble() -> bytes:
    """A fresh 20-byte nonce as MySQL makes them: 7-bit bytes, never NUL or '$'."""
    out = bytearray(secrets.token_bytes(NONCE_LEN))
    for i, byte in enumerate(out):
        byte &= 0x7F
        out[i] = byte + 1 if byte in (0, 0x24) else byte
    return bytes(out)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---- mysql_native_password ---------------------------------------------------


def native_scramble(password: bytes, nonce: bytes) -> bytes:
    """The client's answer to `nonce` (only its first 20 bytes count)."""
    if not password:
        return b""
    stage1 = _sha1(password)
    return _xor(stage1, _sha1(nonce[:NONCE_LEN] + _sha1(stage1)))


def native_hash(password: bytes) -> bytes:
    """What a server stores: SHA1(SHA1(password)); empty for an empty password."""
    return _sha1(_sha1(password)) if password else b""


def native_hash_from_text(text: str) -> bytes:
    """Decode MySQL's displayed form ("*" + 40 hex digits, or empty)."""
    if not text:
        return b""
    if len(text) != 41 or text[0] != "*":
        raise ValueError("not a mysql_native_password hash")
    return bytes.fromhex(text[1:])


def native_check(stored: bytes, nonce: bytes, response: bytes) -> bool:
    """True if `response` answers `nonce` for the stored SHA1(SHA1(password))."""
    if not stored:
        return response == b""
    if len(response) != 20:
        return False
    stage1 = _xor(response, _sha1(nonce[:NONCE_LEN] + stored))
    return hmac.compare_digest(_sha1(stage1), stored)


# ---- caching_sha2_password ---------------------------------------------------


def sha2_scramble(password: bytes, nonce: bytes) -> bytes:
    """The client's fast-path answer to `nonce` (its first 20 bytes)."""
    if not password:
        return b""
    p1 = _sha256(password)
    return _xor(p1, _sha256(_sha256(p1) + nonce[:NONCE_LEN]))


def sha2_hash(password: bytes) -> bytes:
    """What the fast path checks against: SHA256(SHA256(password)); empty if none."""
    return _sha256(_sha256(password)) if password else b""


def sha2_check(stored: bytes, nonce: bytes, response: bytes) -> bool:
    """True if a fast-path `response` answers `nonce` for SHA256(SHA256(password))."""
    if not stored:
        return response == b""
    if len(response) != 32:
        return False
    p1 = _xor(response, _sha256(stored + nonce[:NONCE_LEN]))
    return hmac.compare_digest(_sha256(p1), stored)


def sha2_rsa_encrypt(password: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """The full-path answer without TLS: (password + NUL) XOR nonce, RSA-OAEP(SHA1)."""
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except ValueError as exc:
        raise ProtocolError("server sent an unreadable RSA public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ProtocolError("server sent a public key that is not RSA")
    plain = password + b"\x00"
    nonce = nonce[:NONCE_LEN]
    mask = (nonce * (len(plain) // len(nonce) + 1))[: len(plain)]
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return key.encrypt(_xor(plain, mask), oaep)


# ---- mysql_clear_password (and the full path of caching_sha2 over TLS) -------


def clear_payload(password: bytes) -> bytes:
    return password + b"\x00"


def parse_clear(payload: bytes) -> bytes:
    """The password in a cleartext answer (one trailing NUL removed, if present)."""
    if payload.endswith(b"\x00"):
        payload = payload[:-1]
    if b"\x00" in payload:
        raise ProtocolError("NUL inside a cleartext password")
    return payload
