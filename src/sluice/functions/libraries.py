"""The libraries an execution environment can import beyond its code and layers: Lambda's.

Why a directory of its own: Lambda's Python runtime offers a function the standard library,
boto3 and the packages boto3 needs, nothing else; anything more comes in the function's zip
or its layers. The environments here run the server's own Python, whose site-packages hold
everything the server uses (database drivers, `cryptography`, Sluice itself). Were those on
the import path, a function would import what Lambda does not have, and pay for it: PyMySQL
imports `cryptography` when it finds it, which doubles the memory of every environment of a
PyMySQL handler. So environments start without `site` (`python -S`) and find, after their
task root and layers, one directory of links to exactly the packages below, made once by the
runner from the server's own installation.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("sluice.functions")

# The Python runtime's own libraries on Lambda (import names).
LAMBDA_LIBRARIES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")


def provide(target: Path, names: tuple[str, ...] = LAMBDA_LIBRARIES) -> Path:
    """A directory of links to `names` as the server's Python finds them now.

    Kept when it already links to exactly those (a restart), made afresh otherwise (the
    server's installation moved or changed).
    """
    found = {name: location(name) for name in names}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        log.warning("functions cannot import %s: the server's Python lacks them (Lambda's "
                    "runtime has them)", ", ".join(missing))  # fmt: skip
    wanted = {path for path in found.values() if path is not None}
    if target.is_dir() and {p.resolve() for p in target.iterdir()} == wanted:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=".part-"))
    for source in sorted(wanted):
        os.symlink(source, partial / source.name)
    partial.chmod(0o755)
    partial.rename(target)
    return target


def location(name: str) -> Path | None:
    """A top-level package's directory, or a module's file, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin).resolve()
    # by the file's name: a module already imported may report a package's search locations
    # (six lends itself `six.moves`)
    return origin.parent if origin.stem == "__init__" else origin
