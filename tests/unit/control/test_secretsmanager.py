"""Secrets Manager: versions and staging labels, look-ups by name/ARN, deletion, listing.

Outputs are checked against botocore's output shapes; the state file is read back to make
sure no secret value is ever stored in clear.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.session
import botocore.validate
import pytest
from fakeplane import FakePlane

from sluice.control.context import Call, Principal
from sluice.control.errors import ApiError
from sluice.control.services.secretsmanager import SecretsManager, find_secret, read_secret
from sluice.control.store import Store
from sluice.control.vault import Vault

ACCOUNT = "123456789012"
MODEL = botocore.session.get_session().get_service_model("secretsmanager")
DAY = 86400.0
TOKEN_A = "a" * 32
TOKEN_B = "b" * 32
CREDS = {"username": "app", "password": "pw-Zq8!unique-marker"}




@pytest.fixture
def plane(tmp_path: Path) -> FakePlane:
    return FakePlane(Store(tmp_path / "data" / "state.db"),
                     Vault(tmp_path / "keys" / "vault.key"))


@pytest.fixture
def sm(plane: FakePlane) -> SecretsManager:
    return SecretsManager(plane)


NOW = time.time()


def call(now: float = NOW) -> Call:
    principal = Principal(ACCOUNT, f"arn:aws:iam::{ACCOUNT}:user/admin", "AIDAX", "user",
                          "admin", "AKIAX")
    return Call(principal, "us-east-1", "req", now)


def run(sm: SecretsManager, op: str, now: float = NOW, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = getattr(sm, op)(call(now), params)
    shape = MODEL.operation_model(op).output_shape
    if shape is None:
        assert out == {}
    else:
        report = botocore.validate.ParamValidator().validate(out, shape)
        assert not report.has_errors(), report.generate_report()
    return out


def fails(sm: SecretsManager, op: str, code: str, now: float = NOW, **params: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        getattr(sm, op)(call(now), params)
    assert caught.value.code == code, caught.value.message
    assert caught.value.status == 400
    return caught.value


def create(sm: SecretsManager, name: str = "db-creds", **extra: Any) -> dict[str, Any]:
    return run(sm, "CreateSecret", Name=name, SecretString=json.dumps(CREDS), **extra)


def test_create_and_get_by_name_arn_and_partial_arn(sm: SecretsManager, plane: FakePlane) -> None:
    out = create(sm, ClientRequestToken=TOKEN_A, Description="app credentials")
    assert re.fullmatch(rf"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db-creds-"
                        r"[A-Za-z0-9]{6}", out["ARN"])
    assert out["VersionId"] == TOKEN_A and out["Name"] == "db-creds"
    assert plane.changes == ["secrets"]
    for secret_id in ("db-creds", out["ARN"], out["ARN"][:-7]):
        got = run(sm, "GetSecretValue", SecretId=secret_id)
        assert json.loads(got["SecretString"]) == CREDS
        assert got["VersionId"] == TOKEN_A and got["VersionStages"] == ["AWSCURRENT"]
        assert got["ARN"] == out["ARN"]
    fails(sm, "GetSecretValue", "ResourceNotFoundException", SecretId="other")
    fails(sm, "GetSecretValue", "ResourceNotFoundException", SecretId=out["ARN"][:-8])


def test_get_records_the_day_of_last_access(sm: SecretsManager) -> None:
    create(sm)
    assert "LastAccessedDate" not in run(sm, "DescribeSecret", SecretId="db-creds")
    run(sm, "GetSecretValue", SecretId="db-creds")
    seen = run(sm, "DescribeSecret", SecretId="db-creds")["LastAccessedDate"]
    today = datetime.fromtimestamp(NOW, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert seen == today


def test_binary_secrets_and_value_errors(sm: SecretsManager) -> None:
    run(sm, "CreateSecret", Name="blob", SecretBinary=b"\x00\x01binary")
    got = run(sm, "GetSecretValue", SecretId="blob")
    assert got["SecretBinary"] == b"\x00\x01binary" and "SecretString" not in got
    fails(sm, "CreateSecret", "InvalidParameterException", Name="both", SecretString="x",
          SecretBinary=b"y")
    fails(sm, "CreateSecret", "InvalidParameterException", Name="bad name!?")
    fails(sm, "PutSecretValue", "InvalidParameterException", SecretId="blob")
    empty = run(sm, "CreateSecret", Name="empty")
    assert "VersionId" not in empty
    fails(sm, "GetSecretValue", "ResourceNotFoundException", SecretId="empty")


def test_create_twice_is_refused_unless_it_is_the_same_request(sm: SecretsManager) -> None:
    first = create(sm, ClientRequestToken=TOKEN_A)
    assert create(sm, ClientRequestToken=TOKEN_A) == first
    fails(sm, "CreateSecret", "ResourceExistsException", Name="db-creds", SecretString="other",
          ClientRequestToken=TOKEN_A)
    fails(sm, "CreateSecret", "ResourceExistsException", Name="db-creds", SecretString="x")


def test_put_moves_staging_labels(sm: SecretsManager, plane: FakePlane) -> None:
    first = create(sm)["VersionId"]
    second = run(sm, "PutSecretValue", SecretId="db-creds", SecretString="two",
                 ClientRequestToken=TOKEN_A)
    assert second["VersionStages"] == ["AWSCURRENT"] and second["VersionId"] == TOKEN_A
    stages = run(sm, "DescribeSecret", SecretId="db-creds")["VersionIdsToStages"]
    assert stages == {first: ["AWSPREVIOUS"], TOKEN_A: ["AWSCURRENT"]}
    run(sm, "PutSecretValue", SecretId="db-creds", SecretString="three",
        ClientRequestToken=TOKEN_B)
    stages = run(sm, "DescribeSecret", SecretId="db-creds")["VersionIdsToStages"]
    assert stages == {TOKEN_A: ["AWSPREVIOUS"], TOKEN_B: ["AWSCURRENT"]}
    assert run(sm, "GetSecretValue", SecretId="db-creds")["SecretString"] == "three"
    previous = run(sm, "GetSecretValue", SecretId="db-creds", VersionStage="AWSPREVIOUS")
    assert previous["SecretString"] == "two"
    oldest = run(sm, "GetSecretValue", SecretId="db-creds", VersionId=first)
    assert json.loads(oldest["SecretString"]) == CREDS and "VersionStages" not in oldest
    fails(sm, "GetSecretValue", "ResourceNotFoundException", SecretId="db-creds",
          VersionStage="AWSPENDING")
    fails(sm, "GetSecretValue", "ResourceNotFoundException", SecretId="db-creds",
          VersionId="c" * 32)
    # a repeated request is a no-op; the same token with another value is refused
    run(sm, "PutSecretValue", SecretId="db-creds", SecretString="three",
        ClientRequestToken=TOKEN_B)
    fails(sm, "PutSecretValue", "ResourceExistsException", SecretId="db-creds",
          SecretString="four", ClientRequestToken=TOKEN_B)
    assert plane.changes.count("secrets") == 4


def test_pending_stage_does_not_touch_current(sm: SecretsManager) -> None:
    first = create(sm)["VersionId"]
    run(sm, "PutSecretValue", SecretId="db-creds", SecretString="next",
        VersionStages=["AWSPENDING"], ClientRequestToken=TOKEN_A)
    stages = run(sm, "DescribeSecret", SecretId="db-creds")["VersionIdsToStages"]
    assert stages == {first: ["AWSCURRENT"], TOKEN_A: ["AWSPENDING"]}


def test_update_secret(sm: SecretsManager, plane: FakePlane) -> None:
    create(sm)
    plane.changes.clear()
    out = run(sm, "UpdateSecret", SecretId="db-creds", Description="new words")
    assert "VersionId" not in out and plane.changes == []
    assert run(sm, "DescribeSecret", SecretId="db-creds")["Description"] == "new words"
    out = run(sm, "UpdateSecret", SecretId="db-creds", SecretString="rotated")
    assert run(sm, "GetSecretValue", SecretId="db-creds")["VersionId"] == out["VersionId"]
    assert plane.changes == ["secrets"]


def test_delete_restore_and_force(sm: SecretsManager, plane: FakePlane) -> None:
    arn = create(sm)["ARN"]
    out = run(sm, "DeleteSecret", SecretId="db-creds")
    assert out["DeletionDate"] == datetime.fromtimestamp(NOW + 30 * DAY, UTC)
    error = fails(sm, "GetSecretValue", "InvalidRequestException", SecretId="db-creds")
    assert "marked for deletion" in error.message
    assert "DeletedDate" in run(sm, "DescribeSecret", SecretId=arn)
    assert run(sm, "ListSecrets")["SecretList"] == []
    assert len(run(sm, "ListSecrets", IncludePlannedDeletion=True)["SecretList"]) == 1
    assert read_secret(plane.store, plane.vault, arn) is None
    fails(sm, "CreateSecret", "InvalidRequestException", Name="db-creds", SecretString="x")
    fails(sm, "DeleteSecret", "InvalidRequestException", SecretId="db-creds")
    run(sm, "RestoreSecret", SecretId="db-creds")
    assert json.loads(run(sm, "GetSecretValue", SecretId=arn)["SecretString"]) == CREDS
    for window in (6, 31):
        fails(sm, "DeleteSecret", "InvalidParameterException", SecretId=arn,
              RecoveryWindowInDays=window)
    fails(sm, "DeleteSecret", "InvalidParameterException", SecretId=arn,
          RecoveryWindowInDays=7, ForceDeleteWithoutRecovery=True)
    run(sm, "DeleteSecret", SecretId=arn, ForceDeleteWithoutRecovery=True)
    fails(sm, "DescribeSecret", "ResourceNotFoundException", SecretId=arn)
    assert create(sm)["ARN"] != arn


def test_a_deletion_is_carried_out_when_its_window_is_over(sm: SecretsManager) -> None:
    create(sm)
    run(sm, "DeleteSecret", SecretId="db-creds", RecoveryWindowInDays=7)
    run(sm, "DescribeSecret", SecretId="db-creds", now=NOW + 6 * DAY)
    fails(sm, "DescribeSecret", "ResourceNotFoundException", SecretId="db-creds",
          now=NOW + 7 * DAY + 1)
    run(sm, "CreateSecret", Name="db-creds", SecretString="again", now=NOW + 8 * DAY)


def test_list_secrets_filters_sorts_and_pages(sm: SecretsManager) -> None:
    create(sm, "prod/db", Description="Production database",
           Tags=[{"Key": "env", "Value": "prod"}])
    create(sm, "prod/cache", Tags=[{"Key": "env", "Value": "production"}], now=NOW + 1)
    create(sm, "dev/db", Tags=[{"Key": "owner", "Value": "me"}], now=NOW + 2)

    def names(*filters: dict[str, Any], **extra: Any) -> list[str]:
        listed = run(sm, "ListSecrets", Filters=list(filters), **extra)["SecretList"]
        return [s["Name"] for s in listed]

    assert names() == ["prod/db", "prod/cache", "dev/db"]
    assert names(SortOrder="desc") == ["dev/db", "prod/cache", "prod/db"]
    assert names(SortBy="name") == ["dev/db", "prod/cache", "prod/db"]
    assert names({"Key": "name", "Values": ["prod/"]}) == ["prod/db", "prod/cache"]
    assert names({"Key": "name", "Values": ["Prod/"]}) == []
    assert names({"Key": "description", "Values": ["production"]}) == ["prod/db"]
    assert names({"Key": "tag-key", "Values": ["own"]}) == ["dev/db"]
    assert names({"Key": "tag-value", "Values": ["prod"]}) == ["prod/db", "prod/cache"]
    assert names({"Key": "tag-value", "Values": ["prod", "!production"]}) == ["prod/db"]
    assert names({"Key": "all", "Values": ["DATABASE"]}) == ["prod/db"]
    assert names({"Key": "name", "Values": ["prod"]}, {"Key": "tag-key", "Values": ["env"]},
                 {"Key": "name", "Values": ["!prod/c"]}) == ["prod/db"]
    first = run(sm, "ListSecrets", MaxResults=2)
    assert [s["Name"] for s in first["SecretList"]] == ["prod/db", "prod/cache"]
    entry = first["SecretList"][0]
    assert entry["Tags"] == [{"Key": "env", "Value": "prod"}]
    assert list(entry["SecretVersionsToStages"].values()) == [["AWSCURRENT"]]
    rest = run(sm, "ListSecrets", MaxResults=2, NextToken=first["NextToken"])
    assert [s["Name"] for s in rest["SecretList"]] == ["dev/db"] and "NextToken" not in rest
    fails(sm, "ListSecrets", "InvalidNextTokenException", NextToken="nope")


def test_tags(sm: SecretsManager) -> None:
    create(sm, Tags=[{"Key": "a", "Value": "1"}])
    run(sm, "TagResource", SecretId="db-creds", Tags=[{"Key": "a", "Value": "2"},
                                                      {"Key": "b", "Value": "3"}])
    assert run(sm, "DescribeSecret", SecretId="db-creds")["Tags"] == [
        {"Key": "a", "Value": "2"}, {"Key": "b", "Value": "3"}]
    run(sm, "UntagResource", SecretId="db-creds", TagKeys=["a", "zzz"])
    assert run(sm, "DescribeSecret", SecretId="db-creds")["Tags"] == [{"Key": "b", "Value": "3"}]
    fails(sm, "TagResource", "ResourceNotFoundException", SecretId="nope", Tags=[])


def test_read_secret_for_the_data_plane(sm: SecretsManager, plane: FakePlane) -> None:
    arn = create(sm)["ARN"]
    assert read_secret(plane.store, plane.vault, arn) == (arn, CREDS)
    assert read_secret(plane.store, plane.vault, "db-creds") == (arn, CREDS)
    plain = run(sm, "CreateSecret", Name="plain", SecretString="not json")["ARN"]
    assert read_secret(plane.store, plane.vault, plain) == (plain, None)
    listed = run(sm, "CreateSecret", Name="list", SecretString="[1, 2]")["ARN"]
    assert read_secret(plane.store, plane.vault, listed) == (listed, None)
    assert read_secret(plane.store, plane.vault, "missing") is None
    assert find_secret(plane.store, arn[:-7]) == plane.store.get("secret", arn)


def test_values_are_never_stored_in_clear(sm: SecretsManager, plane: FakePlane,
                                          tmp_path: Path) -> None:
    create(sm)
    run(sm, "PutSecretValue", SecretId="db-creds", SecretString="second-Qx7-marker")
    run(sm, "CreateSecret", Name="blob", SecretBinary=b"binary-Jw3-marker")
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file())
    assert b"db-creds" in raw  # the documents did reach the files
    for secret in (b"pw-Zq8!unique-marker", b"second-Qx7-marker", b"binary-Jw3-marker",
                   b"dW5pcXVlLW1hcmtlc", b"YmluYXJ5LUp3My1tYXJrZX"):  # and no base64 of them
        assert secret not in raw
    reopened = Store(tmp_path / "data" / "state.db")
    assert read_secret(reopened, plane.vault, "db-creds") is not None
