"""First start of a data directory: the account, its region and its administrator.

The account id (12 digits), the default region and an `admin` IAM user with
`AdministratorAccess` and one access key are made once and kept in the store.
The key is written, with the control plane's address, to a profile file that
the aws CLI and boto3 read (`AWS_CONFIG_FILE=<data-dir>/aws/config`), mode 0600:
like `~/.aws/credentials`, it is the one place the key is in clear.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from sluice.control import ids
from sluice.control.store import Store
from sluice.control.vault import Vault

ADMIN_USER = "admin"
ADMIN_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    region: str


def ensure_account(store: Store, vault: Vault, region: str) -> tuple[Account, str | None]:
    """The account of this data directory, made on first start.

    Returns it and, on first start only, the admin's new access key id.
    """
    found = store.get("account", "main")
    if found is not None:
        return Account(found["Id"], found["Region"]), None
    account = Account(ids.account_id(), region)
    now = time.time()
    key_id = ids.access_key_id()
    with store.batch():
        store.put("account", "main", {"Id": account.id, "Region": region, "CreateDate": now})
        store.put(
            "iam_user",
            ADMIN_USER,
            {
                "UserName": ADMIN_USER,
                "UserId": ids.unique_id("AIDA"),
                "Arn": f"arn:aws:iam::{account.id}:user/{ADMIN_USER}",
                "Path": "/",
                "CreateDate": now,
                "AttachedPolicies": [ADMIN_POLICY],
                "InlinePolicies": {},
            },
        )
        store.put(
            "access_key",
            key_id,
            {
                "AccessKeyId": key_id,
                "UserName": ADMIN_USER,
                "Status": "Active",
                "CreateDate": now,
                "_secret": vault.seal(ids.secret_access_key()),
            },
        )
    return account, key_id


def write_profile(path: Path, store: Store, vault: Vault, account: Account, endpoint: str) -> None:
    """The aws CLI / boto3 profile for the admin: region, key and endpoint (mode 0600)."""
    keys = [k for k in store.all("access_key") if k["UserName"] == ADMIN_USER]
    key = next((k for k in keys if k["Status"] == "Active"), None)
    if key is None:
        return
    lines = [
        "[default]",
        f"region = {account.region}",
        "output = json",
        f"endpoint_url = {endpoint}",
        f"aws_access_key_id = {key['AccessKeyId']}",
        f"aws_secret_access_key = {vault.open_text(key['_secret'])}",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines))
