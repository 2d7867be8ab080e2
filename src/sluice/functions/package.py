"""Deployment packages: zip files kept by content, unpacked once as a task root or layer.

A package is stored under its SHA-256 (`code/<hex>.zip`), so two functions with the same code
share it and a restart finds it again; `CodeSha256` and `CodeSize` are what AWS reports (the
base64 digest of the zip's bytes, and their count). Unpacking refuses what Lambda refuses: a
file that is not a zip, members that would land outside the target directory, and more than
250 MB unpacked. It writes to a temporary directory renamed into place, so a crash never
leaves a half-unpacked task root behind.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_UNZIPPED = 262_144_000
MAX_ZIPPED = 52_428_800  # a direct upload


class PackageError(ValueError):
    """The zip cannot be used; the message is what Lambda says."""


@dataclass(frozen=True, slots=True)
class Package:
    """A stored zip: its digest as AWS reports it, its size, and where it is unpacked."""

    sha256: str  # base64, as CodeSha256
    size: int
    hex_digest: str


class PackageStore:
    """Zips by content under `root/code`, unpacked under `root/unpacked`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, data: bytes) -> Package:
        """Check and keep a zip (PackageError if Lambda would refuse it)."""
        if len(data) > MAX_ZIPPED:
            raise PackageError(f"Unzipped size must be smaller than {MAX_UNZIPPED} bytes")
        _check(data)
        digest = hashlib.sha256(data)
        package = Package(base64.b64encode(digest.digest()).decode(), len(data),
                          digest.hexdigest())  # fmt: skip
        path = self._zip(package.hex_digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part")
            partial.write_bytes(data)
            partial.replace(path)
        return package

    def unpacked(self, hex_digest: str) -> Path:
        """The directory holding the package's files (unpacked on first use)."""
        target = self.root / "unpacked" / hex_digest
        if target.is_dir():
            return target
        partial = target.with_name(target.name + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(self._zip(hex_digest)) as archive:
            for info in archive.infolist():
                _extract(archive, info, partial)
        partial.replace(target)
        return target

    def read(self, hex_digest: str) -> bytes:
        return self._zip(hex_digest).read_bytes()

    def _zip(self, hex_digest: str) -> Path:
        return self.root / "code" / f"{hex_digest}.zip"


def _check(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            total = 0
            for info in archive.infolist():
                _safe_name(info.filename)
                total += info.file_size
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise PackageError(
            "Could not unzip uploaded file. Please check your file, then try to upload again."
        ) from None
    if total > MAX_UNZIPPED:
        raise PackageError(f"Unzipped size must be smaller than {MAX_UNZIPPED} bytes")


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or "\x00" in name:
        raise ValueError("a member outside the package")
    return path


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    relative = _safe_name(info.filename)
    destination = target.joinpath(*relative.parts)
    if info.is_dir():
        destination.mkdir(parents=True, exist_ok=True)
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(info) as source, destination.open("wb") as out:
        shutil.copyfileobj(source, out)
    mode = (info.external_attr >> 16) & 0o777
    # Files stay readable by the function; executables stay executable (a layer's binaries).
    destination.chmod((mode or 0o644) | stat.S_IRUSR)
