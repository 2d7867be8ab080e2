"""Encryption at rest for secret values and secret access keys.

Values are sealed with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`)
under a key kept in its own file, apart from the state database: a copy of
the database alone reveals no secret. The key file is created on first start
with mode 0600 in a 0700 directory; losing it makes the sealed values
unreadable, which is the point.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class VaultError(Exception):
    """A sealed value cannot be opened (wrong or replaced key file)."""


class Vault:
    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._fernet = Fernet(_load_or_create(key_file))

    def seal(self, plaintext: str | bytes) -> str:
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        return self._fernet.encrypt(data).decode("ascii")

    def open(self, sealed: str) -> bytes:
        try:
            return self._fernet.decrypt(sealed.encode("ascii"))
        except InvalidToken:
            message = f"a sealed value does not open with the key in {self.key_file}"
            raise VaultError(message) from None

    def open_text(self, sealed: str) -> str:
        return self.open(sealed).decode()


def _load_or_create(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key
