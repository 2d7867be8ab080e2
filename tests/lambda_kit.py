"""What the tests of functions share: the execution role's trust policy and zip archives."""

from __future__ import annotations

import io
import zipfile

# An execution role's trust policy: Lambda may assume it.
TRUST_LAMBDA = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}  # fmt: skip


def make_zip(files: dict[str, str]) -> bytes:
    """A zip archive of `files` (name -> text), as a function's code or a layer."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()
